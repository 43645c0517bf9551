"""Distributed benchmark: one run over two CPU processes (accelerate launch, gloo) against one process.

    python bench/distributed.py                       # MiniLM, 400 examples per task, 2 epochs, lower 4 of 6 frozen
    python bench/distributed.py --train 200 --freeze none --processes 2

Both sides train the same config (the packaged MiniLM, AG News topic + SST-2 sentiment from
../shared/data, the same seed, evaluation only at the end) as child processes of this one,
one after the other: first ``python -m core train`` alone with all the CPU threads, then
``accelerate launch --multi_gpu --num_processes N -m core train`` with the threads divided
between the N processes (what ``accelerate launch --cpu`` would also do). The global batch is
the same, so the runs take the same steps. Reported: the training loop's seconds (``train_s``,
the main process's clock), the run's wall seconds, the whole command's seconds (start-up
included) and the accuracies. Results go to bench/results/distributed.json (git-ignored).
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
sys.path.insert(0, str(ROOT / "tests"))
from server import free_port  # noqa: E402 - the tests' own helper, as bench/page.py uses theirs

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
FREEZES = {"none": {}, "lower4": {"preset": "lower_k", "k": 4}, "backbone": {"preset": "scenario2"}}


def config(args) -> dict:
    tasks = {
        "topic": {"train": str(DATA / "ag_news_train_subset_5000.csv"), "validation": str(DATA / "ag_news_test.csv")},
        "sentiment": {"train": str(DATA / "sst2_train.csv"), "validation": str(DATA / "sst2_validation.csv")},
    }
    return {
        "name": f"bench-distributed {args.freeze}", "backbone": "minilm", "freeze": FREEZES[args.freeze],
        "tasks": {name: {**files, "label_column": "label_name", "max_train_examples": args.train,
                         "max_validation_examples": args.val} for name, files in tasks.items()},
        "training": {"epochs": args.epochs, "batch_size": args.batch, "max_length": 64, "seed": 0, "eval_every": 0,
                     "device": "cpu"},
    }


def timed(command: list[str], env: dict) -> float:
    began = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
    return time.perf_counter() - began


def summary(runs_dir: Path) -> dict:
    (path,) = runs_dir.glob("*/summary.json")
    return json.loads(path.read_text(encoding="utf-8"))


def row(name: str, seconds: float, s: dict) -> dict:
    return {"case": name, "world_size": s["world_size"], "command_s": round(seconds, 1), "wall_s": s["wall_seconds"],
            "train_s": s["train_seconds"], "examples_per_s": s["examples_per_second"], "steps": s["steps"],
            "accuracy": {t: m["accuracy"] for t, m in s["tasks"].items()}, "cache": s["cache"].get("kind")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=400, help="training examples per task")
    p.add_argument("--val", type=int, default=200, help="validation examples per task")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32, help="the global batch size, as in a single process")
    p.add_argument("--freeze", choices=list(FREEZES), default="lower4")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all, on either side")
    args = p.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    work = Path(tempfile.mkdtemp(prefix="freeze-lab-bench-distributed-"))
    (work / "exp.yaml").write_text(yaml.safe_dump(config(args)), encoding="utf-8")
    train = ["-m", "core", "train", "--config", str(work / "exp.yaml"), "--quiet", "--runs-dir"]
    load_before = psutil.getloadavg()

    one = timed([sys.executable, *train, str(work / "one")], {**env, "OMP_NUM_THREADS": str(args.threads)})
    per_process = max(1, args.threads // args.processes)
    several = timed([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                     str(args.processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "--main_process_port", str(free_port()), *train, str(work / "several")],
                    {**env, "OMP_NUM_THREADS": str(per_process)})
    rows = [row(f"1 process, {args.threads} threads", one, summary(work / "one")),
            row(f"{args.processes} processes (gloo), {per_process} thread(s) each", several, summary(work / "several"))]
    result = {"rows": rows, "train_ratio": round(rows[1]["train_s"] / rows[0]["train_s"], 3),
              "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": psutil.getloadavg(),
              "config": config(args)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2), encoding="utf-8")

    tasks = " / ".join(rows[0]["accuracy"])
    print(f"| case | steps | train s | examples/s | run wall s | command s | acc {tasks} | cache |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        accuracy = " / ".join(f"{a:.3f}" for a in r["accuracy"].values())
        print(f"| {r['case']} | {r['steps']} | {r['train_s']:.1f} | {r['examples_per_s']:.1f} | {r['wall_s']:.1f} | "
              f"{r['command_s']:.1f} | {accuracy} | {r['cache'] or 'off'} |")
    print(f"{args.processes} processes / 1 process, training-loop seconds: {result['train_ratio']:.3f} "
          f"(load average before {load_before[0]:.1f}, after {psutil.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
