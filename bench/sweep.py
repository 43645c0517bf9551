"""Sweep benchmark: a depth sweep as one ``core sweep`` against independent ``core train`` runs.

    python bench/sweep.py                          # depths 0..6, MiniLM, 1,000 examples per task, 1 epoch
    python bench/sweep.py --depths 0,3,6 --train 200 --threads 1

Both sides run the same configs (the packaged MiniLM, AG News topic + SST-2 sentiment
from ../shared/data, one seed, evaluation only at the end) as child processes of this
one, one after another: first the sweep, then one ``python -m core train`` per depth.
Each side's total is the wall time of its processes, start-up included, since that
is what a user waits for. The sweep saves the frozen prefix's forward pass (once per
sweep instead of once per member) and the process start-ups. Results go to
bench/results/sweep.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


def base_config(args) -> dict:
    tasks = {
        "topic": {"train": str(DATA / "ag_news_train_subset_5000.csv"), "validation": str(DATA / "ag_news_test.csv")},
        "sentiment": {"train": str(DATA / "sst2_train.csv"), "validation": str(DATA / "sst2_validation.csv")},
    }
    return {
        "name": "bench-sweep", "backbone": "minilm",
        "tasks": {name: {**files, "label_column": "label_name", "max_train_examples": args.train,
                         "max_validation_examples": args.val} for name, files in tasks.items()},
        "training": {"epochs": 1, "batch_size": 32, "max_length": 64, "seed": 0, "data_seed": 0, "eval_every": 0,
                     "device": "cpu"},
    }


def run(command: list[str], env: dict) -> tuple[float, str]:
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "core", *command], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:1])} failed ({result.returncode}): {result.stderr.strip()[-800:]}")
    return seconds, result.stdout


def summaries(runs_dir: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(runs_dir.glob("*/summary.json"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="0,1,2,3,4,5,6")
    p.add_argument("--train", type=int, default=1000, help="training examples per task")
    p.add_argument("--val", type=int, default=500, help="validation examples per task")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    args = p.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    work = Path(tempfile.mkdtemp(prefix="freeze-lab-bench-sweep-"))
    config = base_config(args)
    load_before = psutil.getloadavg()

    (work / "base.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    sweep_seconds, out = run(["sweep", "--config", str(work / "base.yaml"), "--depths", args.depths,
                              "--runs-dir", str(work / "sweep")], env)
    record = json.loads((Path(out.strip().splitlines()[-1].removeprefix("sweep folder: ")) / "sweep.json")
                        .read_text(encoding="utf-8"))
    in_sweep = {s["run_id"]: s for s in summaries(work / "sweep")}

    alone = []
    for k in depths:
        path = work / f"depth{k}.yaml"
        path.write_text(yaml.safe_dump({**config, "name": f"bench-alone depth {k}",
                                        "freeze": {"preset": "lower_k", "k": k}}), encoding="utf-8")
        seconds, _ = run(["train", "--config", str(path), "--runs-dir", str(work / f"alone{k}"), "--quiet"], env)
        alone.append({"depth": k, "process_seconds": round(seconds, 1), "summary": summaries(work / f"alone{k}")[0]})
    alone_seconds = sum(a["process_seconds"] for a in alone)

    rows = []
    for member, single in zip(record["members"], alone):
        mine = in_sweep[member["run_id"]]
        rows.append({"depth": single["depth"],
                     "sweep_member_wall_s": mine["wall_seconds"], "sweep_member_train_s": mine["train_seconds"],
                     "alone_process_s": single["process_seconds"], "alone_wall_s": single["summary"]["wall_seconds"],
                     "alone_train_s": single["summary"]["train_seconds"],
                     "acc_sweep": {t: m["accuracy"] for t, m in mine["tasks"].items()},
                     "acc_alone": {t: m["accuracy"] for t, m in single["summary"]["tasks"].items()},
                     "shared": mine["cache"].get("shared", False)})
    result = {"sweep_seconds": round(sweep_seconds, 1), "alone_seconds": round(alone_seconds, 1),
              "ratio": round(sweep_seconds / alone_seconds, 3), "shared_prefix": record.get("shared_prefix"),
              "members": rows, "threads": args.threads or "default", "cpus": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": psutil.getloadavg(), "config": config}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sweep.json").write_text(json.dumps(result, indent=2), encoding="utf-8")

    tasks = " / ".join(rows[0]["acc_sweep"]) if rows else ""
    print(f"| depth | sweep member wall s (train s) | alone process s (run wall s, train s) | acc {tasks}, "
          "sweep | alone |")
    print("|---|---|---|---|---|")
    for r in rows:
        accs = [" / ".join(f"{a[t]:.3f}" for t in a) for a in (r["acc_sweep"], r["acc_alone"])]
        print(f"| {r['depth']} | {r['sweep_member_wall_s']:.1f} ({r['sweep_member_train_s']:.1f}) | "
              f"{r['alone_process_s']:.1f} ({r['alone_wall_s']:.1f}, {r['alone_train_s']:.1f}) | {accs[0]} | {accs[1]} |")
    print(f"sweep {sweep_seconds:.1f} s (shared prefix built in {record['shared_prefix']['build_seconds']} s), "
          f"independent runs {alone_seconds:.1f} s, ratio {sweep_seconds / alone_seconds:.3f} "
          f"(load average before {load_before[0]:.1f}, after {psutil.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
