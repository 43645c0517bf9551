"""Speed benchmark: core against the Hugging Face Trainer, and the frozen-prefix cache on and off.

    python bench/speed.py                      # every case, default sizes; prints a table
    python bench/speed.py --train 200 --val 100 --epochs 2 --cases core_full,hf_full

Same model (the packaged MiniLM, mean pooling, two heads), same data (AG News topic +
SST-2 sentiment subsets from ../shared/data), same batches, max length, epochs,
optimizer and schedule. Each case runs in its own process, so that peak memory
(the process's peak resident set) belongs to that case alone. Results go to
bench/results/speed.json (git-ignored).

Timing: "step ex/s" is core's own figure (examples over the time spent inside
``train_step``); "loop ex/s" is examples over the wall time of the whole training
loop (core: ``Trainer.train``; HF: its own ``train_runtime``). Epoch seconds are
the time inside ``train_step`` per epoch. No evaluation runs during training;
accuracy is measured once at the end on the validation subsets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

CASES = {
    # name: (title, freeze config, cache, precision)
    "core_full": ("full fine-tuning, core", {}, True, "fp32"),
    "hf_full": ("full fine-tuning, HF Trainer", {}, None, "fp32"),
    "frozen_nocache": ("whole backbone frozen, no cache", {"preset": "scenario2"}, False, "fp32"),
    "frozen_cache": ("whole backbone frozen, cache", {"preset": "scenario2"}, True, "fp32"),
    "lower4_nocache": ("embeddings + layers 0-3 frozen, no cache", {"preset": "lower_k", "k": 4}, False, "fp32"),
    "lower4_cache": ("embeddings + layers 0-3 frozen, cache", {"preset": "lower_k", "k": 4}, True, "fp32"),
    # CPU bf16 autocast against fp32: step time on a few training batches, and validation accuracy of
    # the model core_full trained (when it ran first), evaluated both ways
    "bf16_probe": ("CPU bf16 autocast vs fp32 (probe)", {}, None, "bf16"),
    # the whole full fine-tuning run under bf16 autocast: slow where the CPU lacks bf16 units; not run by default
    "core_full_bf16": ("full fine-tuning, core, CPU bf16 autocast", {}, True, "bf16"),
}
DEFAULT_CASES = [c for c in CASES if c != "core_full_bf16"]


def experiment_config(args, case: str) -> dict:
    _, freeze, cache, precision = CASES[case]
    return {
        "name": f"bench-{case}",
        "backbone": "minilm",
        "pooling": "mean",
        "tasks": {
            "topic": {"train": str(DATA / "ag_news_train_subset_5000.csv"),
                      "validation": str(DATA / "ag_news_test.csv"), "label_column": "label_name",
                      "max_train_examples": args.train, "max_validation_examples": args.val},
            "sentiment": {"train": str(DATA / "sst2_train.csv"), "validation": str(DATA / "sst2_validation.csv"),
                          "label_column": "label_name", "max_train_examples": args.train,
                          "max_validation_examples": args.val},
        },
        "freeze": freeze,
        "training": {"epochs": args.epochs, "batch_size": args.batch, "max_length": args.max_length,
                     "seed": args.seed, "eval_every": args.eval_every or 10**9,  # default: once, at the end
                     "device": "cpu", "precision": precision, "cache_frozen_prefix": bool(cache)},
    }


def peak_rss_mb() -> float:
    """This process's peak resident set: getrusage where it exists (KiB on Linux, bytes on macOS),
    psutil's peak working set on Windows."""
    try:
        import resource
    except ImportError:  # Windows
        return psutil.Process().memory_info().peak_wset / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ---- one case, in a child process -------------------------------------------------------------


