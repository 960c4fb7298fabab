"""Checks shared by the attention blocks."""
from __future__ import annotations

from c3exp.errors import check


def check_divides(reduction: int, size: int, what: str) -> None:
    """Reject a reduction that would leave a fractional hidden width (the paper's counts assume none)."""
    divisors = [d for d in range(1, min(size, 32) + 1) if size % d == 0]
    check(
        isinstance(reduction, int) and reduction >= 1 and size % reduction == 0,
        "attn.options.reduction",
        reduction,
        f"a divisor of the block's {what} = {size}, such as {', '.join(map(str, divisors))}",
    )
