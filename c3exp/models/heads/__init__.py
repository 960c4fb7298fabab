"""Heads that turn a backbone's stage maps into dense predictions."""
from c3exp.models.heads.deeplab import HEADS, DeepLabV2Head, create_aux_head, create_head

__all__ = ["HEADS", "DeepLabV2Head", "create_aux_head", "create_head"]
