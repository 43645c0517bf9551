"""Command line: ``python -m core train|sweep|compare|flips|inspect|reevaluate|materialize|export|describe|presets|device|runs``.

Every expected problem (bad config, data, backbone, busy device) ends with a
one-line message on stderr and exit code 2; the run directory is the last line
that ``train`` prints.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from core import adapters, parts
from core.backbones import BackboneError
from core.child import RUN_FOLDER, SWEEP_FOLDER
from core.config import ConfigError, load_config, parse_config_text
from core.data import DataError
from core.device import DeviceError
from core.freezing import FreezeError, share_text
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
    train.add_argument("--config", required=True, help="YAML or JSON experiment config ('-': read it from stdin)")
    train.add_argument("--runs-dir", default="runs", help="where runs are stored (default: runs)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--owner", help="who started the run, kept in its summary (the page passes its visitor's id)")
    train.add_argument("--guess", help="a student's answer to the config's lesson question, kept in the run's summary")
    train.add_argument("--stop-file", type=Path, metavar="PATH",
                       help="if this file appears while the model loads, stop before any run exists "
                            "(once the run exists, a 'stop' file in its folder stops it after the current step)")
    train.add_argument("--sweep", metavar="SWEEP_ID", help=argparse.SUPPRESS)  # sweep --devices: a member's sweep
    train.set_defaults(command=cmd_train)
    sweep = sub.add_parser("sweep", help="train one config at several freeze depths or presets, and seeds")
    sweep.add_argument("--config", required=True, help="the base YAML or JSON config ('-': stdin)")
    sweep.add_argument("--depths", help="'all' (the default without --presets) or e.g. 0,2,4,6: "
                                        "embeddings plus the lower k layers frozen")
    sweep.add_argument("--presets", help="comma-separated presets, e.g. none,scenario2,top_quarter "
                                         "(scenario3:<task>, lower_k:<k>, parts:embeddings+layer.0)")
    sweep.add_argument("--seeds", type=positive, default=1, help="seeds per variant: base seed, +1, ... (default 1)")
    sweep.add_argument("--runs-dir", default="runs", help="where runs are stored (default: runs)")
    sweep.add_argument("--owner", help="who started the sweep, kept in its members' summaries")
    sweep.add_argument("--guess",
                       help="a student's answer to the config's lesson question, kept in each member's summary")
    sweep.add_argument("--stop-file", type=Path, metavar="PATH",
                       help="if this file appears, stop after the current member (or before the first one)")
    sweep.add_argument("--devices", help="train members in parallel, one per device at a time: CUDA device numbers "
                                         "(e.g. 0,1,2,3), or cpu,cpu for that many CPU workers")
    sweep.set_defaults(command=cmd_sweep)
    compare = sub.add_parser("compare", help="is the accuracy difference between two runs or variants real?")
    compare.add_argument("a", help="a run id, SWEEP:VARIANT, or comma-separated run ids")
    compare.add_argument("b", help="the same, for the other side")
    compare.add_argument("--json", action="store_true")
    compare.add_argument("--runs-dir", default="runs")
    compare.set_defaults(command=cmd_compare)
    flips = sub.add_parser("flips", help="the validation examples two runs label differently")
    flips.add_argument("a", help="a run id")
    flips.add_argument("b", help="the other run id")
    flips.add_argument("--limit", type=positive, help="list at most N flips per task (all are counted)")
    flips.add_argument("--json", action="store_true")
    flips.add_argument("--runs-dir", default="runs")
    flips.set_defaults(command=cmd_flips)
    reevaluate = sub.add_parser("reevaluate", help="predict a run's validation data again and store predictions.json")
    reevaluate.add_argument("run", help="a run id")
    reevaluate.add_argument("--runs-dir", default="runs")
    reevaluate.set_defaults(command=cmd_reevaluate)
    inspect_run = sub.add_parser("inspect", help="where a finished run learned (change per part) and its metrics")
    inspect_run.add_argument("run", help="a run id or run folder")
    inspect_run.add_argument("--json", action="store_true", help="the summary's change and tasks as JSON")
    inspect_run.add_argument("--runs-dir", default="runs")
    inspect_run.set_defaults(command=cmd_inspect)
    materialize = sub.add_parser("materialize", help="write a run's full backbone/ folder from what it stored")
    materialize.add_argument("run", help="a run id or run folder")
    materialize.add_argument("--runs-dir", default="runs")
    materialize.set_defaults(command=cmd_materialize)
    export = sub.add_parser("export", help="write a finished run as a zip: its model folder, heads, record and "
                                           "a model card")
    export.add_argument("run", help="a run id or run folder")
    export.add_argument("--out", required=True, type=Path, metavar="FILE.zip", help="the zip to write")
    export.add_argument("--runs-dir", default="runs")
    export.set_defaults(command=cmd_export)
    describe = sub.add_parser("describe", help="list a backbone's parts and parameter counts")
    describe.add_argument("--backbone", default="minilm")
    describe.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(command=cmd_describe)
    presets = sub.add_parser("presets", help="list the freezing presets")
    presets.set_defaults(command=cmd_presets)
    device = sub.add_parser("device", help="say which device training would use")
    device.set_defaults(command=cmd_device)
    runs = sub.add_parser("runs", help="list stored runs (filtered), or show one and set its note and tags",
                          epilog="Examples: runs RUN --note 'lr too high?' --tag baseline --untag draft; "
                                 "runs --tagged baseline --status finished. Tags are one word each, stored "
                                 "lower-case; --untag is applied after --tag; --note '' clears the note.")
    runs.add_argument("run", nargs="?", help="a run id or run folder: show it, or change its note and tags")
    runs.add_argument("--note", help="set the run's note (replaces the old one; '' clears it)")
    runs.add_argument("--tag", action="append", default=[], metavar="TAG", help="add a tag (repeatable)")
    runs.add_argument("--untag", action="append", default=[], metavar="TAG", help="remove a tag (repeatable)")
    for flag, metavar, what in (("--tagged", "TAG", "tag"), ("--preset", "PRESET", "preset (custom: by hand)"),
                                ("--status", "STATUS", "status, e.g. finished"),
                                ("--backbone", "BACKBONE", "backbone")):
        runs.add_argument(flag, action="append", default=[], metavar=metavar,
                          help=f"list only runs with this {what}; repeatable: any of them")
    runs.add_argument("--runs-dir", default="runs")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(command=cmd_runs)
    return p


def cmd_train(args) -> int:
    """One run; under ``accelerate launch`` every process runs this, and only the main one speaks."""
    from core.device import resolve_device
    from core.distributed import Processes
    from core.training import prepare, run_experiment

    config = parse_config_text(sys.stdin.read(), "stdin") if args.config == "-" else load_config(args.config)
    guess = checked_guess(config, args.guess)
    main = Processes.current(resolve_device(config.training.device)).is_main
    if main:
        RunStore(args.runs_dir).check_writable()  # before minutes of loading, not after
    stop = threading.Event()
    with stop_on_signals(stop):
        experiment = prepare(config, args.runs_dir)
        if stop.is_set() or (args.stop_file is not None and args.stop_file.exists()):
            print("stopped before training began", file=sys.stderr)
            return 1
        if main:
            for note in experiment.notes:
                print(f"note: {note}", file=sys.stderr)
            params = experiment.params
            share = share_text(params["trainable"] / max(1, params["total"]))
            print(f"backbone {config.backbone}: {params['trainable']:,} of {params['total']:,} parameters "
                  f"trainable ({share}); frozen: {', '.join(experiment.plan.frozen) or 'nothing'}", file=sys.stderr)
            if experiment.adapter is not None:
                print(adapters.describe(experiment.adapter.report), file=sys.stderr)
        bar = None if args.quiet or not main else ProgressBar()
        run = run_experiment(config, args.runs_dir, [bar] if bar else [], stop, experiment,
                             on_run=lambda run: announce(run, args.owner, args.sweep, config.training.seed,
                                                         config.lesson, guess))
        if bar:
            bar.close()
    if not main:  # the run's outcome is the main process's to report (this one raised if it failed here)
        return 0
    summary = run.summary()
    for task, m in summary.get("tasks", {}).items():
        print(f"{task}: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, loss {m['loss']:.3f}")
    print(f"status {summary['status']}{': ' + summary['message'] if summary.get('message') else ''}; "
          f"{summary['wall_seconds']:.1f} s, {summary['examples_per_second']:.1f} examples/s")
    print(run.path)
    return 0 if summary["status"] in ("finished", "evaluated") else 1


def positive(text: str) -> int:
    """argparse type: an integer of 1 or more (``--seeds 0`` is refused with one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def cmd_sweep(args) -> int:
    from core.distributed import launched_world_size
    from core.sweep import parse_depths, run_sweep
    from core.sweep_devices import parse_devices

    if launched_world_size() > 1:
        raise ConfigError("a sweep is not launched over several processes: spread its members over devices with "
                          "--devices, or launch one run with 'accelerate launch -m core train'")

    config = parse_config_text(sys.stdin.read(), "stdin") if args.config == "-" else load_config(args.config)
    guess = checked_guess(config, args.guess)
    depths = parse_depths(args.depths) if args.depths else None
    devices = parse_devices(args.devices) if args.devices else None
    if devices and args.owner:
        raise ConfigError("--owner is the page's, and the page runs a sweep's members one after another; "
                          "leave out --devices or --owner")
    if devices and guess is not None:
        raise ConfigError("--guess is kept by the process that trains a member, and --devices trains them in "
                          "children; leave out --devices or --guess")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()] if args.presets else []
    RunStore(args.runs_dir).check_writable()
    stop = threading.Event()
    folder = {}
    def stop_if_asked(*_) -> None:  # the page's Stop on every OS: a file, looked at between members
        if args.stop_file is not None and args.stop_file.exists():
            stop.set()

    def member_done(member: dict, summary: dict) -> None:  # with --devices: as members end, in any order
        print_member(member, summary)
        stop_if_asked()

    def started(path) -> None:
        announce_sweep(folder, path)
        stop_if_asked()

    with stop_on_signals(stop):
        record = run_sweep(config, depths, presets, args.seeds, args.runs_dir, stop, on_member=member_done,
                           on_start=started, devices=devices,
                           on_run=say_where if devices else lambda run: announce(run, args.owner,
                                                                                 lesson=config.lesson, guess=guess))
    print_table(record)
    print(f"{SWEEP_FOLDER}{folder['path']}")
    return 0 if record["status"] == "finished" else 1


