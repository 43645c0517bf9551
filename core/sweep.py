"""Sweeps: one base config times a list of variants times a list of seeds.

A sweep is a thin layer over ``prepare`` and ``run_experiment``: every member is an
ordinary run in the (flat) run store, trained one after another in this process and
under one hold of the training lock, so the sweep is one queue and nothing else
trains between two members. The sweep's own record is
``<runs dir>/sweeps/<sweep id>/sweep.json``, rewritten atomically after each member.

Variants: "depth k" is the lower_k preset with that k (embeddings plus layers
0..k-1 frozen; depth 0 freezes only the embeddings, depth L the whole encoder), or
a preset by name (``scenario3:<task>``, ``lower_k:<k>``), or an explicit list of
parts. Seeds: member i of a variant trains with seed ``base seed + i``. The data is
sampled once, with the base config's seed (``training.data_seed``), so every member
sees the same training and validation examples and seeds change only the heads'
initialisation, the batch order and dropout.

The frozen work is shared: before the first member, one pass of the pristine
backbone stores the input of every layer the members cache (core.cache.SharedPrefix).
With ``devices`` the members train in child processes instead, one per device at a time
(core.sweep_devices), without that shared pass.

On stop (Ctrl-C, the page's Stop) the running member ends as ``stopped`` and no
further member starts; members that never started stay in ``members`` with status
``not started``, and every finished member stays in the table.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.backbones import BackboneError
from core.config import ConfigError, ExperimentConfig, parse_config
from core.data import DataError, TaskData
from core.device import DeviceError
from core.freezing import FreezeError, apply_plan, check_plan
from core.runs import RUN_ID, Run, RunError, RunStore, atomic_write_json

DONE = ("finished", "evaluated")
NOT_STARTED = "not started"
SWEEP_FILE = "sweep.json"
MEMBER_ERRORS = (ConfigError, DataError, FreezeError, RunError, BackboneError, DeviceError)


@dataclass(frozen=True)
class Variant:
    """One setting of the freeze section that the sweep runs with every seed."""

    name: str
    freeze: dict
    depth: int | None = None


def depth_variant(k: int) -> Variant:
    return Variant(f"depth {k}", {"preset": "lower_k", "k": k}, k)


def preset_variant(spec: str | list[str]) -> Variant:
    """'none', 'scenario3:topic' (its head), 'lower_k:2' (its k), or a list of part names."""
    if not isinstance(spec, str):
        parts = list(spec)
        return Variant("parts " + "+".join(parts), {"parts": parts})
    name, _, argument = spec.strip().partition(":")
    if name == "parts":
        return preset_variant([p for p in argument.split("+") if p])
    if name == "lower_k":
        if not argument.isdigit():
            raise ConfigError(f"preset {spec!r}: write lower_k:<k>, e.g. lower_k:2")
        return Variant(spec, {"preset": "lower_k", "k": int(argument)}, int(argument))
    if name == "scenario3":
        return Variant(spec, {"preset": "scenario3", "head": argument or None})
    return Variant(spec, {"preset": name})


def parse_depths(text: str) -> list[int] | str:
    """'all' or comma-separated integers."""
    if text.strip() == "all":
        return "all"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--depths: expected 'all' or comma-separated integers, not {text!r}") from None


def make_variants(depths: list[int] | str | None, presets: list, n_layers: int) -> list[Variant]:
    """The sweep's variants; with neither depths nor presets, every depth 0..L."""
    if depths is None and not presets:
        depths = "all"
    if depths == "all":
        depths = list(range(n_layers + 1))
    for k in depths or []:
        if not 0 <= k <= n_layers:
            raise FreezeError(f"depth {k} is outside 0..{n_layers} (the backbone has {n_layers} layers)")
    variants = [depth_variant(k) for k in depths or []] + [preset_variant(p) for p in presets]
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"variant {repeated[0]!r} is listed twice")
    return variants


