"""One run over several processes (``accelerate launch -m core train``): who does what.

Accelerate starts the processes and sets up the process group (NCCL on GPUs, gloo on
the CPU); DDP, which ``Accelerator.prepare`` wraps the model in, averages the trainable
parameters' gradients after each backward. What this module adds is the split of
Freeze Lab's own work:

- **The batches.** Every process draws the same seeded, task-interleaved schedule, so a
  step's global batch is the one a single process would train on. Each process computes
  its part of the batch, and its loss is scaled so that DDP's average of the processes'
  gradients is the gradient of the global batch's mean loss, however unevenly the batch splits.
- **The frozen-prefix cache.** Row ``r`` of a split belongs to process ``r % world_size``.
  When the run caches its frozen prefix, a process computes the rows of each batch that it
  owns, in every epoch, so it caches its own rows only (its shard) and every later epoch
  hits. The price is an uneven split of each batch (binomial: about ``B/N ± sqrt(B/N)``
  rows), paid only by the trainable layers. A run that caches nothing splits each batch
  evenly instead (``Accelerate``'s ``split_between_processes``).
- **Evaluation.** Each process predicts the validation rows it owns; the predictions are
  gathered (``Accelerator.gather_for_metrics``) and put back in the split's order, so the
  metrics are over the whole validation set, each example counted once.
- **The record.** Only the main process creates and writes the run folder and emits events;
  the others learn its path by a broadcast and write nothing.
- **Stop.** Each process looks at its own signals (the main process also at the run's stop
  file) and the flags are summed before every step: all stop after the same step, or none.

A single process (``world_size`` 1) takes every branch's plain path: its shard is the whole split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.batching import EncodedSplit

WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]  # Accelerate's


def launched_world_size() -> int:
    """How many processes the launcher (accelerate launch, torchrun, mpirun) started; 1 without one."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(WORLD_SIZE_VARIABLES, 1)


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls, device: str) -> "Processes":
        """From Accelerate's process state (which joins the process group); a plain run never touches it."""
        if launched_world_size() <= 1:
            return cls()
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu")
        return cls(state.process_index, state.num_processes, state.local_process_index)

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder and emits events."""
        return self.rank == 0

    @property
    def locks_device(self) -> bool:
        """One process per machine holds the device's training lock for the whole run."""
        return self.local_rank == 0

    def owns(self, row: int) -> bool:
        return row % self.world_size == self.rank

    def share(self, rows: list[int]) -> list[int]:
        """The rows of a global batch that this process owns (what its prefix cache holds)."""
        return rows if self.world_size == 1 else [r for r in rows if self.owns(r)]

    def even_share(self, rows: list[int]) -> list[int]:
        """This process's part of an even split of a global batch (sizes differ by one at most): for a run
        that caches nothing, where a row may go to any process."""
        if self.world_size == 1:
            return rows
        from accelerate import PartialState

        with PartialState().split_between_processes(rows) as mine:
            return mine

    def shard(self, split: EncodedSplit) -> "Shard":
        return Shard.of(split, self)

    # -- agreeing ---------------------------------------------------------------------------
    def any(self, flag: bool, device) -> bool:
        """True on every process if it is true on any (the stop decision)."""
        return bool(self.total(float(flag), device))

    def total(self, value: float, device) -> float:
        """The sum of ``value`` over the processes, on every process."""
        if self.world_size == 1:
            return value
        import torch
        from accelerate.utils import reduce

        return reduce(torch.tensor([value], dtype=torch.float64, device=device), reduction="sum").item()

    def broadcast(self, value):
        """The main process's ``value``, on every process."""
        if self.world_size == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def wait_for_everyone(self) -> None:
        if self.world_size > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()


@dataclass
class Shard:
    """The rows of one split that a process owns, as a split of their own (what its prefix cache stores)."""

    split: EncodedSplit
    rows: list[int]  # the owned rows' indices in the whole split, in order
    local: dict[int, int] = field(default_factory=dict)  # whole-split row -> index in ``split``

    @classmethod
    def of(cls, split: EncodedSplit, processes: Processes) -> "Shard":
        if processes.world_size == 1:
            return cls(split, list(range(len(split))))
        rows = [r for r in range(len(split)) if processes.owns(r)]
        own = EncodedSplit([split.ids[r] for r in rows], [split.labels[r] for r in rows])
        return cls(own, rows, {r: i for i, r in enumerate(rows)})

    def local_rows(self, rows: list[int]) -> list[int]:
        """Indices in ``split`` of these owned rows of the whole split."""
        return [self.local[r] for r in rows] if self.local else rows

