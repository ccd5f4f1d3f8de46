"""Token-budget batching."""
from __future__ import annotations

import random

import pytest

from embedder.batching import token_budget_batches


def test_docstring_example():
    assert token_budget_batches([5, 100, 7, 90], max_tokens=200) == [[1, 3], [2, 0]]


@pytest.mark.parametrize("seed", range(5))
def test_every_index_once_and_budgets_hold(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(10, 40), rng.randint(300, 600), rng.randint(1000, 3000)]) for _ in range(200)]
    batches = token_budget_batches(lengths, max_tokens=4096, max_items=16)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) <= 16
        assert len(b) == 1 or width * len(b) <= 4096
        assert len(b) == 1 or sum(lengths[i] for i in b) >= 0.75 * width * len(b)


def test_padding_is_bounded_by_min_fill():
    # Sorted longest first: a short item is not padded up to a long one.
    assert token_budget_batches([500, 20, 480, 25], max_tokens=10**6) == [[0, 2], [3, 1]]


def test_an_item_over_the_budget_gets_its_own_batch():
    assert token_budget_batches([5000, 10, 10], max_tokens=100) == [[0], [1, 2]]


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        token_budget_batches([1], max_tokens=0)


def test_batch_budget_defaults_to_the_device(embedder, reranker):
    """CPU batches stay small enough for the caches; an explicit budget wins."""
    import torch

    from embedder.model import default_max_batch_tokens

    assert embedder.max_batch_tokens == reranker.max_batch_tokens == default_max_batch_tokens(torch.device("cpu"))
    assert default_max_batch_tokens(torch.device("cpu")) == 4096
    assert default_max_batch_tokens(torch.device("cuda")) == 16384