def member_config(base: ExperimentConfig, variant: Variant, seed: int, data_seed: int) -> ExperimentConfig:
    """The base config with this variant's freeze section, this seed, and the sweep's data seed."""
    data = base.to_dict()
    data["name"] = f"{(base.name or 'sweep')[:50]} {variant.name} seed {seed}"[:80]
    data["freeze"] = variant.freeze
    data["training"] = {**data["training"], "seed": seed, "data_seed": data_seed}
    if data["training"]["save"] == "auto":  # members keep only what training changed (materialize on demand)
        data["training"]["save"] = "changed"
    try:
        return parse_config(data)
    except ConfigError as error:
        raise ConfigError(f"variant {variant.name!r}: {error}") from None


def new_sweep_id(root: Path, base: ExperimentConfig) -> str:
    """Shaped like a run id (RUN_ID): time, then a slug of the name."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", base.name or "sweep").strip("-").lower()[:40] or "sweep"
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"
    sweep_id, n = stem, 1
    while (root / sweep_id).exists():
        n += 1
        sweep_id = f"{stem}-{n}"
    return sweep_id


def sweeps_root(runs_dir: str | Path) -> Path:
    return Path(runs_dir).expanduser() / "sweeps"


# ---- running -----------------------------------------------------------------------------


def run_sweep(base: ExperimentConfig, depths: list[int] | str | None = None, presets: list | tuple = (),
              seeds: int = 1, runs_dir: str | Path = "runs", stop: threading.Event | None = None,
              subscribers: list | None = None, on_member: Callable[[dict, dict], None] | None = None,
              on_start: Callable[[Path], None] | None = None, on_run: Callable | None = None,
              devices: list[str] | None = None) -> dict:
    """Validate everything, then train every member; returns the final sweep.json content.

    ``on_member(member, summary)`` is told each member's outcome as it ends; ``on_start``
    the sweep folder once it exists; ``on_run(run)`` each member's run as soon as it exists
    (so a caller can follow it live). Raises a one-line error before the first member.
    The training lock is held from the first check to the last member: one queue.
    ``devices`` (core.sweep_devices): train the members in child processes, one per device at a time.
    """
    from core.device import resolve_device
    from core.locks import training_lock
    from core.sweep_devices import check_devices, execute_on_devices

    if seeds < 1:
        raise ConfigError(f"seeds must be 1 or more, not {seeds}")
    RunStore(runs_dir).check_writable()
    device = check_devices(devices, base.training.device) if devices else resolve_device(base.training.device)
    with training_lock(device, queue=True):
        plan = plan_sweep(base, depths, list(presets), seeds, runs_dir, shared_prefix=not devices)
        if devices:
            return execute_on_devices(plan, runs_dir, stop or threading.Event(), devices, on_member, on_start,
                                      on_run)
        return execute(plan, runs_dir, stop or threading.Event(), subscribers, on_member, on_start, on_run)


@dataclass
class SweepPlan:
    """A checked sweep: its members' configs and what their frozen prefixes need."""

    base: ExperimentConfig
    probe: object  # the Experiment that loaded the backbone and the data once
    tasks: dict[str, TaskData]  # that data, which every member trains and validates on
    variants: list[Variant]
    seeds: list[int]
    data_seed: int
    configs: dict[tuple[str, int], ExperimentConfig]
    needs: dict[tuple[int, str], str]  # (depth, kind) -> prefix fingerprint, for the shared prefix


