"""Batch slicing and portion sampling, without HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from data_api.batches import BatchLayout, PortionSampler
from data_api.state import is_due


def test_batches_are_consecutive_equal_tenths_in_file_order() -> None:
    layout = BatchLayout(n_rows=15_120)
    assert [layout.bounds(b) for b in (1, 2, 10)] == [range(0, 1512), range(1512, 3024), range(13_608, 15_120)]


def test_a_remainder_of_fewer_than_ten_rows_is_never_served() -> None:
    layout = BatchLayout(n_rows=107)
    assert layout.batch_size == 10
    assert layout.bounds(10) == range(90, 100)


@pytest.mark.parametrize("batch_number", [0, 11])
def test_batch_numbers_outside_1_to_10_are_refused(batch_number: int) -> None:
    with pytest.raises(ValueError, match=f"batch {batch_number}"):
        BatchLayout(n_rows=100).bounds(batch_number)


def test_fewer_rows_than_batches_is_refused() -> None:
    with pytest.raises(ValueError, match="9 rows cannot be cut into 10"):
        BatchLayout(n_rows=9)


@pytest.mark.parametrize(("fraction", "expected"), [(0.1, 151), (0.25, 378), (1.0, 1512), (0.0001, 1)])
def test_portion_size_follows_the_fraction_and_is_at_least_one_row(fraction: float, expected: int) -> None:
    sampler = PortionSampler(BatchLayout(n_rows=15_120), fraction, seed=1)
    assert sampler.portion_size == expected
    assert len(sampler.sample(4)) == expected


def test_a_portion_has_distinct_rows_all_inside_its_batch() -> None:
    sampler = PortionSampler(BatchLayout(n_rows=15_120), 0.5, seed=3)
    positions = sampler.sample(7)
    assert len(set(positions.tolist())) == len(positions) == 756
    assert positions.min() >= 9072
    assert positions.max() < 10_584


def test_portions_differ_between_requests_and_a_seed_makes_them_reproducible() -> None:
    first = PortionSampler(BatchLayout(n_rows=15_120), 0.1, seed=42)
    second = PortionSampler(BatchLayout(n_rows=15_120), 0.1, seed=42)
    a, b = first.sample(1), first.sample(1)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, second.sample(1))
    assert np.array_equal(b, second.sample(1))


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_a_fraction_outside_0_to_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="portion fraction"):
        PortionSampler(BatchLayout(n_rows=100), fraction)


def test_the_next_batch_is_due_only_strictly_after_the_window() -> None:
    assert not is_due(300.0, 300.0)
    assert is_due(300.001, 300.0)
    assert not is_due(-5.0, 300.0)


def test_a_zero_window_makes_every_request_due_even_at_the_same_instant() -> None:
    assert is_due(0.0, 0.0)
