"""Numbers from step times: spread, throughput, ratios to a reference (paired by round), achieved FLOP/s."""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# A training step costs about 3 forward passes (the backward pass about 2), 2 FLOPs per multiply-accumulate.
TRAIN_FLOPS_PER_MAC = 3 * 2


def summarise(times: Sequence[float], batch_size: int) -> dict[str, float]:
    """Median, spread (min, quartiles, max) and throughput of one configuration's step times."""
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_s": median, "min_s": min(times), "q1_s": q1, "q3_s": q3, "max_s": max(times),
            "images_per_s": batch_size / median, "images_per_s_best": batch_size / min(times)}


def ratios(summary: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """The ratios of the medians and of the fastest steps to the reference configuration's."""
    return {"ratio_median": summary["median_s"] / reference["median_s"],
            "ratio_min": summary["min_s"] / reference["min_s"]}


def paired_ratios(times: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Quartiles of per-round ratios: a slow phase of a shared machine moves a whole round and cancels out of it."""
    per_round = [t / r for t, r in zip(times, reference)]
    q1, median, q3 = statistics.quantiles(per_round, n=4, method="inclusive") if len(per_round) > 1 else per_round * 3
    return {"ratio_paired": median, "ratio_paired_q1": q1, "ratio_paired_q3": q3}


def block_medians(times: Sequence[float], rounds: int) -> list[float]:
    """The median step of each of `rounds` equal blocks of loop mode's times (one block per round)."""
    size = len(times) // rounds
    return [statistics.median(times[i * size : (i + 1) * size]) for i in range(rounds)]


def achieved(row: dict[str, Any], peak: dict[str, Any] | None) -> dict[str, float]:
    """Training FLOP/s at the fastest step, from MACs (Winograd may beat the matmul peak), and its 50k-image epoch."""
    tflops = TRAIN_FLOPS_PER_MAC * row["macs"] * row["images_per_s_best"] / 1e12
    return {"train_tflops": tflops, "epoch_50k_s_derived": 50_000 / row["images_per_s_best"],
            **({"fraction_of_peak": tflops / peak["tflops"]} if peak else {})}
