"""Is this difference real? Two questions, answered with scipy.stats.

1. "Is it the setting or the luck of the seed?" needs repeats: with two or more runs
   (seeds) on each side, Welch's t-test on the per-seed accuracies, so the verdict
   rests on the variation between seeds. With fewer, the verdict is "too few runs".
2. "Do these two models differ on this data?": with one run on each side, McNemar's
   exact test on the same validation examples (a two-sided binomial test on the
   examples exactly one of the two gets right), from each run's predictions.json.

A side is a run id, ``SWEEP:VARIANT`` (that variant's finished members) or
comma-separated run ids. Runs of different tasks or different validation data are
not compared. The verdict is "real" when p < ALPHA, else "within noise".
"""

from __future__ import annotations

import json
import statistics

from core.runs import Run, RunError, RunStore

ALPHA = 0.05
SEED_TEST = "Welch's t-test on per-seed accuracies"
PAIRED_TEST = "McNemar's exact test on paired validation predictions"
DONE = ("finished", "evaluated")


class CompareError(RunError):
    """Two sides that cannot be compared; one line, starting 'cannot compare: '."""


def verdict(p_value: float, alpha: float = ALPHA) -> str:
    return "real" if p_value < alpha else "within noise"


def seed_test(a: list[float], b: list[float], alpha: float = ALPHA) -> dict:
    """Welch's t-test on two lists of per-seed accuracies; fewer than 2 a side: 'too few runs'."""
    from scipy import stats

    out = {"test": SEED_TEST, "n_a": len(a), "n_b": len(b), "p_value": None, "verdict": "too few runs"}
    if len(a) < 2 or len(b) < 2:
        return out
    if len(set(a)) == len(set(b)) == 1:  # no spread on either side: t is 0/0 or x/0
        p_value = 1.0 if a[0] == b[0] else 0.0
    else:
        p_value = stats.ttest_ind(b, a, equal_var=False).pvalue
    out.update(p_value=float(p_value), verdict=verdict(p_value, alpha),
               std_a=statistics.stdev(a), std_b=statistics.stdev(b))
    return out


def paired_test(true: list[int], predicted_a: list[int], predicted_b: list[int], alpha: float = ALPHA) -> dict:
    """McNemar's exact test: among examples exactly one model gets right, is the split 50/50?"""
    from scipy import stats

    a_only = sum(pa == t != pb for t, pa, pb in zip(true, predicted_a, predicted_b))
    b_only = sum(pb == t != pa for t, pa, pb in zip(true, predicted_a, predicted_b))
    discordant = a_only + b_only
    p_value = stats.binomtest(b_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"test": PAIRED_TEST, "n_examples": len(true), "a_only_correct": a_only, "b_only_correct": b_only,
            "p_value": float(p_value), "verdict": verdict(p_value, alpha)}


# ---- sides and runs ------------------------------------------------------------------------


def resolve(store: RunStore, side: str) -> list[Run]:
    """A run id, SWEEP:VARIANT, or comma-separated run ids, as runs."""
    from core.sweep import variant_runs

    if ":" in side:
        sweep_id, _, variant = side.partition(":")
        ids = variant_runs(store.root, sweep_id, variant)
        if not ids:
            raise CompareError(f"cannot compare: sweep {sweep_id} has no finished run of {variant!r}")
    else:
        ids = [part.strip() for part in side.split(",") if part.strip()]
    if not ids:
        raise CompareError(f"cannot compare: {side!r} names no run")
    return [store.get(run_id, by_path=False) for run_id in ids]


def read_predictions(run: Run) -> dict | None:
    try:
        return json.loads(run.predictions_path.read_text(encoding="utf-8"))["tasks"]
    except (OSError, ValueError, KeyError):
        return None


def check_comparable(runs: list[Run]) -> list[str]:
    """The tasks all runs share; raises CompareError for different tasks or validation data."""
    summaries = [r.summary() for r in runs]
    for run, summary in zip(runs, summaries):
        if summary.get("status") not in DONE or not summary.get("tasks"):
            raise CompareError(f"cannot compare: run {run.id} did not finish (status {summary.get('status')})")
    tasks = list(summaries[0]["tasks"])
    for run, summary in zip(runs[1:], summaries[1:]):
        if sorted(summary["tasks"]) != sorted(tasks):
            raise CompareError(f"cannot compare: run {runs[0].id} has tasks {', '.join(sorted(tasks))} but run "
                               f"{run.id} has {', '.join(sorted(summary['tasks']))}")
    for task in tasks:
        prints = {s.get("validation_fingerprint", {}).get(task) for s in summaries}
        if len(prints) > 1:
            raise CompareError(f"cannot compare: the runs were validated on different {task} data")
    return tasks


