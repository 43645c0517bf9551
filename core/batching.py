"""Tokenising once, and cutting each epoch into padded batches.

Batches are seeded. With length bucketing, each window of ~50 batches is sorted
by length before it is cut, so batches hold sentences of similar length (less
padding), and the batches are then shuffled across windows and tasks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sized
from dataclasses import dataclass

import torch

BUCKET_WINDOW = 50  # batches per sorting window


@dataclass
class EncodedSplit:
    ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    limit = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
    return tokenizer(texts, truncation=True, max_length=limit)["input_ids"]


def collate(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence in this batch (dynamic padding)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def index_batches(lengths: list[int], batch_size: int, rng: random.Random, bucketing: bool) -> list[list[int]]:
    """One epoch of index batches over one task."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if bucketing:
        window = batch_size * BUCKET_WINDOW
        order = [i for start in range(0, len(order), window)
                 for i in sorted(order[start:start + window], key=lengths.__getitem__)]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def epoch_schedule(splits: dict[str, EncodedSplit], batch_size: int, rng: random.Random, bucketing: bool,
                   sampling: str = "proportional") -> list[tuple[str, list[int]]]:
    """(task, indices) for every batch of one epoch, tasks interleaved at random.

    proportional: each task contributes one pass over its data, so tasks appear in
    proportion to their sizes. equal: smaller tasks are cycled to as many batches as the largest.
    """
    per_task = {task: index_batches([len(x) for x in split.ids], batch_size, rng, bucketing)
                for task, split in splits.items()}
    if sampling == "equal":
        most = max(len(b) for b in per_task.values())
        per_task = {task: [b[i % len(b)] for i in range(most)] for task, b in per_task.items()}
    schedule = [(task, batch) for task, batches in per_task.items() for batch in batches]
    rng.shuffle(schedule)
    return schedule


def steps_per_epoch(splits: Mapping[str, Sized], batch_size: int, sampling: str) -> int:
    """Batches per epoch, from the number of examples per task (splits, or their texts before encoding)."""
    counts = [-(-len(s) // batch_size) for s in splits.values()]
    return max(counts) * len(counts) if sampling == "equal" else sum(counts)
