"""Token-budget batching: sort by length so batches carry little padding."""
from __future__ import annotations

from typing import Sequence


def token_budget_batches(lengths: Sequence[int], *, max_tokens: int, max_items: int | None = None,
                         min_fill: float = 0.75) -> list[list[int]]:
    """Group indices into batches whose padded size (longest x count) stays within ``max_tokens``.

    Items are taken longest first, so each batch holds items of similar length; a batch
    is also closed when padding would make up more than ``1 - min_fill`` of it (padding
    is pure waste on a CPU, and little gain on a GPU). An item longer than the budget
    gets a batch of its own.

    Args:
        lengths: token count of each item.
        max_tokens: budget of padded tokens per batch.
        max_items: optional cap on items per batch.
        min_fill: smallest share of real (non-padding) tokens in a batch.

    Returns:
        Lists of indices into ``lengths``; every index appears exactly once.

    Example:
        >>> token_budget_batches([5, 100, 7, 90], max_tokens=200)
        [[1, 3], [2, 0]]
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = real = 0
    for i in order:
        n = lengths[i]
        width = max(longest, n)
        padded = width * (len(current) + 1)
        if current and (padded > max_tokens or (real + n) < min_fill * padded
                        or (max_items and len(current) >= max_items)):
            batches.append(current)
            current, width, real = [], n, 0
        current.append(i)
        longest = width
        real += n
    if current:
        batches.append(current)
    return batches