def run_core(args, case: str) -> dict:
    from core.config import parse_config
    from core.training import Trainer, run_experiment

    epoch_seconds: list[float] = []
    epoch_cpu: list[float] = []
    loop = {"examples": 0}
    original_step, original_train = Trainer.train_step, Trainer.train

    def timed_step(self, task, rows, weight):
        began, cpu = time.perf_counter(), time.process_time()
        loss = original_step(self, task, rows, weight)
        epoch = self.step // self.steps_per_epoch
        while len(epoch_seconds) <= epoch:
            epoch_seconds.append(0.0)
            epoch_cpu.append(0.0)
        epoch_seconds[epoch] += time.perf_counter() - began
        epoch_cpu[epoch] += time.process_time() - cpu
        loop["examples"] += len(rows)
        return loss

    def timed_train(self):
        began, cpu = time.perf_counter(), time.process_time()
        original_train(self)
        loop["seconds"], loop["cpu"] = time.perf_counter() - began, time.process_time() - cpu

    Trainer.train_step, Trainer.train = timed_step, timed_train
    config = parse_config(experiment_config(args, case))
    keep = args.keep_runs and case == "core_full"  # the bf16 probe evaluates this model
    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        run = run_experiment(config, args.keep_runs if keep else scratch)
        wall = time.perf_counter() - began
        summary = run.summary()
    if summary["status"] != "finished":
        raise SystemExit(f"{case}: {summary['status']}: {summary['message']}")
    examples = loop["examples"]
    return {
        "examples": examples, "step_examples_per_second": summary["examples_per_second"],
        "loop_seconds": round(loop["seconds"], 2), "loop_examples_per_second": round(examples / loop["seconds"], 2),
        "epoch_seconds": [round(s, 2) for s in epoch_seconds], "epoch_cpu_seconds": [round(s, 2) for s in epoch_cpu],
        "loop_cpu_seconds": round(loop["cpu"], 2), "wall_seconds": round(wall, 2),
        "accuracy": {t: round(r["accuracy"], 4) for t, r in summary["tasks"].items()},
        "macro_f1": {t: round(r["macro_f1"], 4) for t, r in summary["tasks"].items()},
        "cache": summary.get("cache"), "precision": summary["precision"], "steps": summary["steps"],
        "trainable": summary["params"]["trainable"], "run_dir": str(run.path) if keep else None,
        "change_map": summary["change_map"], "change_map_share": round(summary["change_map"]["seconds"] / loop["seconds"], 4),
        "change": summary["change"],
    }


def run_bf16_probe(args, case: str) -> dict:
    """Step time of fp32 against bf16 autocast on the same training batches, and validation accuracy both ways."""
    import copy
    import random

    import torch
    import torch.nn.functional as F

    from core import checkpoints
    from core.batching import EncodedSplit, collate, encode, epoch_schedule
    from core.config import parse_config
    from core.runs import Run
    from core.training import prepare

    config = parse_config(experiment_config(args, "core_full"))
    cfg = config.training
    with tempfile.TemporaryDirectory() as runs:
        x = prepare(config, runs)
    model, tokenizer = x.model, x.tokenizer
    trained = args.model_run and Path(args.model_run, "heads.safetensors").exists()
    if trained:
        model, tokenizer = checkpoints.load_run_model(Run(Path(args.model_run)), config.head_dropout)
    pad_id = tokenizer.pad_token_id or 0
    splits = {n: EncodedSplit(encode(tokenizer, t.train_texts, cfg.max_length), t.train_labels)
              for n, t in x.tasks.items()}
    batches = epoch_schedule(splits, cfg.batch_size, random.Random(cfg.seed), True)[:1 + args.probe_steps]
    timing = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        probe = copy.deepcopy(model).train()  # steps change nothing in the evaluated model
        optimizer = torch.optim.AdamW(probe.parameters(), lr=cfg.learning_rate)
        seconds = []
        for task, rows in batches:
            input_ids, mask = collate([splits[task].ids[r] for r in rows], pad_id)
            labels = torch.tensor([splits[task].labels[r] for r in rows])
            began = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                logits = probe(task, input_ids, mask)
            F.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds.append(time.perf_counter() - began)
        timed = seconds[1:]  # the first step is warm-up
        timing[name] = {"step_seconds": [round(s, 3) for s in timed],
                        "examples_per_second": round(sum(len(r) for _, r in batches[1:]) / sum(timed), 2)}
    model.eval()
    accuracy, agreement, max_diff = {"fp32": {}, "bf16": {}}, {}, 0.0
    with torch.inference_mode():
        for n, t in x.tasks.items():
            ids = encode(tokenizer, t.val_texts[:args.probe_val], cfg.max_length)
            labels = t.val_labels[:len(ids)]
            predictions = {"fp32": [], "bf16": []}
            for start in range(0, len(ids), cfg.batch_size * 2):
                input_ids, mask = collate(ids[start:start + cfg.batch_size * 2], pad_id)
                full = model(n, input_ids, mask).float()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    half = model(n, input_ids, mask).float()
                max_diff = max(max_diff, (full - half).abs().max().item())
                predictions["fp32"] += full.argmax(-1).tolist()
                predictions["bf16"] += half.argmax(-1).tolist()
            for k in predictions:
                accuracy[k][n] = round(sum(p == y for p, y in zip(predictions[k], labels)) / len(ids), 4)
            agreement[n] = round(sum(a == b for a, b in zip(predictions["fp32"], predictions["bf16"])) / len(ids), 4)
    return {
        "probe": {"timing": timing, "speed_bf16_over_fp32": round(
            timing["bf16"]["examples_per_second"] / timing["fp32"]["examples_per_second"], 3),
            "trained_model": bool(trained), "validation_examples_per_task": args.probe_val,
            "accuracy": accuracy, "prediction_agreement": agreement, "max_logit_difference": round(max_diff, 4)},
        "examples": 0, "step_examples_per_second": timing["bf16"]["examples_per_second"],
        "loop_seconds": 0.0, "loop_examples_per_second": timing["bf16"]["examples_per_second"],
        "loop_cpu_seconds": 0.0, "epoch_seconds": [], "epoch_cpu_seconds": [], "wall_seconds": 0.0,
        "accuracy": accuracy["bf16"], "cache": None, "precision": "bf16", "steps": len(batches), "trainable": 0,
    }


def run_hf(args, case: str) -> dict:
    """The same MultiTaskModel (same initial weights), trained by transformers.Trainer."""
    import math
    import random

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from transformers import Trainer, TrainingArguments, get_linear_schedule_with_warmup

    from core.batching import EncodedSplit, collate, encode, epoch_schedule, steps_per_epoch
    from core.config import parse_config
    from core.freezing import trainable_parameters

    config = parse_config(experiment_config(args, case))
    cfg = config.training
    with tempfile.TemporaryDirectory() as runs:
        from core.training import prepare

        x = prepare(config, runs)
    tokenizer, model = x.tokenizer, x.model
    pad_id = tokenizer.pad_token_id or 0
    tasks = list(x.tasks)
    splits = {n: EncodedSplit(encode(tokenizer, t.train_texts, cfg.max_length), t.train_labels)
              for n, t in x.tasks.items()}
    offsets, examples = {}, []
    for n, split in splits.items():
        offsets[n] = len(examples)
        examples += [(ids, label, tasks.index(n)) for ids, label in zip(split.ids, split.labels)]

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, labels, task):
            logits = self.inner(tasks[int(task[0])], input_ids, attention_mask)
            return {"loss": F.cross_entropy(logits.float(), labels), "logits": logits}

    class ScheduleSampler:
        """core's batches: one task per batch, length-bucketed, seeded, shuffled across tasks."""

        def __init__(self):
            self.rng = random.Random(cfg.seed)

        def __len__(self):
            return steps_per_epoch(splits, cfg.batch_size, cfg.task_sampling)

        def __iter__(self):
            for task, rows in epoch_schedule(splits, cfg.batch_size, self.rng, cfg.length_bucketing,
                                             cfg.task_sampling):
                yield [offsets[task] + r for r in rows]

    def collate_fn(items):
        input_ids, mask = collate([i[0] for i in items], pad_id)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": torch.tensor([i[1] for i in items]),
                "task": torch.tensor([i[2] for i in items])}

    class BenchTrainer(Trainer):
        def get_train_dataloader(self):
            return self.accelerator.prepare(DataLoader(examples, batch_sampler=ScheduleSampler(),
                                                       collate_fn=collate_fn))

    heads = {id(p) for p in model.heads.parameters()}
    trainable = trainable_parameters(model)
    optimizer = torch.optim.AdamW([
        {"params": [p for p in trainable if id(p) not in heads], "lr": cfg.learning_rate},
        {"params": [p for p in trainable if id(p) in heads], "lr": cfg.head_learning_rate},
    ], weight_decay=cfg.weight_decay)
    total = steps_per_epoch(splits, cfg.batch_size, cfg.task_sampling) * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    with tempfile.TemporaryDirectory() as out:
        hf_args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
            max_grad_norm=cfg.max_grad_norm, logging_strategy="no", save_strategy="no", eval_strategy="no",
            report_to="none", use_cpu=True, seed=cfg.seed, dataloader_num_workers=0, disable_tqdm=True,
            remove_unused_columns=False)
        trainer = BenchTrainer(model=Wrapper(model), args=hf_args, train_dataset=examples,
                               optimizers=(optimizer, scheduler))
        began, cpu = time.perf_counter(), time.process_time()
        metrics = trainer.train().metrics
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    accuracy = {}
    model.eval()
    with torch.inference_mode():
        for n, t in x.tasks.items():
            ids = encode(tokenizer, t.val_texts, cfg.max_length)
            right = 0
            for start in range(0, len(ids), cfg.batch_size * 2):
                input_ids, mask = collate(ids[start:start + cfg.batch_size * 2], pad_id)
                predicted = model(n, input_ids, mask).argmax(-1).tolist()
                right += sum(p == y for p, y in zip(predicted, t.val_labels[start:start + len(predicted)]))
            accuracy[n] = round(right / len(ids), 4)
    n_examples = len(examples) * cfg.epochs
    return {
        "examples": n_examples, "step_examples_per_second": None,
        "hf_train_samples_per_second": metrics.get("train_samples_per_second"),
        "loop_seconds": round(metrics["train_runtime"], 2),
        "loop_examples_per_second": round(n_examples / metrics["train_runtime"], 2),
        "epoch_seconds": [], "epoch_cpu_seconds": [], "loop_cpu_seconds": round(cpu, 2),
        "wall_seconds": round(wall, 2), "accuracy": accuracy, "cache": None,
        "precision": "no", "steps": trainer.state.global_step, "trainable": sum(p.numel() for p in trainable),
    }