def check_same_examples(predictions_a: dict, predictions_b: dict, task: str) -> None:
    """Two runs' stored predictions of one task pair up only over the same true labels, in the same label order."""
    if predictions_a["true"] != predictions_b["true"] or predictions_a["labels"] != predictions_b["labels"]:
        raise CompareError(f"cannot compare: the runs were validated on different {task} data")


def compare(store: RunStore, a: str, b: str, alpha: float = ALPHA) -> dict:
    """Per task: both accuracies (means over runs), the difference b - a, a p-value and a verdict.

    Top-level per task, the seed question: ``p_value``, ``verdict`` ('real', 'within
    noise', 'too few runs') and ``test``. With one run a side, ``paired`` answers
    whether the two models differ on this data (or says why it cannot).
    """
    runs_a, runs_b = resolve(store, a), resolve(store, b)
    tasks = check_comparable(runs_a + runs_b)
    out = {"a": {"spec": a, "runs": [r.id for r in runs_a]}, "b": {"spec": b, "runs": [r.id for r in runs_b]},
           "alpha": alpha, "tasks": {}}
    for task in tasks:
        acc_a = [r.summary()["tasks"][task]["accuracy"] for r in runs_a]
        acc_b = [r.summary()["tasks"][task]["accuracy"] for r in runs_b]
        seeds = seed_test(acc_a, acc_b, alpha)
        out["tasks"][task] = {"a": statistics.fmean(acc_a), "b": statistics.fmean(acc_b),
                              "difference": statistics.fmean(acc_b) - statistics.fmean(acc_a),
                              **{k: seeds[k] for k in ("p_value", "verdict", "test", "n_a", "n_b")},
                              "paired": paired(runs_a, runs_b, task, alpha)}
    return out


def paired(runs_a: list[Run], runs_b: list[Run], task: str, alpha: float) -> dict:
    if len(runs_a) != 1 or len(runs_b) != 1:
        return {"test": PAIRED_TEST, "p_value": None, "verdict": None,
                "note": "asked only with one run a side; with several, the seed test answers"}
    pa, pb = read_predictions(runs_a[0]), read_predictions(runs_b[0])
    missing = [r.id for r, p in ((runs_a[0], pa), (runs_b[0], pb)) if not p or task not in p]
    if missing:
        return {"test": PAIRED_TEST, "p_value": None, "verdict": None,
                "note": f"run {missing[0]} has no predictions.json (made before it was stored)"}
    check_same_examples(pa[task], pb[task], task)
    return paired_test(pa[task]["true"], pa[task]["predicted"], pb[task]["predicted"], alpha)


def format_comparison(result: dict) -> str:
    """Plain words, one block per task."""
    lines = [f"A: {result['a']['spec']} ({len(result['a']['runs'])} run(s))",
             f"B: {result['b']['spec']} ({len(result['b']['runs'])} run(s))"]
    for task, r in result["tasks"].items():
        lines.append(f"{task}: A {r['a']:.3f}, B {r['b']:.3f}, difference {r['difference']:+.3f}")
        if r["verdict"] == "too few runs":
            lines.append(f"  setting or seed? too few runs: repeat each side with 2+ seeds ({r['test']})")
        else:
            lines.append(f"  setting or seed? p = {r['p_value']:.3g}: {words(r['verdict'], result['alpha'])} ({r['test']}, "
                         f"{r['n_a']} vs {r['n_b']} seeds)")
        p = r["paired"]
        if p.get("p_value") is not None:
            lines.append(f"  do these two models differ on this data? p = {p['p_value']:.3g}: {words(p['verdict'], result['alpha'])} "
                         f"({p['test']}; {p['a_only_correct']} examples only A gets right, "
                         f"{p['b_only_correct']} only B)")
        elif len(result["a"]["runs"]) == len(result["b"]["runs"]) == 1:
            lines.append(f"  do these two models differ on this data? cannot say: {p['note']}")
    return "\n".join(lines)


def words(v: str, alpha: float) -> str:
    return {"real": f"real (chance alone would rarely give this: p < {alpha:g})",
            "within noise": "within noise (chance alone could well give this)"}[v]