def plan_sweep(base: ExperimentConfig, depths, presets: list, seeds: int, runs_dir,
               shared_prefix: bool = True) -> SweepPlan:
    """Load the backbone and the data once and check every variant's plan against its part names."""
    from core.cache import decide, prefix_fingerprint
    from core.presets import plan_from_config
    from core.training import prepare

    data_seed = base.training.seed if base.training.data_seed is None else base.training.data_seed
    probe = prepare(member_config(base, Variant("probe", {}), base.training.seed, data_seed), runs_dir)
    model, parts = probe.model, list(probe.model.parts())
    variants = make_variants(depths, presets, len(model.backbone_parts().layers))
    seed_list = [base.training.seed + i for i in range(seeds)]
    configs = {(v.name, s): member_config(base, v, s, data_seed) for s in seed_list for v in variants}
    needs: dict[tuple[int, str], str] = {}
    for v in variants:
        plan = plan_from_config(configs[(v.name, seed_list[0])].freeze, parts)
        check_plan(plan, parts)
        trains = apply_plan(model, plan)["trainable"] > 0
        decision = decide(model, base.training.cache_frozen_prefix, trains)
        if decision["kind"] is not None and shared_prefix:  # members over devices each cache their own
            needs[(decision["depth"], decision["kind"])] = prefix_fingerprint(model, decision["depth"])
    return SweepPlan(base, probe, probe.tasks, variants, seed_list, data_seed, configs, needs)


def execute(plan: SweepPlan, runs_dir, stop: threading.Event, subscribers, on_member, on_start,
            on_run=None) -> dict:
    """Build the shared prefix, then run the members one after another, saving sweep.json after each."""
    from core.cache import SharedPrefix
    from core.training import cache_settings, encode_splits

    store = RunStore(runs_dir)
    folder, record = open_record(plan, store, on_start)
    sweep_id, probe = record["sweep_id"], plan.probe
    train, val = encode_splits(probe)
    shared = SharedPrefix(probe.model, {**{f"train/{n}": s.ids for n, s in train.items()},
                                        **{f"val/{n}": s.ids for n, s in val.items()}},
                          cache_settings(probe), plan.needs, folder, probe.device,
                          pooled_for=tuple(f"val/{n}" for n in val))
    heads = probe.model.heads  # at their random start: the untrained reference's heads
    plan.probe = probe = None  # after the shared pass the members load their own fresh weights
    on_run = saved_first(folder, record, store, on_run)  # sweep.json names the running member at once
    try:
        shared.build(stop)
        record["shared_prefix"] = shared.info()
        record["reference"]["untrained_accuracy"] = untrained_reference(heads, shared, plan.tasks)
        for member in record["members"]:
            if stop.is_set():
                break
            run_member(member, plan.configs[(member["variant"], member["seed"])], plan.tasks, sweep_id, shared,
                       runs_dir, stop, subscribers, on_run)
            if member["status"] == "stopped":  # asked through the run's stop file (the page's Stop on any OS)
                stop.set()
            save(folder, record, store)
            if on_member:
                on_member(member, store.get(member["run_id"]).summary() if member["run_id"] else {})
    finally:
        shared.close()
        close_record(folder, record, store, stop)
    return record


def open_record(plan: SweepPlan, store: RunStore, on_start: Callable[[Path], None] | None) -> tuple[Path, dict]:
    """The sweep's folder and its sweep.json, every member not started yet."""
    root = sweeps_root(store.root)
    root.mkdir(parents=True, exist_ok=True)
    sweep_id = new_sweep_id(root, plan.base)
    folder = root / sweep_id
    folder.mkdir()
    record = {
        "sweep_id": sweep_id, "name": plan.base.name or sweep_id, "status": "running", "started_at": time.time(),
        "backbone": plan.base.backbone, "n_layers": len(plan.probe.model.backbone_parts().layers),
        "seeds": plan.seeds, "data_seed": plan.data_seed,
        "variants": [{"variant": v.name, "depth": v.depth, "freeze": v.freeze} for v in plan.variants],
        "members": [{"run_id": None, "variant": v.name, "depth": v.depth, "seed": s, "status": NOT_STARTED}
                    for s in plan.seeds for v in plan.variants],
        "reference": {"majority_accuracy": reference_lines(plan.tasks)},
        "base_config": plan.base.to_dict(),
    }
    save(folder, record, store)
    if on_start:
        on_start(folder)
    return folder, record


def close_record(folder: Path, record: dict, store: RunStore, stop: threading.Event) -> None:
    """The sweep's status from its members', saved for the last time."""
    statuses = [m["status"] for m in record["members"]]
    record["status"] = ("finished" if all(s in DONE for s in statuses) else
                        "stopped" if stop.is_set() or NOT_STARTED in statuses else "failed")
    record["finished_at"] = time.time()
    save(folder, record, store)


