"""Token-budget batching: sort by length so batches carry little padding."""
from __future__ import annotations

from typing import Sequence


def token_budget_batches(lengths: Sequence[int], *, max_tokens: int, max_items: int | None = None) -> list[list[int]]:
    """Group indices into batches whose padded size (longest x count) stays within ``max_tokens``.

    Items are taken longest first, so each batch holds items of similar length. An item
    longer than the budget gets a batch of its own.

    Args:
        lengths: token count of each item.
        max_tokens: budget of padded tokens per batch.
        max_items: optional cap on items per batch.

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
    longest = 0
    for i in order:
        n = lengths[i]
        width = max(longest, n)
        if current and (width * (len(current) + 1) > max_tokens or (max_items and len(current) >= max_items)):
            batches.append(current)
            current, width = [], n
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches
