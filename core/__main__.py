"""Command line: ``python -m core train|describe|presets|runs``.

Every expected problem (bad config, data, backbone, busy device) ends with a
one-line message on stderr and exit code 2; the run directory is the last line
that ``train`` prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from core.backbones import BackboneError
from core.config import ConfigError, load_config
from core.data import DataError
from core.device import DeviceError
from core.freezing import FreezeError
from core.locks import BusyError
from core.runs import RunError, RunStore

EXPECTED = (ConfigError, DataError, BackboneError, FreezeError, DeviceError, BusyError, RunError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.command(args)
    except EXPECTED as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="Freeze Lab: train with frozen parts.")
    sub = p.add_subparsers(required=True, metavar="command")
    train = sub.add_parser("train", help="train one experiment from a config file")
    train.add_argument("--config", required=True, help="YAML or JSON experiment config")
    train.add_argument("--runs-dir", default="runs", help="where runs are stored (default: runs)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(command=cmd_train)
    describe = sub.add_parser("describe", help="list a backbone's parts and parameter counts")
    describe.add_argument("--backbone", default="minilm")
    describe.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(command=cmd_describe)
    presets = sub.add_parser("presets", help="list the freezing presets")
    presets.set_defaults(command=cmd_presets)
    runs = sub.add_parser("runs", help="list stored runs")
    runs.add_argument("--runs-dir", default="runs")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(command=cmd_runs)
    return p


def cmd_train(args) -> int:
    from core.training import prepare, run_experiment

    config = load_config(args.config)
    RunStore(args.runs_dir).check_writable()  # before minutes of loading, not after
    experiment = prepare(config, args.runs_dir)
    print(f"backbone {config.backbone}: {experiment.params['trainable']:,} of {experiment.params['total']:,} "
          f"parameters trainable; frozen: {', '.join(experiment.plan.frozen) or 'nothing'}", file=sys.stderr)
    bar = None if args.quiet else ProgressBar()
    run = run_experiment(config, args.runs_dir, [bar] if bar else [], threading.Event(), experiment)
    if bar:
        bar.close()
    summary = run.summary()
    for task, m in summary.get("tasks", {}).items():
        print(f"{task}: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, loss {m['loss']:.3f}")
    print(f"status {summary['status']}{': ' + summary['message'] if summary.get('message') else ''}; "
          f"{summary['wall_seconds']:.1f} s, {summary['examples_per_second']:.1f} examples/s")
    print(run.path)
    return 0 if summary["status"] in ("finished", "evaluated") else 1


class ProgressBar:
    """A tqdm bar driven by progress events."""

    def __init__(self):
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if event.kind == "progress":
            if self.bar is None:
                self.bar = tqdm(total=event.total_steps, unit="step", file=sys.stderr)
            self.bar.n = event.step
            self.bar.set_postfix(ex_s=f"{event.examples_per_second:.0f}")
        elif event.kind == "eval" and self.bar is not None:
            self.bar.write("eval @ step {}: {}".format(event.step, ", ".join(
                f"{t} acc {m['accuracy']:.3f}" for t, m in event.tasks.items())))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_describe(args) -> int:
    from core.backbones import load_backbone
    from core.freezing import count_parameters
    from core.model import MultiTaskModel

    backbone, _ = load_backbone(args.backbone, args.pooling)
    model = MultiTaskModel(backbone, {"topic": ["a", "b", "c", "d"], "sentiment": ["neg", "neu", "pos"]},
                           args.pooling, 0.1)
    counts = count_parameters(model)
    if args.json:
        print(json.dumps({"backbone": args.backbone, "model_type": backbone.config.model_type, **counts}, indent=2))
        return 0
    print(f"{args.backbone} ({backbone.config.model_type}), demo heads topic (4) and sentiment (3)")
    for part, c in counts["by_part"].items():
        print(f"  {part:<18} {c['total']:>12,}")
    print(f"  {'total':<18} {counts['total']:>12,}")
    return 0


def cmd_presets(args) -> int:
    from core.presets import PRESETS

    for preset in PRESETS.values():
        needs = f" (needs {preset.needs})" if preset.needs else ""
        print(f"{preset.name:<12} {preset.title}{needs}\n{'':<12} freezes: {preset.what}\n{'':<12} when: {preset.when}")
    return 0


def cmd_runs(args) -> int:
    runs = RunStore(args.runs_dir).list()
    rows = []
    for run in runs:
        s = run.summary()
        acc = {t: m.get("accuracy") for t, m in s.get("tasks", {}).items()}
        rows.append({"run_id": run.id, "name": s.get("name"), "status": s.get("status"), "accuracy": acc})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {args.runs_dir}")
    for r in rows:
        acc = ", ".join(f"{t} {a:.3f}" for t, a in r["accuracy"].items() if a is not None) or "-"
        print(f"{r['run_id']:<40} {r['status']:<12} {acc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