def run_member(member: dict, config: ExperimentConfig, tasks: dict[str, TaskData], sweep_id: str, shared,
               runs_dir, stop, subscribers, on_run=None) -> None:
    """Prepare (fresh pretrained weights, the sweep's data) and train one member; its outcome goes into ``member``."""
    from core.training import prepare, run_experiment

    def named(run) -> None:
        run.update_summary(sweep=sweep_id, seed=config.training.seed)
        member["run_id"] = run.id
        if on_run:
            on_run(run)

    member["status"] = "running"
    try:
        experiment = prepare(config, runs_dir, tasks)
        experiment.shared_prefix = shared
        run = run_experiment(config, runs_dir, subscribers, stop, experiment, on_run=named)
        member["status"] = run.status
    except MEMBER_ERRORS as error:  # e.g. a data file changed meanwhile: this member fails, the next one runs
        member["status"], member["message"] = "failed", str(error)


def saved_first(folder: Path, record: dict, store: RunStore, then: Callable | None) -> Callable:
    """A member's on_run: rewrite sweep.json (which now names the running member), then tell ``then``."""
    def started(run: Run) -> None:
        save(folder, record, store)
        if then:
            then(run)

    return started


def save(folder: Path, record: dict, store: RunStore) -> None:
    summaries = {m["run_id"]: store.get(m["run_id"]).summary() for m in record["members"] if m["run_id"]}
    record["table"] = sweep_table(record, summaries)
    record["recovery"] = recovery(record["table"], record["n_layers"])
    atomic_write_json(folder / SWEEP_FILE, record)


# ---- the table ---------------------------------------------------------------------------


def sweep_table(record: dict, summaries: dict[str, dict]) -> list[dict]:
    """One row per variant, over the members that finished (or evaluated)."""
    rows = []
    for variant in record["variants"]:
        done = [summaries[m["run_id"]] for m in record["members"]
                if m["variant"] == variant["variant"] and m["run_id"] and m["status"] in DONE]
        if not done:
            continue
        params = done[0]["params"]
        tasks = {}
        for task in done[0]["tasks"]:
            accuracies = [s["tasks"][task]["accuracy"] for s in done]
            tasks[task] = {"accuracy_mean": statistics.fmean(accuracies),
                           "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                           "macro_f1_mean": statistics.fmean(s["tasks"][task]["macro_f1"] for s in done),
                           "n_seeds": len(done)}
        rows.append({"variant": variant["variant"], "depth": variant["depth"], "trainable": params["trainable"],
                     "trainable_fraction": params["trainable"] / params["total"],
                     "train_seconds_mean": statistics.fmean(s["train_seconds"] for s in done),
                     "wall_seconds_mean": statistics.fmean(s["wall_seconds"] for s in done),
                     "disk_mb": round(sum(s.get("disk_mb", 0.0) for s in done), 2), "tasks": tasks})
    return rows


def recovery(table: list[dict], n_layers: int) -> dict:
    """Per task and variant, (acc - acc_all_frozen) / (acc_full - acc_all_frozen), when both ends are there.

    Full: the 'none' preset, else depth 0. All frozen: depth L, else 'scenario2'.
    """
    by_name = {row["variant"]: row for row in table}
    full = by_name.get("none") or by_name.get("depth 0")
    frozen = by_name.get(f"depth {n_layers}") or by_name.get("scenario2")
    if full is None or frozen is None or full is frozen:
        return {}
    out: dict = {"full": full["variant"], "all_frozen": frozen["variant"], "tasks": {}}
    for task in full["tasks"]:
        high, low = full["tasks"][task]["accuracy_mean"], frozen["tasks"][task]["accuracy_mean"]
        out["tasks"][task] = {row["variant"]: ((row["tasks"][task]["accuracy_mean"] - low) / (high - low)
                                               if high != low else None) for row in table}
    return out