def announce_sweep(folder: dict, path) -> None:
    """The sweep folder exists: say where at once on stderr (the page follows it), and keep it for the last line."""
    folder["path"] = path
    print(f"{SWEEP_FOLDER}{path}", file=sys.stderr, flush=True)


def print_member(member: dict, summary: dict) -> None:
    """One line per member as it ends."""
    accuracy = "  ".join(f"{t} {m['accuracy']:.3f}" for t, m in summary.get("tasks", {}).items())
    print(f"{member['variant']:<16} seed {member['seed']:<4} {member['status']:<10} {accuracy}  "
          f"{summary.get('train_seconds', 0):.1f} s train  {member.get('run_id') or member.get('message', '')}",
          flush=True)


def print_table(record: dict) -> None:
    table, recovery = record["table"], record["recovery"]
    if not table:
        print("no member finished")
        return
    tasks = list(table[0]["tasks"])
    print(f"{'variant':<16} {'trainable':>11} {'share':>7} {'train s':>8}  " +
          "  ".join(f"{t + ' acc (sd)':>22} {'F1':>5}" + (f" {'recov':>5}" if recovery else "") for t in tasks))
    for row in table:
        cells = []
        for t in tasks:
            m = row["tasks"][t]
            cell = f"{m['accuracy_mean']:.3f} ({m['accuracy_std']:.3f}) n={m['n_seeds']}"
            cells.append(f"{cell:>22} {m['macro_f1_mean']:.3f}")
            if recovery:
                r = recovery["tasks"][t].get(row["variant"])
                cells[-1] += f" {r:>5.2f}" if r is not None else f" {'-':>5}"
        print(f"{row['variant']:<16} {row['trainable']:>11,} {share_text(row['trainable_fraction']):>7} "
              f"{row['train_seconds_mean']:>8.1f}  " + "  ".join(cells))
    if recovery:
        print(f"recovery: (acc - {recovery['all_frozen']}) / ({recovery['full']} - {recovery['all_frozen']})")


