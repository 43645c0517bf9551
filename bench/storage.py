"""Disk use of a depth sweep when runs keep every weight (training.save: full) against only what changed
(changed, the sweep default), and the time to materialize one member's full backbone folder.

    python3 bench/storage.py [--seeds 3] [--examples 32]

Disk use does not depend on how much data a member trains on, so the members train on a few examples
(``--examples`` per task, one epoch) of AG News and SST-2 from ../shared/data; the backbone is the packaged
MiniLM. Prints a table and writes bench/results/storage.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def base_config(examples: int, save: str):
    from core.config import parse_config

    def task(train: str, validation: str) -> dict:
        return {"train": str(DATA / train), "validation": str(DATA / validation),
                "max_train_examples": examples, "max_validation_examples": examples}

    return parse_config({"name": f"storage {save}", "tasks": {
        "topic": task("ag_news_train_subset_5000.csv", "ag_news_test.csv"),
        "sentiment": task("sst2_train.csv", "sst2_validation.csv")},
        "training": {"epochs": 1, "eval_every": 0, "save": save}})


def sweep_disk(runs: Path, examples: int, seeds: int, save: str) -> dict:
    from core.runs import RunStore
    from core.sweep import run_sweep

    began = time.perf_counter()
    record = run_sweep(base_config(examples, save), "all", seeds=seeds, runs_dir=runs)
    store = RunStore(runs)
    members = [store.get(m["run_id"]) for m in record["members"]]
    first_seed = [(m, run) for m, run in zip(record["members"], members) if m["seed"] == record["seeds"][0]]
    return {"save": save, "members": len(members), "wall_seconds": round(time.perf_counter() - began, 1),
            "disk_mb": round(sum(m.disk_bytes() for m in members) / 2**20, 1),
            "per_depth_mb": {m["variant"]: round(run.disk_bytes() / 2**20, 2) for m, run in first_seed},
            "run_ids": [m.id for m in members]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=32)
    args = parser.parse_args()
    from core.checkpoints import materialize
    from core.runs import RunStore

    with tempfile.TemporaryDirectory() as scratch:
        results = [sweep_disk(Path(scratch) / save, args.examples, args.seeds, save) for save in ("full", "changed")]
        changed_runs = Path(scratch) / "changed"
        member = RunStore(changed_runs).get(results[1]["run_ids"][0])  # depth 0: the most to rebuild
        began = time.perf_counter()
        materialize(member)
        results.append({"materialize_seconds": round(time.perf_counter() - began, 2),
                        "materialized_member_mb": round(member.disk_bytes() / 2**20, 1)})
    full, changed, materialized = results
    print(f"{'save':<8} {'members':>7} {'disk MB':>9} {'sweep wall s':>13}")
    for row in (full, changed):
        print(f"{row['save']:<8} {row['members']:>7} {row['disk_mb']:>9,.1f} {row['wall_seconds']:>13.1f}")
    print(f"changed / full: {changed['disk_mb'] / full['disk_mb']:.3f}")
    print("per member of the first seed (changed): " + ", ".join(f"{k} {v} MB" for k, v in changed["per_depth_mb"].items()))
    print(f"materialize one member (depth 0): {materialized['materialize_seconds']} s, "
          f"{materialized['materialized_member_mb']} MB afterwards")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "storage.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