def child(args) -> None:
    import torch

    case = args.case
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = {"hf_full": run_hf, "bf16_probe": run_bf16_probe}.get(case, run_core)
    result = runner(args, case)
    result.update(case=case, title=CASES[case][0], peak_rss_mb=round(peak_rss_mb(), 1),
                  threads=torch.get_num_threads())
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


# ---- the orchestrator ---------------------------------------------------------------------------


def mean(values):
    return sum(values) / len(values) if values else float("nan")


def later_epochs(result, key: str = "epoch_seconds") -> float:
    """Mean seconds per epoch over epochs 2 and later."""
    return mean(result[key][1:])


def derive(results: dict) -> dict:
    out = {}
    if "core_full" in results and "hf_full" in results:
        core, hf = results["core_full"], results["hf_full"]
        out["full_ft_core_vs_hf_loop"] = round(core["loop_examples_per_second"] / hf["loop_examples_per_second"], 3)
        out["full_ft_core_vs_hf_loop_cpu_time"] = round(hf["loop_cpu_seconds"] / core["loop_cpu_seconds"], 3)
        if hf.get("hf_train_samples_per_second"):
            out["full_ft_core_step_vs_hf_reported"] = round(
                core["step_examples_per_second"] / hf["hf_train_samples_per_second"], 3)
    for name in ("frozen", "lower4"):
        a, b = results.get(f"{name}_nocache"), results.get(f"{name}_cache")
        if a and b and len(a["epoch_seconds"]) > 1:
            out[f"{name}_speedup_epochs_2plus"] = round(later_epochs(a) / later_epochs(b), 2)
            out[f"{name}_speedup_epochs_2plus_cpu_time"] = round(
                later_epochs(a, "epoch_cpu_seconds") / later_epochs(b, "epoch_cpu_seconds"), 2)
            out[f"{name}_speedup_epoch_1"] = round(a["epoch_seconds"][0] / b["epoch_seconds"][0], 2)
            out[f"{name}_speedup_whole_loop"] = round(a["loop_seconds"] / b["loop_seconds"], 2)
    if "core_full" in results and "core_full_bf16" in results:
        fp, bf = results["core_full"], results["core_full_bf16"]
        out["bf16_vs_fp32_speed_full_run"] = round(bf["step_examples_per_second"] / fp["step_examples_per_second"], 3)
    if "bf16_probe" in results:
        probe = results["bf16_probe"]["probe"]
        out["bf16_vs_fp32_speed_probe"] = probe["speed_bf16_over_fp32"]
        out["bf16_probe_accuracy_fp32"] = probe["accuracy"]["fp32"]
        out["bf16_probe_accuracy_bf16"] = probe["accuracy"]["bf16"]
        out["bf16_probe_prediction_agreement"] = probe["prediction_agreement"]
        out["bf16_probe_trained_model"] = probe["trained_model"]
    return out


