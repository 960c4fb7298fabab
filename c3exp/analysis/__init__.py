"""Analyses of trained networks: channel correlation (Fig. 4), top-channel activation maps (Fig. 6), their figures."""
from c3exp.analysis.cam import ChannelMaps, rank_channels, top_channel_maps
from c3exp.analysis.correlation import (ChannelCorrelation, StageCorrelation, channel_correlation,
                                        load_correlation_history, mean_abs_off_diagonal, stage_correlations,
                                        stage_outputs)

__all__ = ["ChannelCorrelation", "ChannelMaps", "StageCorrelation", "channel_correlation", "load_correlation_history",
           "mean_abs_off_diagonal", "rank_channels", "stage_correlations", "stage_outputs", "top_channel_maps"]