def cmd_materialize(args) -> int:
    """A sweep member keeps only what training changed; this writes the whole AutoModel folder."""
    import time

    from core.checkpoints import materialize

    began = time.perf_counter()
    folder = materialize(RunStore(args.runs_dir).get(args.run))
    print(f"{folder} ({time.perf_counter() - began:.1f} s)")
    return 0


def cmd_export(args) -> int:
    from core.export import export_to_file

    out = export_to_file(RunStore(args.runs_dir).get(args.run), args.out)
    print(f"{out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


def cmd_compare(args) -> int:
    from core.compare import compare, format_comparison

    result = compare(RunStore(args.runs_dir), args.a, args.b)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return 0


def cmd_inspect(args) -> int:
    """The final change per part (frozen parts marked: their 0 is exact), then the metrics."""
    from core.change_history import NO_CHANGE_MAP, final_rows

    store = RunStore(args.runs_dir)
    run = store.get(args.run)
    store.mark_if_interrupted(run)
    summary = run.summary()
    if summary.get("status") == "running":
        raise RunError(f"run {run.id} is still running (step {summary.get('steps', 0)}); inspect it when it ends")
    if args.json:
        print(json.dumps({"run_id": run.id, "status": summary.get("status"), "frozen": summary.get("frozen", []),
                          "change": summary.get("change", {}), "tasks": summary.get("tasks", {})}, indent=2))
        return 0
    print(f"{run.id} ({summary.get('status')}, {summary.get('steps', 0)} steps)")
    rows = final_rows(summary)
    if rows:
        print(f"  {'part':<18} {'moved (rel. L2)':>16} {'mean grad norm':>15}")
        for row in rows:
            mark = "  frozen: exactly 0" if row["frozen"] else ""
            print(f"  {row['part']:<18} {row['relative_change']:>16.3e} {row['grad_norm']:>15.3e}{mark}")
    else:
        print(f"  {NO_CHANGE_MAP}")
    for task, metrics in summary.get("tasks", {}).items():
        print(f"  {task}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
              f"loss {metrics['loss']:.3f}")
    return 0


def cmd_flips(args) -> int:
    from core.flips import flips, format_flips

    result = flips(RunStore(args.runs_dir), args.a, args.b, args.limit)
    print(json.dumps(result, indent=2) if args.json else format_flips(result))
    return 0


def cmd_reevaluate(args) -> int:
    """A run from before predictions were stored gets its predictions.json (what ``flips`` and ``compare`` pair up)."""
    from core.flips import reevaluate
    from core.metrics import accuracy, confusion_matrix

    run = RunStore(args.runs_dir).get(args.run, by_path=False)
    recorded = run.summary()["tasks"]
    for task, p in reevaluate(run).items():
        now = accuracy(confusion_matrix(p["true"], p["predicted"], len(p["labels"])))
        print(f"{task}: accuracy {now:.3f} (the run recorded {recorded[task]['accuracy']:.3f})")
    print(run.predictions_path)
    return 0


def checked_guess(config, guess: str | None) -> str | None:
    """--guess, checked against the config's lesson before minutes of loading (ConfigError, one line)."""
    if guess is None:
        return None
    if config.lesson is None:
        raise ConfigError("--guess needs a config with a lesson section (its question)")
    return config.lesson.checked_guess(guess)


def announce(run, owner: str | None = None, sweep: str | None = None, seed: int | None = None,
             lesson=None, guess: str | None = None) -> None:
    """The run exists: record who started it (and the sweep it belongs to, with its seed), the student's guess
    at the lesson's question, and that SIGTERM stops it cleanly (so a restarted page may send it on POSIX),
    and say where."""
    run.update_summary(stop_by_signal=True, **({"owner": owner} if owner else {}),
                       **({"sweep": sweep, "seed": seed} if sweep else {}))
    if guess is not None:
        run.record_guess(lesson, guess)
    print(f"{RUN_FOLDER}{run.path}", file=sys.stderr, flush=True)


def say_where(run) -> None:
    """A member trained by a child (sweep --devices): the child wrote its summary; only say where it is."""
    print(f"{RUN_FOLDER}{run.path}", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signals(stop: threading.Event):
    """Ctrl-C or SIGTERM asks the run to stop after its current step (status "stopped", weights kept);
    a second one aborts at once. On POSIX the page's Stop sends SIGTERM along with its stop file."""
    def ask_to_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("stopping after the current step (again to abort)", file=sys.stderr, flush=True)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


DEMO_HEADS = {"topic": 4, "sentiment": 3}


def cmd_describe(args) -> int:
    from core.anatomy import describe, head_parameters, readout

    info = describe(args.backbone, args.pooling)
    counts = {**info["parts"], **{parts.head(task): head_parameters(info["hidden_size"], n)
                                  for task, n in DEMO_HEADS.items()}}
    figures = readout(counts, set())
    if args.json:
        print(json.dumps({"backbone": args.backbone, **info, "total": figures["total"],
                          "trainable": figures["trainable"], "by_part": figures["by_part"]}, indent=2))
        return 0
    print(f"{args.backbone} ({info['model_type']}), demo heads topic (4) and sentiment (3)")
    for part, n in counts.items():
        print(f"  {part:<18} {n:>12,}")
    print(f"  {'total':<18} {figures['total']:>12,}")
    return 0


def cmd_device(args) -> int:
    from core.device import available_device, describe_device

    print(describe_device(available_device()))
    return 0


def cmd_presets(args) -> int:
    from core.presets import PRESETS

    for preset in PRESETS.values():
        needs = f" (needs {preset.needs})" if preset.needs else ""
        print(f"{preset.name:<12} {preset.title}{needs}\n{'':<12} freezes: {preset.what}\n{'':<12} when: {preset.when}")
    return 0


def cmd_runs(args) -> int:
    """List the runs a filter keeps, or show one run after changing its note and tags."""
    from core.history import facets, select
    from core.runs import clean_tag

    store = RunStore(args.runs_dir)
    wanted = {"tag": [clean_tag(t) for t in args.tagged], "preset": args.preset, "status": args.status,
              "backbone": args.backbone}
    if args.run is None:
        if args.note is not None or args.tag or args.untag:
            raise RunError("--note, --tag and --untag change one run: name it, as in runs RUN --tag baseline")
        runs = select(store.list(), wanted)
    else:
        if any(wanted.values()):
            raise RunError("--tagged, --preset, --status and --backbone filter the list: give them without a RUN")
        run = store.get(args.run)
        store.mark_if_interrupted(run)
        if args.note is not None or args.tag or args.untag:
            run.annotate(args.note, args.tag, args.untag)
        runs = [run]
    rows = [run_row(run, facets(run)) for run in runs]
    if args.json:
        print(json.dumps(rows if args.run is None else rows[0], indent=2))
        return 0
    if not rows:
        filtered = " matching the filter" if any(wanted.values()) else ""
        print(f"no runs{filtered} in {args.runs_dir}")
    for r in rows:
        acc = ", ".join(f"{t} {a:.3f}" for t, a in r["accuracy"].items() if a is not None) or "-"
        tags = f"  [{', '.join(r['tags'])}]" if r["tags"] else ""
        print(f"{r['run_id']:<40} {r['status']:<12} {acc}{tags}")
        if args.run is not None and r["note"]:
            print(f"  note: {r['note']}")
    return 0


def run_row(run, found: dict[str, list[str]]) -> dict:
    """One run as ``runs`` shows it (and its --json gives it)."""
    summary = run.summary()
    return {"run_id": run.id, "name": summary.get("name"), "status": summary.get("status"),
            "preset": found["preset"][0], "backbone": found["backbone"][0], "tags": found["tag"], "note": run.note,
            "accuracy": {t: m.get("accuracy") for t, m in summary.get("tasks", {}).items()}}


if __name__ == "__main__":
    sys.exit(main())
