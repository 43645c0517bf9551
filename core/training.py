"""The training loop, top to bottom.

``prepare`` turns a config into an Experiment (data, model, freeze plan) and raises a
one-line error for anything wrong with the input, before any run folder exists.
``run_experiment`` then trains (or, with everything frozen, only evaluates), streams
events to its subscribers and stores everything in the run's folder.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from core import adapters, checkpoints, device as devices
from core.batching import EncodedSplit, collate, encode, epoch_schedule, steps_per_epoch
from core.cache import FrozenPrefixCache, SharedPrefix
from core.config import ExperimentConfig
from core.changes import ChangeMap
from core.data import DataError, TaskData, load_tasks, validation_fingerprint
from core.distributed import Processes, Shard, launched_world_size
from core.events import ChangeEvent, EvalEvent, EventBus, PlanEvent, ProgressEvent, StateEvent, StepEvent, Subscriber
from core.freezing import (FreezeError, FreezePlan, apply_plan, count_parameters, frozen_parts, partly_frozen_parts,
                           trainable_parameters, trainable_under)
from core.layer_rates import part_rates
from core.locks import training_lock
from core.metrics import accuracy, confusion_matrix, macro_f1
from core.model import MultiTaskModel
from core.presets import plan_from_config
from core.runs import Run, RunStore, atomic_write_json
from core.schedules import plan_changes

OOM_HINT = "out of memory: try a smaller batch size or max length"


class StopRequested(Exception):
    """Raised inside the loop when the caller asked to stop."""


@dataclass
class Experiment:
    """Everything a run needs, checked and ready."""

    config: ExperimentConfig
    tasks: dict[str, TaskData]
    model: MultiTaskModel
    tokenizer: object
    plan: FreezePlan
    params: dict
    device: str
    precision: str
    warm_start: str | None = None
    notes: list[str] = field(default_factory=list)
    shared_prefix: SharedPrefix | None = None  # a sweep's pristine layer inputs, used when the key matches
    plan_changes: list[tuple[int, FreezePlan]] = field(default_factory=list)  # freeze.schedule's, (step, plan)
    adapter: adapters.Adapter | None = None  # the config's LoRA adapters, when it has an adapter section

    @property
    def trains(self) -> bool:
        return self.params["trainable"] > 0 or bool(self.plan_changes)  # a schedule may unfreeze a frozen model


def build_model(config: ExperimentConfig, tasks: dict[str, TaskData], store: RunStore):
    """The backbone (pretrained, or from ``init_from``) and one head per task."""
    from core.backbones import load_backbone

    task_labels = {name: task.labels for name, task in tasks.items()}
    if not config.init_from:
        backbone, tokenizer = load_backbone(config.backbone, config.pooling)
        return MultiTaskModel(backbone, task_labels, config.pooling, config.head_dropout), tokenizer, None
    source = store.get(config.init_from)
    if not source.has_weights():
        if source.summary().get("weights") == "deleted":
            raise DataError(f"init_from: run {source.id}'s weights were deleted (its record is kept); start from "
                            "the pretrained backbone or from another run")
        raise DataError(f"init_from: run {source.id} has no saved weights (status {source.status})")
    model, tokenizer = checkpoints.load_run_model(source, config.head_dropout)
    for name, task in tasks.items():
        if name in model.heads:
            tasks[name] = align_labels(task, model.heads[name].labels, source.id)
    fresh = MultiTaskModel(model.backbone, {n: t.labels for n, t in tasks.items()}, model.pooling,
                           config.head_dropout)
    for name in tasks:
        if name in model.heads:
            fresh.heads[name] = model.heads[name]
    return fresh, tokenizer, source.id


def align_labels(task: TaskData, head_labels: list[str], run_id: str) -> TaskData:
    """Re-index a task's labels to a warm-started head's label order."""
    unknown = sorted(set(task.labels) - set(head_labels))
    if unknown:
        raise DataError(f"task {task.name!r}: labels {', '.join(unknown[:5])} are unknown to run {run_id}'s "
                        f"head, which knows {', '.join(head_labels)}")
    remap = [head_labels.index(label) for label in task.labels]
    task.train_labels = [remap[i] for i in task.train_labels]
    task.val_labels = [remap[i] for i in task.val_labels]
    task.labels = list(head_labels)
    return task


def prepare(config: ExperimentConfig, runs_dir: str | Path = "runs",
            tasks: dict[str, TaskData] | None = None) -> Experiment:
    """Load and check everything; raises a one-line error before any run exists.

    ``tasks``: the config's data, already loaded (a sweep reads it once for all members); copied.
    """
    device = devices.resolve_device(config.training.device)
    precision = devices.resolve_precision(config.training.precision, device)
    torch.manual_seed(config.training.seed)
    tasks = copy.deepcopy(tasks) if tasks is not None else load_tasks(config)
    model, tokenizer, warm = build_model(config, tasks, RunStore(runs_dir))
    plan = plan_from_config(config.freeze, list(model.parts()))
    params = apply_plan(model, plan)
    per_epoch = steps_per_epoch({name: task.train_texts for name, task in tasks.items()},
                                config.training.batch_size, config.training.task_sampling)
    changes = plan_changes(config.freeze.schedule, plan, list(model.parts()), per_epoch,
                           per_epoch * config.training.epochs)
    if changes and launched_world_size() > 1:  # DDP registers the trainable parameters once, when it wraps
        raise FreezeError("freeze.schedule: a run over several processes cannot change its plan while it trains; "
                          "launch it as one process, or drop the schedule")
    adapter = adapters.attach(config, model, plan) if config.adapter else None
    if adapter is not None:
        params = count_parameters(model)  # the adapters count in their layer's part
    notes = list(dict.fromkeys(note for task in tasks.values() for note in task.notes))  # two tasks, one file
    return Experiment(config, tasks, model, tokenizer, plan, params, device, precision, warm, notes,
                      plan_changes=changes, adapter=adapter)


def run_experiment(config: ExperimentConfig, runs_dir: str | Path = "runs",
                   subscribers: list[Subscriber] | None = None,
                   stop: threading.Event | None = None, experiment: Experiment | None = None,
                   on_run: Callable[[Run], None] | None = None) -> Run:
    """Prepare, then train and store one run. Returns the run; its summary has the outcome.

    ``on_run`` is told the run folder as soon as it exists, so a caller can follow it live.
    Under a launcher every process calls this; only the main process creates the run folder,
    tells ``on_run`` and the subscribers, and writes (core.distributed).
    """
    store = RunStore(runs_dir)
    processes = Processes.current(experiment.device if experiment else devices.resolve_device(config.training.device))
    if processes.is_main:
        store.check_writable()
    experiment = experiment or prepare(config, runs_dir)
    with training_lock(experiment.device) if processes.locks_device else nullcontext():
        run = Run(Path(processes.broadcast(str(store.create(config).path) if processes.is_main else None)))
        if on_run and processes.is_main:
            on_run(run)
        bus = EventBus([run.append_event, *(subscribers or [])] if processes.is_main else [])
        Trainer(experiment, run, bus, stop or threading.Event(), processes).run()
    return run


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def cache_settings(experiment: Experiment) -> dict:
    """What besides the data and the prefix's weights the frozen prefix's output depends on (its cache key)."""
    tokenizer, config = experiment.tokenizer, experiment.config
    return {"tokenizer": getattr(tokenizer, "name_or_path", ""), "vocab": len(tokenizer),
            "max_length": config.training.max_length, "pad_id": pad_id(tokenizer),
            "backbone": config.backbone, "init_from": experiment.warm_start}


def encode_splits(experiment: Experiment) -> tuple[dict[str, EncodedSplit], dict[str, EncodedSplit]]:
    """(train, validation) token ids per task."""
    tokenizer, n = experiment.tokenizer, experiment.config.training.max_length
    tasks = experiment.tasks
    return ({name: EncodedSplit(encode(tokenizer, t.train_texts, n), t.train_labels) for name, t in tasks.items()},
            {name: EncodedSplit(encode(tokenizer, t.val_texts, n), t.val_labels) for name, t in tasks.items()})


def full_model_logits(model, task: str, ids: list[list[int]], rows: list[int], pad_id: int, device,
                      backbone_grad: bool = True) -> torch.Tensor:
    """The logits of ``rows`` of a split from the whole model (no cached prefix)."""
    input_ids, mask = collate([ids[r] for r in rows], pad_id)
    return model(task, input_ids.to(device), mask.to(device), backbone_grad=backbone_grad)


def predict_split(split: EncodedSplit, batch_size: int, device,
                  logits_of: Callable[[list[int]], torch.Tensor]) -> tuple[list[int], list[float], float]:
    """Each example's predicted label index and its probability (4 places), and the summed loss, in batches.

    One loop for a run's evaluations and for re-evaluating a stored run (core.flips), so both predict
    alike; ``logits_of(rows)`` gives the logits of those rows (the trainer's ``batch_logits``, or the
    whole model's).
    """
    predictions, confidence, total_loss = [], [], 0.0
    for start in range(0, len(split), batch_size):
        rows = list(range(start, min(start + batch_size, len(split))))
        labels = torch.tensor([split.labels[r] for r in rows], device=device)
        logits = logits_of(rows).float()
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.softmax(-1).max(-1)
        predictions += top.indices.tolist()
        confidence += [round(p, 4) for p in top.values.tolist()]
    return predictions, confidence, total_loss


class Trainer:
    """One run's loop. Holds what the steps share; each method is one stage."""

    def __init__(self, experiment: Experiment, run: Run, bus: EventBus, stop: threading.Event,
                 processes: Processes = Processes()):
        self.experiment, self.run_folder, self.bus, self.stop = experiment, run, bus, stop
        self.processes = processes  # several under a launcher: only the main one writes the run folder
        self.cfg = experiment.config.training
        self.model = experiment.model  # after setup: the model as Accelerate prepared it (same parameters)
        self.trainable = trainable_parameters(experiment.model)  # changes only with a freeze schedule's plan
        self.plan_changes = dict(experiment.plan_changes)  # step -> the plan from then on
        # every parameter that trains under some plan of the run: the optimizer holds these from the start
        self.optimized = (trainable_under(experiment.model, [experiment.plan, *self.plan_changes.values()])
                          if self.plan_changes else list(self.trainable))
        # set by setup():
        self.accelerator = None
        self.device: torch.device | None = None
        self.pad_id = pad_id(experiment.tokenizer)
        self.train_splits: dict[str, EncodedSplit] = {}
        self.val_splits: dict[str, EncodedSplit] = {}
        self.train_shards: dict[str, Shard] = {}  # this process's rows of each split (all of them alone)
        self.val_shards: dict[str, Shard] = {}
        self.scratch: Path | None = None  # a process other than the main one: its memory-mapped files go here
        self.by_owner = False  # each process trains on the batch rows it owns (its cached shard), else an even split
        self.steps_per_epoch = 0
        self.total_steps = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.changes: ChangeMap | None = None  # the starting weights, for the change map
        self.last_change: dict = {}  # the change map's latest record, stored in the summary
        self.last_change_step = -1  # the step of that record
        self.plans_applied: list[dict] = []  # each change a freeze schedule made: step, frozen, trainable
        self.change_seconds = 0.0  # what recording the change map cost (bench/speed.py reports it)
        self.step = 0
        self.train_seconds = 0.0
        self.train_examples = 0
        self.peak_mb = 0.0
        self.last_eval: dict = {}
        self.predictions: dict = {}  # the final evaluation's, per task: stored as predictions.json
        self.started = time.time()
        self.prefix_cache: FrozenPrefixCache | None = None
        self.cache_info: dict = {"used": False, "reason": "the run ended before training started"}

    # -- the whole run ---------------------------------------------------------------------
    def run(self) -> None:
        status, message = "finished", ""
        try:
            self.bus.emit(StateEvent("started", f"training on {devices.describe_device(self.experiment.device)}"))
            self.setup()
            if self.experiment.trains:
                self.train()
                self.evaluate(final=True)
            else:
                status, message = "evaluated", "every part is frozen: nothing can learn, so the run only evaluates"
                self.evaluate(final=True)
        except StopRequested:
            status, message = "stopped", f"stopped at step {self.step} of {self.total_steps}"
            self.record_change()  # where learning had got to when it stopped
        except torch.OutOfMemoryError:
            status, message = "failed", OOM_HINT
            self.release_memory()
        except Exception as error:  # the run is stored as failed, and the next one can start
            status, message = "failed", f"{type(error).__name__}: {error}".splitlines()[0][:500]
            if "out of memory" in str(error).lower():
                message = OOM_HINT
                self.release_memory()
        if status in ("finished", "stopped", "evaluated") and self.processes.is_main:
            try:
                model = self.model_for_saving()
                checkpoints.save_weights(model, self.experiment.tokenizer, self.run_folder, self.save_mode,
                                         checkpoints.base_source(self.experiment.config, model.backbone),
                                         self.trained_backbone_tensors(), self.experiment.adapter)
            except OSError as error:  # e.g. the disk filled up: keep the record, say why there are no weights
                status, message = "failed", f"could not save the weights: {error.strerror or error}"
        self.close_cache()
        if self.processes.is_main:
            self.run_folder.clear_stop_request()
            self.write_summary(status, message)
        self.bus.emit(StateEvent(status, message))
        if status != "failed":  # no process ends before the main one has written the run
            self.processes.wait_for_everyone()
        elif not self.processes.is_main:  # a failed process ends at once, with its error; the launcher then
            raise RuntimeError(f"process {self.processes.rank}: {message}")  # ends the others

    def setup(self) -> None:
        cfg, experiment = self.cfg, self.experiment
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed + self.processes.rank)  # under a launcher, each process its own dropout draws
        self.accelerator = devices.make_accelerator(experiment.device, experiment.precision)
        self.device = self.accelerator.device
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.train_splits, self.val_splits = encode_splits(experiment)
        self.train_shards = {task: self.processes.shard(split) for task, split in self.train_splits.items()}
        self.val_shards = {task: self.processes.shard(split) for task, split in self.val_splits.items()}
        self.steps_per_epoch = steps_per_epoch(self.train_splits, cfg.batch_size, cfg.task_sampling)
        self.total_steps = self.steps_per_epoch * cfg.epochs if experiment.trains else 0
        if experiment.trains:
            self.optimizer = self.make_optimizer()
            from transformers import get_linear_schedule_with_warmup

            self.scheduler = get_linear_schedule_with_warmup(
                self.optimizer, math.ceil(cfg.warmup_ratio * self.total_steps), self.total_steps)
            self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
                self.model, self.optimizer, self.scheduler)
        else:
            self.model = self.accelerator.prepare(self.model)
        self.prefix_cache = FrozenPrefixCache(
            experiment.model, self.model, enabled=cfg.cache_frozen_prefix, trains=experiment.trains,
            splits={**{f"train/{n}": s.split.ids for n, s in self.train_shards.items()},
                    **{f"val/{n}": s.split.ids for n, s in self.val_shards.items()}},
            settings=cache_settings(experiment), folder=self.scratch_folder(), device=self.device,
            autocast=self.accelerator.autocast, shared=experiment.shared_prefix)
        self.by_owner = self.prefix_cache.active  # decided once, alike in every process (core.distributed)
        if self.processes.is_main:  # the change map is the main process's: the gradients it sees are everyone's
            self.run_folder.update_summary(cache=self.prefix_cache.info(),
                                           adapter=experiment.adapter.report if experiment.adapter else None)
            began = time.perf_counter()  # the starting copy is part of what the change map costs
            self.changes = ChangeMap(experiment.model, self.device, self.run_folder.path)
            self.change_seconds += time.perf_counter() - began

    def scratch_folder(self) -> Path:
        """Where the prefix cache may put memory-mapped files: the run folder, or for a process other than
        the main one (which writes nothing there) a temporary folder of its own, removed at the end."""
        if self.processes.is_main:
            return self.run_folder.path
        self.scratch = Path(tempfile.mkdtemp(prefix=f"freeze-lab-rank{self.processes.rank}-"))
        return self.scratch

    def make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the parameters that train at some point of the run (``self.optimized``), two groups per
        part (its ``part`` key) at the part's learning rate (``core.layer_rates``; the heads' is
        ``head_learning_rate``). A parameter frozen now has no gradient, and AdamW skips it (``change_plan``).

        Biases and LayerNorm weights (every tensor with fewer than two dimensions) get no
        weight decay, as in the Hugging Face Trainer and nanoGPT: pulling a scale or an
        offset towards zero regularises nothing useful.
        """
        cfg, model = self.cfg, self.experiment.model
        rates = part_rates(list(model.parts()), cfg.learning_rate, cfg.head_learning_rate, cfg.layer_lr_decay)
        optimized, groups = {id(p) for p in self.optimized}, []
        own_rate = self.experiment.config.adapter and self.experiment.config.adapter.learning_rate
        adapter_tensors = {id(p) for p in self.experiment.adapter.tensors()} if own_rate else set()
        for part, modules in model.parts().items():
            params = list({id(p): p for m in modules for p in m.parameters() if id(p) in optimized}.values())
            optimized -= {id(p) for p in params}  # a tensor reachable from two parts: in the first only
            adapted = [p for p in params if id(p) in adapter_tensors]  # at adapter.learning_rate, when it is set
            params = [p for p in params if id(p) not in adapter_tensors]
            groups += [{"params": [p for p in params if p.dim() >= 2], "lr": rates[part], "part": part,
                        "weight_decay": cfg.weight_decay},
                       {"params": [p for p in params if p.dim() < 2], "lr": rates[part], "part": part,
                        "weight_decay": 0.0},
                       {"params": adapted, "lr": own_rate, "part": part, "weight_decay": cfg.weight_decay}]
        return torch.optim.AdamW([g for g in groups if g["params"]])

    # -- training --------------------------------------------------------------------------
    def train(self) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed)
        weights = self.loss_weights()
        if self.plan_changes:  # the plan a freeze schedule starts from, then each change
            self.bus.emit(PlanEvent(0, list(self.experiment.plan.frozen)))
        for epoch in range(cfg.epochs):
            self.prefix_cache.revalidate()  # rebuilds only if the frozen prefix changed
            schedule = epoch_schedule(self.train_splits, cfg.batch_size, rng, cfg.length_bucketing,
                                      cfg.task_sampling)
            for i, (task, rows) in enumerate(schedule):
                self.check_stop()
                if self.step in self.plan_changes:
                    self.change_plan(self.plan_changes[self.step])
                began = time.perf_counter()
                loss = self.train_step(task, rows, weights[task])
                self.train_seconds += time.perf_counter() - began
                self.train_examples += len(rows)
                self.step += 1
                fraction = epoch + (i + 1) / len(schedule)
                lr = self.scheduled_rate()
                self.bus.emit(StepEvent(self.step, round(fraction, 4), task, loss, lr))
                self.emit_progress(fraction)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps:
                    self.evaluate()
            if not cfg.eval_every and epoch < cfg.epochs - 1:
                self.evaluate()

    def change_plan(self, plan: FreezePlan) -> None:
        """Apply the freeze schedule's next plan between two steps (Lightning #8720 and transformers #20029
        broke here). The optimizer has held every parameter of the run from the start, so nothing is added:
        a parameter that joins has never had a gradient (a schedule only unfreezes, or only freezes), so its
        first AdamW step starts from fresh state, at the rate the learning-rate schedule sets for every group
        at every step. One that leaves has no gradient from now on (``train_step`` clears them to None), and
        ``torch.optim.AdamW`` skips a parameter without one: neither momentum nor weight decay moves it.
        The change map records the mark first; the frozen prefix's cache is rebuilt if the prefix changed."""
        if self.last_change_step != self.step:
            self.record_change()
        counts = apply_plan(self.experiment.model, plan)
        self.plans_applied.append({"step": self.step, "frozen": list(plan.frozen), "trainable": counts["trainable"]})
        self.trainable = trainable_parameters(self.experiment.model)
        self.prefix_cache.revalidate()
        self.bus.emit(PlanEvent(self.step, list(plan.frozen)))

    def scheduled_rate(self) -> float:
        """``learning_rate`` (the top layer's) as the warm-up and decay schedule has scaled it now."""
        group = self.optimizer.param_groups[0]
        return self.cfg.learning_rate * group["lr"] / group["initial_lr"]

    def loss_weights(self) -> dict[str, float]:
        tasks = self.experiment.config.tasks
        return {name: (tasks[name].loss_weight if tasks else 1.0) for name in self.experiment.tasks}

    def batch_logits(self, task: str, split_name: str, ids: list[list[int]], rows: list[int],
                     backbone_grad: bool = True) -> torch.Tensor:
        """The logits of ``rows`` of a split: from the cached frozen prefix when the cache serves
        them, else from the full model. The one place that choice is made."""
        logits = self.prefix_cache.logits(task, split_name, ids, rows, backbone_grad)  # None: the cache is off
        if logits is None:
            logits = full_model_logits(self.model, task, ids, rows, self.pad_id, self.device, backbone_grad)
        return logits.float()

    def train_step(self, task: str, rows: list[int], weight: float) -> float:
        """One optimizer step on the global batch ``rows``; this process computes its share of it.
        Returns the batch's mean loss."""
        self.model.train()
        backbone_grad = self.experiment.config.trains_backbone(task)
        loss_sum = self.share_loss(task, rows, backbone_grad)
        # DDP averages the processes' gradients: scaled so that the average is the global batch's mean loss
        loss = loss_sum / len(rows) * self.processes.world_size
        if loss.requires_grad:  # false when this task neither trains the backbone nor has a trainable head
            self.accelerator.backward(loss * weight)
        total_norm = float(self.accelerator.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm))
        if self.changes is not None:
            began = time.perf_counter()  # the change map sees the gradients before clipping scaled them down
            self.changes.add_gradients(scale=max(1.0, (total_norm + 1e-6) / self.cfg.max_grad_norm))
            self.change_seconds += time.perf_counter() - began
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.processes.total(loss_sum.item(), self.device) / len(rows)

    def share_loss(self, task: str, rows: list[int], backbone_grad: bool) -> torch.Tensor:
        """The summed loss of this process's rows of the batch. A process that owns none of them still runs
        one row (counted zero), because DDP reduces gradients only when every process ran a forward."""
        split = self.train_splits[task]
        if self.by_owner:  # the cache holds this process's own rows: a row always goes to its owner
            shard = self.train_shards[task]
            mine, ids, labels = shard.local_rows(self.processes.share(rows)), shard.split.ids, shard.split.labels
        else:
            mine, ids, labels = self.processes.even_share(rows), split.ids, split.labels
        if mine:
            logits = self.batch_logits(task, f"train/{task}", ids, mine, backbone_grad)
            return F.cross_entropy(logits, torch.tensor([labels[r] for r in mine], device=self.device),
                                   reduction="sum")
        logits = full_model_logits(self.model, task, split.ids, rows[:1], self.pad_id, self.device, backbone_grad)
        return F.cross_entropy(logits.float(), torch.tensor([split.labels[rows[0]]], device=self.device)) * 0.0

    def check_stop(self) -> None:
        """Before each step: the caller's event (a signal, the page's thread) or a stop file in the
        run folder (any process, any OS). One stat per step. Several processes stop together: if any
        was asked (the main one reads the file), all are."""
        asked = self.stop.is_set() or (self.processes.is_main and self.run_folder.stop_requested())
        if self.processes.any(asked, self.device):
            raise StopRequested

    def emit_progress(self, epoch: float) -> None:
        rate = self.train_examples / self.train_seconds if self.train_seconds else 0.0
        per_step = self.train_seconds / self.step if self.step else 0.0
        eta = per_step * (self.total_steps - self.step)
        self.track_memory()
        self.bus.emit(ProgressEvent(self.step, self.total_steps, round(epoch, 4), round(rate, 2), round(eta, 1)))

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, final: bool = False) -> dict:
        """Per task: loss, accuracy, macro-F1 and the confusion matrix on validation data; then
        where learning happened so far (the change map)."""
        # a `with` block, not the @torch.inference_mode() decorator: mutmut skips decorated functions
        with torch.inference_mode():
            results = self._evaluate(final)
        self.record_change()
        return results

    def record_change(self) -> None:
        if self.changes is None:  # a process other than the main one, or a run that stopped before setup
            return
        began = time.perf_counter()
        self.last_change = self.changes.record()
        self.last_change_step = self.step
        self.change_seconds += time.perf_counter() - began
        self.bus.emit(ChangeEvent(self.step, self.last_change))

    def _evaluate(self, final: bool) -> dict:
        self.model.eval()
        results = {}
        for task, split in self.val_splits.items():
            shard = self.val_shards[task].split
            predictions, confidence, total_loss = self.gathered(task, *predict_split(
                shard, self.cfg.batch_size * 2, self.device,
                lambda rows, task=task, shard=shard: self.batch_logits(task, f"val/{task}", shard.ids, rows)))
            label_names = self.experiment.tasks[task].labels
            if final:
                self.predictions[task] = {"labels": label_names, "true": list(split.labels),
                                          "predicted": predictions, "confidence": confidence}
            matrix = confusion_matrix(split.labels, predictions, len(label_names))
            results[task] = {"loss": total_loss / len(split), "accuracy": accuracy(matrix),
                             "macro_f1": macro_f1(matrix), "labels": label_names, "confusion": matrix}
        self.model.train()
        if final and self.processes.is_main:
            atomic_write_json(self.run_folder.predictions_path, {"tasks": self.predictions})
        self.last_eval = results
        epoch = self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0
        self.bus.emit(EvalEvent(self.step, round(epoch, 4), results, final))
        return results

    def gathered(self, task: str, predictions: list[int], confidence: list[float],
                 loss: float) -> tuple[list[int], list[float], float]:
        """A validation split's predictions from every process's shard, in the split's order, and the summed loss.
        Each example once: the shards do not overlap and nothing is padded."""
        if self.processes.world_size == 1:
            return predictions, confidence, loss
        rows = self.val_shards[task].rows
        everyone = sorted(self.accelerator.gather_for_metrics(list(zip(rows, predictions, confidence)),
                                                              use_gather_object=True))
        if [row for row, _, _ in everyone] != list(range(len(self.val_splits[task]))):
            raise RuntimeError(f"the processes' validation predictions of {task!r} do not cover the split once each")
        return ([p for _, p, _ in everyone], [c for _, _, c in everyone],
                self.processes.total(loss, self.device))

    # -- bookkeeping -----------------------------------------------------------------------
    def track_memory(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            import psutil

            self.peak_mb = max(self.peak_mb, psutil.Process().memory_info().rss / 2**20)

    def release_memory(self) -> None:
        self.close_cache()
        self.optimizer = self.scheduler = None
        torch.cuda.empty_cache()  # a no-op unless CUDA was initialised

    def close_cache(self) -> None:
        """Free the cached activations and the change map's starting weights (and their memory-mapped
        files); keep what the summary reports."""
        if self.prefix_cache is not None:
            self.cache_info = self.prefix_cache.close()
            self.prefix_cache = None
        if self.changes is not None:
            self.changes.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def model_for_saving(self) -> MultiTaskModel:
        return self.accelerator.unwrap_model(self.model) if self.accelerator is not None else self.experiment.model

    def trained_backbone_tensors(self) -> set[str] | None:
        """With a freeze schedule, the backbone tensors that trained at some point (a progressively frozen
        layer moved before it froze); None otherwise: the trainable ones are those."""
        if not self.plan_changes:
            return None
        optimized = {id(p) for p in self.optimized}
        return {name for name, p in self.experiment.model.backbone.named_parameters() if id(p) in optimized}

    @property
    def save_mode(self) -> str:
        """training.save, with auto meaning a whole backbone folder (a sweep asks for changed itself)."""
        return "full" if self.cfg.save == "auto" else self.cfg.save

    def write_summary(self, status: str, message: str) -> None:
        self.track_memory()
        experiment = self.experiment
        summary = self.run_folder.summary()
        summary.update({
            "status": status, "message": message,
            "tasks": {task: {k: r[k] for k in ("accuracy", "macro_f1", "loss", "labels", "confusion")}
                      for task, r in self.last_eval.items()},
            "params": experiment.params, "frozen": frozen_parts(experiment.model),
            "partly_frozen": partly_frozen_parts(experiment.model), "plan_changes": self.plans_applied,
            "adapter": experiment.adapter.report if experiment.adapter else None,
            "preset": experiment.config.freeze.preset,
            "train_examples": {task: len(data.train_texts) for task, data in experiment.tasks.items()},
            "weights": self.save_mode if status in ("finished", "stopped", "evaluated") else "none",
            "disk_mb": round(self.run_folder.disk_bytes() / 2**20, 2),
            "steps": self.step, "total_steps": self.total_steps,
            "examples_per_second": round(self.train_examples / self.train_seconds, 2) if self.train_seconds else 0.0,
            "train_seconds": round(self.train_seconds, 2), "wall_seconds": round(time.time() - self.started, 2),
            "peak_memory_mb": round(self.peak_mb, 1), "device": experiment.device,
            "precision": experiment.precision, "init_from": experiment.warm_start, "finished_at": time.time(),
            "cache": self.cache_info, "data_notes": experiment.notes, "seed": self.cfg.seed, "change": self.last_change,
            "change_map": {"storage": self.changes.storage if self.changes else None,
                           "mb": self.changes.megabytes if self.changes else 0.0,
                           "seconds": round(self.change_seconds, 3)},
            "validation_fingerprint": {n: validation_fingerprint(t) for n, t in experiment.tasks.items()},
            "world_size": self.processes.world_size,
        })
        self.run_folder.write_summary(summary)
