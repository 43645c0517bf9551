"""Prediction flips: the validation examples two runs label differently.

Both runs' per-example predictions come from their ``predictions.json`` (written at the end
of training, or by ``reevaluate`` for a run made before it was). Runs of different tasks or
validation data are refused as ``compare`` refuses them (``CompareError``).

The texts are not stored with the predictions: they are read again from the run's own data
(its config.yaml, through ``core.data.load_tasks``), and shown only while that data still
gives the ``validation_fingerprint`` in the run's summary. Otherwise the flips come without
texts and a note says the data changed. Why not store them: the data is already on disk
(or in the hub cache), each member of a sweep would keep its own copy of the same texts,
and a run's record stays small.

This module is read by the page's server, which never imports torch: only ``reevaluate``
does, and the page runs it as ``python -m core reevaluate`` in a child process.
"""

from __future__ import annotations

import json
from collections import Counter

from core.compare import DONE, check_comparable, check_same_examples
from core.data import load_tasks, validation_fingerprint
from core.metrics import confusion_matrix
from core.runs import Run, RunError, RunStore, atomic_write_json

PER_EXAMPLE = ("true", "predicted", "confidence")  # predictions.json's per-example lists, one entry each


class NoPredictions(RunError):
    """A run without usable per-example predictions; ``run_id`` says which, so it can be re-evaluated."""

    def __init__(self, run_id: str, why: str):
        super().__init__(f"run {run_id} {why}; re-evaluate it: python -m core reevaluate {run_id}")
        self.run_id, self.why = run_id, why