def table(results: dict, derived: dict) -> str:
    head = ("case", "ex/s step", "ex/s loop", "loop CPU s", "epoch s (1, 2, ...)", "s/epoch 2+", "peak MB",
            "acc topic", "acc sentiment", "cache", "change map s (% of loop)")
    rows, probes = [], []
    for case, r in results.items():
        if "probe" in r:
            t, probe = r["probe"]["timing"], r["probe"]
            probes.append(f"{r['title']}: training step {t['fp32']['examples_per_second']} ex/s fp32, "
                          f"{t['bf16']['examples_per_second']} ex/s bf16 ({probe['speed_bf16_over_fp32']}x); "
                          f"validation accuracy ({'trained' if probe['trained_model'] else 'untrained'} model, "
                          f"{probe['validation_examples_per_task']}/task) fp32 {probe['accuracy']['fp32']}, "
                          f"bf16 {probe['accuracy']['bf16']}; same prediction {probe['prediction_agreement']}; "
                          f"max logit difference {probe['max_logit_difference']}")
            continue
        cache = r.get("cache") or {}
        cache_text = (f"{cache['kind']} d={cache['depth']} {cache['storage']} {cache['mb']:.0f} MB, "
                      f"built {cache['build_seconds']:.1f}s" if cache.get("used") else
                      ("off" if cache else "-"))
        rows.append((
            r["title"], f"{r['step_examples_per_second']:.1f}" if r["step_examples_per_second"] else "-",
            f"{r['loop_examples_per_second']:.1f}", f"{r['loop_cpu_seconds']:.1f}",
            ", ".join(f"{s:.1f}" for s in r["epoch_seconds"]) or "-",
            f"{later_epochs(r):.2f}" if len(r["epoch_seconds"]) > 1 else "-", f"{r['peak_rss_mb']:.0f}",
            f"{r['accuracy'].get('topic', float('nan')):.3f}", f"{r['accuracy'].get('sentiment', float('nan')):.3f}",
            cache_text, change_map_text(r)))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines += probes
    lines += [f"{k}: {v}" for k, v in derived.items() if not k.startswith("bf16_probe")]
    return "\n".join(lines)


def change_map_text(result: dict) -> str:
    """What recording where learning happened cost: the starting copy, the per-step gradient norms
    and each record (core cases only; the HF Trainer keeps none)."""
    if "change_map" not in result:
        return "-"
    return f"{result['change_map']['seconds']:.2f} ({100 * result['change_map_share']:.2f}%)"


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_average": psutil.getloadavg()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        info["bf16_hardware"] = sorted({f for f in flags.split() if f in ("avx512_bf16", "amx_bf16", "amx_tile")})
    except (OSError, StopIteration):
        pass
    return info


def run_case(case: str, settings: dict, env: dict, keep: str, model_run: str) -> dict | None:
    """One case in a child process; its result, or None if it failed."""
    handle, out = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    load = psutil.getloadavg()[0]
    command = [sys.executable, __file__, "--case", case, "--out", out, f"--keep-runs={keep}",
               f"--model-run={model_run}", *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]]
    print(f"running {case} ...", file=sys.stderr, flush=True)
    began = time.time()
    try:
        done = subprocess.run(command, env=env, cwd=ROOT)
        if done.returncode != 0:
            print(f"{case} failed (exit {done.returncode})", file=sys.stderr)
            return None
        result = json.loads(Path(out).read_text(encoding="utf-8"))
    finally:
        os.unlink(out)
    result["load_average_before"] = round(load, 2)
    print(f"  {case}: {time.time() - began:.0f}s, loop {result['loop_examples_per_second']} ex/s",
          file=sys.stderr, flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=400, help="training examples per task")
    p.add_argument("--val", type=int, default=200, help="validation examples per task")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0,
                   help="core cases: evaluate (and record the change map) every N steps; 0: only at the end")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    p.add_argument("--threads", type=int, default=0, help="torch threads per case (0: torch's default)")
    p.add_argument("--probe-steps", type=int, default=2, help="bf16_probe: timed training steps per precision")
    p.add_argument("--probe-val", type=int, default=100, help="bf16_probe: validation examples per task")
    p.add_argument("--keep-runs", default="", help=argparse.SUPPRESS)
    p.add_argument("--model-run", default="", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS / "speed.json"), help="where the JSON goes")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args(argv)
    if args.case:
        child(args)
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}")
    lock_dir = tempfile.mkdtemp(prefix="freeze-lab-bench-lock-")  # our own lock: others' runs do not block us
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT), "FREEZE_LAB_LOCK_DIR": lock_dir}
    settings = {k: getattr(args, k) for k in ("train", "val", "batch", "max_length", "epochs", "seed", "eval_every",
                                              "threads",
                                              "probe_steps", "probe_val")}
    keep = tempfile.mkdtemp(prefix="freeze-lab-bench-runs-")
    model_run = ""
    results, started = {}, time.time()
    try:
        for case in cases:
            results_for = run_case(case, settings, env, keep, model_run)
            if results_for is not None:
                results[case] = results_for
                model_run = results_for.get("run_dir") or model_run
    finally:
        shutil.rmtree(keep, ignore_errors=True)
        shutil.rmtree(lock_dir, ignore_errors=True)
    derived = derive(results)
    report = {"settings": settings, "machine": machine(), "seconds": round(time.time() - started, 1),
              "results": results, "derived": derived}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(table(results, derived))
    print(f"\nwritten: {args.out}")
    return 0 if len(results) == len(cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