def majority_accuracy(task: TaskData) -> float:
    """Validation accuracy of always predicting the most common training label."""
    if not task.val_labels:
        return 0.0
    common = max(range(len(task.labels)), key=task.train_labels.count)
    return task.val_labels.count(common) / len(task.val_labels)


def reference_lines(tasks: dict[str, TaskData]) -> dict[str, float]:
    """Per task, the accuracy a model reaches by always guessing the majority class (a chart's floor)."""
    return {name: majority_accuracy(task) for name, task in tasks.items()}


def untrained_predictions(heads, shared, tasks: dict[str, TaskData]) -> dict[str, list[int]] | None:
    """Per task, the validation predictions with everything frozen and the heads at their random start.

    What a scenario1 run with the base seed predicts, without a run of its own: the probe's
    heads are that run's heads (the same seed before the same construction), and the shared
    pass kept the pristine backbone's pooled vectors of every validation split. None when
    the pass stopped before them.
    """
    import torch

    heads = heads.cpu().eval()  # the pooled vectors are kept on the CPU
    out = {}
    with torch.no_grad():
        for name, task in tasks.items():
            pooled = shared.pooled.get(f"val/{name}")
            if pooled is None or len(pooled) != len(task.val_labels):
                return None
            out[name] = heads[name](pooled).argmax(-1).tolist()
    return out


def untrained_reference(heads, shared, tasks: dict[str, TaskData]) -> dict[str, float] | None:
    """Per task, the untrained model's validation accuracy (a chart's reference line)."""
    from core.metrics import accuracy, confusion_matrix

    predictions = untrained_predictions(heads, shared, tasks)
    if predictions is None:
        return None
    return {name: accuracy(confusion_matrix(task.val_labels, predictions[name], len(task.labels)))
            for name, task in tasks.items()}


# ---- reading sweeps back (for the page and compare) --------------------------------------


def load_sweep(runs_dir: str | Path, sweep_id: str) -> dict:
    """A sweep's sweep.json, by id."""
    if not RUN_ID.fullmatch(sweep_id):
        raise RunError(f"invalid sweep id {sweep_id!r}: use letters, digits, '.', '-' and '_'")
    path = sweeps_root(runs_dir) / sweep_id / SWEEP_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"no sweep {sweep_id!r} in {sweeps_root(runs_dir)}") from None
    except ValueError:
        raise RunError(f"sweep {sweep_id!r}: its sweep.json cannot be read") from None


def list_sweeps(runs_dir: str | Path) -> list[dict]:
    """Every sweep, newest first: {sweep_id, name, status, started_at, n_members, n_done}."""
    root = sweeps_root(runs_dir)
    out = []
    for folder in sorted(root.iterdir() if root.is_dir() else []):
        try:
            record = load_sweep(runs_dir, folder.name)
        except RunError:
            continue
        out.append({"sweep_id": record["sweep_id"], "name": record["name"], "status": record["status"],
                    "started_at": record["started_at"], "n_members": len(record["members"]),
                    "n_done": sum(m["status"] in DONE for m in record["members"])})
    return sorted(out, key=lambda s: s["started_at"], reverse=True)


def sweep_results(runs_dir: str | Path, sweep_id: str) -> dict:
    """What the page plots: {variants, table, recovery, reference, members, status}, plain data."""
    record = load_sweep(runs_dir, sweep_id)
    return {key: record.get(key) for key in ("sweep_id", "name", "status", "n_layers", "seeds", "variants",
                                             "members", "table", "recovery", "reference", "shared_prefix")}


def variant_runs(runs_dir: str | Path, sweep_id: str, variant: str) -> list[str]:
    """The run ids of a sweep variant's finished members."""
    record = load_sweep(runs_dir, sweep_id)
    names = [v["variant"] for v in record["variants"]]
    if variant not in names:
        raise RunError(f"sweep {sweep_id} has no variant {variant!r}; it has {', '.join(names)}")
    return [m["run_id"] for m in record["members"] if m["variant"] == variant and m["status"] in DONE]