def load_predictions(run: Run, tasks: list[str]) -> dict[str, dict]:
    """The run's stored predictions of ``tasks``; NoPredictions says what is missing or torn."""
    if not run.predictions_path.exists():
        raise NoPredictions(run.id, "has no predictions.json (it was made before they were stored)")
    try:
        stored = json.loads(run.predictions_path.read_text(encoding="utf-8"))["tasks"]
        usable = {task: stored[task] for task in tasks if well_formed(stored.get(task))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise NoPredictions(run.id, "has a predictions.json that cannot be read (torn or not JSON)") from None
    missing = [task for task in tasks if task not in usable]
    if missing:
        raise NoPredictions(run.id, f"has no usable {', '.join(missing)} predictions in predictions.json")
    return usable


def well_formed(task_predictions) -> bool:
    """Label names, and one true label, prediction and confidence per example (a hand-cut file may lack some)."""
    if not isinstance(task_predictions, dict) or not isinstance(task_predictions.get("labels"), list):
        return False
    lists = [task_predictions.get(key) for key in PER_EXAMPLE]
    return all(isinstance(x, list) for x in lists) and len({len(x) for x in lists}) == 1


def cells(true: list[int], predicted_a: list[int], predicted_b: list[int]) -> dict[str, int]:
    """The four cells of right and wrong: both right, both wrong, only A right, only B right."""
    counts = Counter((a == t, b == t) for t, a, b in zip(true, predicted_a, predicted_b))
    return {"both_right": counts[True, True], "both_wrong": counts[False, False],
            "only_a": counts[True, False], "only_b": counts[False, True]}


def confusion_difference(a: dict, b: dict) -> list[list[int]]:
    """B's confusion matrix minus A's (rows true labels, columns predictions): where B moved examples to."""
    n = len(a["labels"])
    matrix_a, matrix_b = confusion_matrix(a["true"], a["predicted"], n), confusion_matrix(b["true"], b["predicted"], n)
    return [[y - x for x, y in zip(row_a, row_b)] for row_a, row_b in zip(matrix_a, matrix_b)]


def flip_rows(a: dict, b: dict, texts: list[str] | None) -> list[dict]:
    """Every example the two runs label differently, in validation order, labels as names."""
    names = a["labels"]
    return [{"index": i, "text": texts[i] if texts else None, "true": names[t], "a": names[pa], "b": names[pb],
             "confidence_a": a["confidence"][i], "confidence_b": b["confidence"][i]}
            for i, (t, pa, pb) in enumerate(zip(a["true"], a["predicted"], b["predicted"])) if pa != pb]


def validation_texts(runs: list[Run], tasks: list[str]) -> tuple[dict[str, list[str]], str | None]:
    """Per task, the validation texts read again from the first run whose data still gives its stored
    fingerprint, and why the other tasks have none (None when every task has its texts)."""
    texts: dict[str, list[str]] = {}
    why = None
    for run in runs:
        if len(texts) == len(tasks):
            break
        try:
            data = load_tasks(run.config())
        except (ValueError, OSError) as error:  # ConfigError, DataError: the file moved, the hub is offline
            why = f"the validation data cannot be read again ({error})"
            continue
        stored = run.summary().get("validation_fingerprint") or {}
        for task in tasks:
            if task in texts:
                continue
            if not stored.get(task):
                why = "the runs stored no validation fingerprint, so their texts cannot be matched again"
            elif task in data and stored[task] == validation_fingerprint(data[task]):
                texts[task] = data[task].val_texts
            else:
                why = "the validation data changed since these runs (its fingerprint differs), so no texts"
    return texts, why


def flips(store: RunStore, a: str, b: str, limit: int | None = None) -> dict:
    """Per task: the four cells, B's confusion matrix minus A's, and the examples A and B label differently
    (the first ``limit`` of them; ``n_flips`` counts all), with their texts where the data can be read again."""
    run_a, run_b = store.get(a, by_path=False), store.get(b, by_path=False)
    tasks = check_comparable([run_a, run_b])
    pred_a, pred_b = load_predictions(run_a, tasks), load_predictions(run_b, tasks)
    for task in tasks:
        check_same_examples(pred_a[task], pred_b[task], task)
    texts, why = validation_texts([run_a, run_b], tasks)
    out = {"a": run_a.id, "b": run_b.id, "tasks": {}}
    for task in tasks:
        rows = flip_rows(pred_a[task], pred_b[task], texts.get(task))
        out["tasks"][task] = {**cells(pred_a[task]["true"], pred_a[task]["predicted"], pred_b[task]["predicted"]),
                              "n_examples": len(pred_a[task]["true"]), "n_flips": len(rows),
                              "flips": rows[:limit] if limit is not None else rows,
                              "labels": pred_a[task]["labels"],
                              "confusion_difference": confusion_difference(pred_a[task], pred_b[task]),
                              "note": None if task in texts else why}
    return out


def format_flips(result: dict) -> str:
    """Plain words: per task the four cells, B - A per confusion cell that changed, then one line per flip."""
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    for task, r in result["tasks"].items():
        lines.append(f"{task}: {r['n_flips']} of {r['n_examples']} examples flip; both right {r['both_right']}, "
                     f"both wrong {r['both_wrong']}, only A right {r['only_a']}, only B right {r['only_b']}")
        moved = [f"{true}->{pred} {d:+d}" for true, row in zip(r["labels"], r["confusion_difference"])
                 for pred, d in zip(r["labels"], row) if d]
        lines.append(f"  confusion B - A (true->predicted): {', '.join(moved) or 'no change'}")
        if r["note"]:
            lines.append(f"  {r['note']}")
        for f in r["flips"]:
            text = f" {f['text']!r}" if f["text"] is not None else ""
            lines.append(f"  #{f['index']}{text}: true {f['true']}; A {f['a']} ({f['confidence_a']:.2f}), "
                         f"B {f['b']} ({f['confidence_b']:.2f})")
        if len(r["flips"]) < r["n_flips"]:
            lines.append(f"  ... {r['n_flips'] - len(r['flips'])} more (--limit)")
    return "\n".join(lines)


def reevaluate(run: Run) -> dict[str, dict]:
    """Predict a stored run's validation data again with its saved weights, and write its predictions.json.

    For a run made before predictions were stored, or whose file was torn. Refused when the data no
    longer gives the run's fingerprint: predictions on other examples would pair with nothing.
    Returns the predictions written, per task.
    """
    import torch

    from core.batching import EncodedSplit, encode
    from core.checkpoints import load_run_model
    from core.device import resolve_device
    from core.locks import training_lock
    from core.training import align_labels, full_model_logits, pad_id, predict_split

    summary = run.summary()
    if summary.get("status") not in DONE or not summary.get("tasks"):
        raise RunError(f"cannot re-evaluate run {run.id}: it did not finish (status {summary.get('status')})")
    if not run.has_weights():
        raise RunError(f"cannot re-evaluate run {run.id}: it has no weights (weights {summary.get('weights', 'none')})")
    config = run.config()
    data = load_tasks(config)
    stored = summary.get("validation_fingerprint") or {}
    changed = [t for t in summary["tasks"] if t not in data or validation_fingerprint(data[t]) != stored.get(t)]
    if changed:
        raise RunError(f"cannot re-evaluate run {run.id}: its {', '.join(changed)} validation data changed "
                       "since it ran")
    device = resolve_device(config.training.device)
    with training_lock(device):
        model, tokenizer = load_run_model(run, dropout=0.0)
        model.to(device).eval()
        predictions = {}
        with torch.inference_mode():
            for name in summary["tasks"]:
                task = align_labels(data[name], model.heads[name].labels, run.id)
                split = EncodedSplit(encode(tokenizer, task.val_texts, config.training.max_length), task.val_labels)
                predicted, confidence, _ = predict_split(
                    split, config.training.batch_size * 2, device,
                    lambda rows, name=name, split=split: full_model_logits(model, name, split.ids, rows,
                                                                           pad_id(tokenizer), device))
                predictions[name] = {"labels": task.labels, "true": list(task.val_labels), "predicted": predicted,
                                     "confidence": confidence}
    atomic_write_json(run.predictions_path, {"tasks": predictions})
    return predictions
