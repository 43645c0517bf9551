"""Batching: padding, tokenising limits, and that an epoch sees each example as often as it should.

The epoch properties run on random task sizes, batch sizes and seeds, in every mode:
proportional sampling shows every example exactly once; equal sampling cycles the smaller
tasks up to the largest task's number of batches (see test_equal_sampling_cycles_smaller_tasks).
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from core.batching import BUCKET_WINDOW, EncodedSplit, collate, encode, epoch_schedule, index_batches, steps_per_epoch


def test_collate_pads_to_the_longest_sequence_and_masks_the_padding():
    ids, mask = collate([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


@given(st.lists(st.lists(st.integers(1, 500), min_size=1, max_size=12), min_size=1, max_size=8),
       st.integers(0, 3))
def test_collate_keeps_every_token_and_pads_with_the_pad_id(sequences, pad_id):
    ids, mask = collate(sequences, pad_id)
    assert ids.shape == mask.shape == (len(sequences), max(map(len, sequences)))
    for row, seq in enumerate(sequences):
        assert ids[row, :len(seq)].tolist() == seq
        assert (ids[row, len(seq):] == pad_id).all()
        assert mask[row].tolist() == [1] * len(seq) + [0] * (ids.shape[1] - len(seq))


class _Tokenizer:
    """Records the max_length it is called with; returns one id per word."""

    def __init__(self, model_max_length):
        self.model_max_length, self.calls = model_max_length, []

    def __call__(self, texts, truncation, max_length):
        self.calls.append((truncation, max_length))
        return {"input_ids": [list(range(min(len(t.split()), max_length))) for t in texts]}


@pytest.mark.parametrize("model_max, asked, used", [(512, 64, 64), (16, 64, 16), (None, 64, 64), (0, 32, 32)])
def test_encode_truncates_to_the_smaller_of_max_length_and_the_model_limit(model_max, asked, used):
    tokenizer = _Tokenizer(model_max)
    assert encode(tokenizer, ["a b c"] * 2, asked) == [[0, 1, 2], [0, 1, 2]]
    assert tokenizer.calls == [(True, used)]


def test_encode_works_with_a_tokenizer_that_states_no_limit():
    tokenizer = _Tokenizer(None)
    del tokenizer.model_max_length
    assert encode(tokenizer, ["a b"], 8) == [[0, 1]] and tokenizer.calls == [(True, 8)]


# ---- one task's batches -------------------------------------------------------------------

lengths_strategy = st.lists(st.integers(1, 64), min_size=1, max_size=300)


@given(lengths_strategy, st.integers(1, 16), st.integers(0, 2**16), st.booleans())
def test_index_batches_cover_every_example_once_in_full_batches(lengths, batch_size, seed, bucketing):
    batches = index_batches(lengths, batch_size, random.Random(seed), bucketing)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == math.ceil(len(lengths) / batch_size)
    assert all(len(b) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch_size


@given(lengths_strategy, st.integers(1, 4), st.integers(0, 2**16))
def test_bucketing_sorts_each_window_by_length(lengths, batch_size, seed):
    flat = [i for b in index_batches(lengths, batch_size, random.Random(seed), True) for i in b]
    window = batch_size * BUCKET_WINDOW
    for start in range(0, len(flat), window):
        chunk = [lengths[i] for i in flat[start:start + window]]
        assert chunk == sorted(chunk)


def test_bucketing_windows_hold_fifty_batches():
    # 300 examples, batch 2: windows of 100 examples; lengths rise within a window, then drop at its end
    rng = random.Random(1)
    lengths = [rng.randint(1, 1000) for _ in range(300)]
    flat = [i for b in index_batches(lengths, 2, random.Random(0), True) for i in b]
    drops = [k for k in range(1, 300) if lengths[flat[k]] < lengths[flat[k - 1]]]
    assert BUCKET_WINDOW == 50 and drops == [100, 200]


def test_batches_are_shuffled_and_seeded():
    lengths = [5] * 40
    first = index_batches(lengths, 4, random.Random(3), bucketing=False)
    assert first == index_batches(lengths, 4, random.Random(3), bucketing=False)
    assert first != index_batches(lengths, 4, random.Random(4), bucketing=False)
    assert [i for b in first for i in b] != list(range(40))


# ---- an epoch over several tasks ----------------------------------------------------------

def splits_from(sizes: list[int], seed: int) -> dict[str, EncodedSplit]:
    rng = random.Random(seed)
    return {f"task{t}": EncodedSplit([[1] * rng.randint(1, 20) for _ in range(n)], [0] * n)
            for t, n in enumerate(sizes)}


tasks_strategy = st.lists(st.integers(1, 120), min_size=1, max_size=4)


def seen(schedule) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for task, rows in schedule:
        counts.setdefault(task, Counter()).update(rows)
    return counts


@given(tasks_strategy, st.integers(1, 16), st.integers(0, 2**16), st.booleans())
def test_proportional_sampling_shows_every_example_exactly_once(sizes, batch_size, seed, bucketing):
    splits = splits_from(sizes, seed)
    schedule = epoch_schedule(splits, batch_size, random.Random(seed), bucketing, "proportional")
    counts = seen(schedule)
    for task, split in splits.items():
        assert counts[task] == Counter(range(len(split))), task
    assert all(1 <= len(rows) <= batch_size for _, rows in schedule)
    assert len(schedule) == steps_per_epoch(splits, batch_size, "proportional")


@given(tasks_strategy, st.integers(1, 16), st.integers(0, 2**16), st.booleans())
def test_equal_sampling_cycles_smaller_tasks(sizes, batch_size, seed, bucketing):
    """Every task gets as many batches as the largest one (``most``); a task with ``k`` batches of
    its own repeats them in order, so each of its examples appears at least floor(most / k) >= 1
    and at most ceil(most / k) times. The task(s) with the most batches show each example exactly once."""
    splits = splits_from(sizes, seed)
    schedule = epoch_schedule(splits, batch_size, random.Random(seed), bucketing, "equal")
    own = {task: math.ceil(len(split) / batch_size) for task, split in splits.items()}
    most = max(own.values())
    counts = seen(schedule)
    for task, split in splits.items():
        assert sum(1 for t, _ in schedule if t == task) == most
        assert set(counts[task]) == set(range(len(split))), task
        low, high = most // own[task], math.ceil(most / own[task])
        assert all(low <= c <= high for c in counts[task].values()), task
        if own[task] == most:
            assert set(counts[task].values()) == {1}, task
    assert len(schedule) == steps_per_epoch(splits, batch_size, "equal") == most * len(splits)


def test_tasks_are_interleaved_not_one_after_the_other():
    splits = splits_from([80, 80], seed=0)
    schedule = epoch_schedule(splits, 8, random.Random(0), bucketing=True)
    order = [task for task, _ in schedule]
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches > 3  # 20 batches one after the other would switch once
    assert schedule == epoch_schedule(splits, 8, random.Random(0), bucketing=True)  # seeded


def test_steps_per_epoch_counts_partial_batches():
    splits = splits_from([10, 3], seed=0)
    assert steps_per_epoch(splits, 4, "proportional") == 3 + 1
    assert steps_per_epoch(splits, 4, "equal") == 3 * 2


def test_an_epoch_with_bucketing_batches_similar_lengths():
    splits = splits_from([60, 40], seed=0)
    lengths = {task: [len(x) for x in split.ids] for task, split in splits.items()}

    def sorted_batches(bucketing: bool) -> bool:
        schedule = epoch_schedule(splits, 4, random.Random(0), bucketing)
        return all([lengths[t][r] for r in rows] == sorted(lengths[t][r] for r in rows) for t, rows in schedule)

    assert sorted_batches(True) and not sorted_batches(False)
