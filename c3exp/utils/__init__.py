"""Small helpers shared across c3exp."""
from c3exp.utils.complexity import PartCost, count_macs, count_params, part_costs

__all__ = ["PartCost", "count_macs", "count_params", "part_costs"]
