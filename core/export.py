"""A finished run as one zip that loads without Freeze Lab.

The zip holds one folder named after the run: ``model/`` (a Hugging Face folder: config, tokenizer,
safetensors weights), ``heads.safetensors`` with ``heads.json`` (pooling and labels), the run's record
(``config.yaml``, ``summary.json``, ``metrics.jsonl``, ``predictions.json``, ``notes.json`` where they exist)
and a model card, ``README.md``. Only safetensors, JSON, YAML, text and tokenizer files go in, and only regular files of
the run: a symbolic link is refused rather than followed, so nothing outside the run can leak into a
download, and a pickle file is refused as it is when loading (it can run code).

A run that stored only what training changed is rebuilt on its checked base into a temporary folder for
the zip; the run folder stays small (``python -m core materialize`` keeps a full copy when wanted).
A LoRA run's ``model/`` has its adapters merged in; the adapter alone, as peft saved it, is ``adapter/``.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO

from core.adapters import describe as adapter_line
from core.checkpoints import check_safe_weights, describe_source, save_rebuilt
from core.freezing import share_text
from core.runs import Run, RunError

EXPORTABLE = ("finished", "evaluated", "stopped")
RECORD_FILES = ("heads.safetensors", "heads.json", "config.yaml", "summary.json", "metrics.jsonl",
                "predictions.json", "notes.json")
MODEL_SUFFIXES = (".safetensors", ".json", ".txt", ".model")  # weights; config and tokenizer; vocab; sentencepiece
MODEL_FOLDER = "model"
ADAPTER_FOLDER = "adapter"
STORED = (".safetensors",)  # weights barely compress: stored as they are, so a download starts sooner


def check_exportable(run: Run) -> None:
    """Refuse, in one line, a run that is not over or has no weights, before any work is done."""
    status = run.status
    if status not in EXPORTABLE:
        raise RunError(f"run {run.id} is {status}; only a finished, evaluated or stopped run can be exported")
    if not run.has_weights():
        raise RunError(f"run {run.id} has no weights to export (weights: {run.summary().get('weights', 'none')}); "
                       "its record stays listed and compared")
    check_safe_weights(run)


def zip_root(run: Run) -> str:
    """The zip's top folder: the run id, kept to safe characters (a run opened by path may be named anyhow)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run.id).lstrip(".") or "run"


def own_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The regular files under ``folder`` with one of ``suffixes``; a symbolic link anywhere is refused, not
    followed, so an export never reads outside the run."""
    if folder.is_symlink():
        raise RunError(f"{folder} is a symbolic link; an export holds only the run's own files")
    found = []
    for where, folders, files in os.walk(folder):  # followlinks=False: a linked folder is never entered
        for name in [*folders, *files]:
            path = Path(where) / name
            if path.is_symlink():
                raise RunError(f"{path} is a symbolic link; an export holds only the run's own files")
            if name in files and path.suffix.lower() in suffixes:
                found.append(path)
    return sorted(found)


def record_files(run: Run) -> list[Path]:
    """The run's record files that exist, refusing a symbolic link among them."""
    present = []
    for path in (run.path / name for name in RECORD_FILES):
        if path.is_symlink():
            raise RunError(f"{path} is a symbolic link; an export holds only the run's own files")
        if path.is_file():
            present.append(path)
    return present


def model_source(run: Run, scratch: Path) -> tuple[Path, str | None]:
    """The full model folder and, for a ``changed`` run rebuilt into ``scratch``, the base it was rebuilt on."""
    from core.backbones import LOAD_LOCK

    if (run.backbone_dir / "config.json").exists():
        return run.backbone_dir, None
    with LOAD_LOCK:  # the page builds a zip on a thread of its own; loads go one at a time per process
        save_rebuilt(run, scratch)
    base = json.loads((run.changed_dir / "base.json").read_text(encoding="utf-8"))["source"]
    return scratch, describe_source(base)


def write_export(run: Run, target: BinaryIO) -> None:
    """Write the run's zip to an open binary file."""
    check_exportable(run)
    root = zip_root(run)
    with tempfile.TemporaryDirectory(prefix="freeze-lab-export-") as scratch:
        model, rebuilt_on = model_source(run, Path(scratch))
        entries = [(path, f"{root}/{path.name}") for path in record_files(run)]
        entries += [(path, f"{root}/{MODEL_FOLDER}/{path.relative_to(model).as_posix()}")
                    for path in own_files(model, MODEL_SUFFIXES)]
        if run.adapter_dir.is_dir():  # a LoRA run's adapter, as peft saved it (model/ has it merged)
            entries += [(path, f"{root}/{ADAPTER_FOLDER}/{path.relative_to(run.adapter_dir).as_posix()}")
                        for path in own_files(run.adapter_dir, MODEL_SUFFIXES)]
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{root}/README.md", model_card(run, rebuilt_on))
            for path, name in entries:
                archive.write(path, name, zipfile.ZIP_STORED if path.suffix in STORED else zipfile.ZIP_DEFLATED)


def export_bytes(run: Run) -> bytes:
    """The zip in memory, for the page's download button."""
    buffer = io.BytesIO()
    write_export(run, buffer)
    return buffer.getvalue()


def export_to_file(run: Run, out: Path) -> Path:
    """Write the zip to ``out`` whole or not at all (a temporary name beside it, then a rename)."""
    out = Path(out).expanduser()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write_export(run, handle)
        os.replace(tmp, out)
    except OSError as error:  # the target's folder, a full disk, or a run file that vanished meanwhile
        raise RunError(f"cannot export run {run.id} to {out}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ---- the model card --------------------------------------------------------------------


def model_card(run: Run, rebuilt_on: str | None = None) -> str:
    """``README.md``: what was frozen, the data, the metrics, and how to load the files; ``rebuilt_on`` names
    the base a ``changed`` run's model was rebuilt on."""
    summary = run.summary()
    config = run.config()
    heads = json.loads((run.path / "heads.json").read_text(encoding="utf-8"))
    sections = [
        f"# {summary.get('name') or run.id}\n\nA Freeze Lab run (`{run.id}`, {summary.get('status')}), exported "
        f"{time.strftime('%Y-%m-%d %H:%M')}: backbone `{config.backbone}` with {heads['pooling']} pooling and one "
        "linear head per task.",
        frozen_section(summary), data_section(config, summary, heads["labels"]), metrics_section(summary),
        loading_section(heads, rebuilt_on),
    ]
    return "\n\n".join(sections) + "\n"


def frozen_section(summary: dict) -> str:
    params = summary.get("params", {})
    share = f" ({share_text(params['trainable'] / params['total'])})" if params.get("total") else ""
    frozen = ", ".join(f"`{part}`" for part in summary.get("frozen", [])) or "nothing"
    preset = f"Preset `{summary['preset']}`. " if summary.get("preset") else ""
    adapter = summary.get("adapter")
    lora = (f"Trained with low-rank adapters (peft): {adapter_line(adapter)}. `model/` has them merged into its "
            "weights; `adapter/` holds the adapter alone (`PeftModel.from_pretrained(base, \"adapter\")`). "
            if adapter else "")
    return (f"## What was frozen\n\n{preset}{lora}Frozen parts: {frozen}. Trainable: "
            f"{params.get('trainable', 0):,} of "
            f"{params.get('total', 0):,} parameters{share}. {summary.get('steps', 0)} training steps; "
            f"seed {summary.get('seed')}." + (f" Warm start from run `{summary['init_from']}`."
                                               if summary.get("init_from") else ""))


def data_section(config, summary: dict, labels: dict[str, list[str]]) -> str:
    rows = ["| task | training data | validation data | text / label column | training examples | labels |",
            "|---|---|---|---|---|---|"]
    counts = summary.get("train_examples", {})
    for task, task_labels in labels.items():
        spec = (config.tasks or {}).get(task)
        train, val = (spec.train, spec.validation or f"{spec.validation_fraction:.0%} of the training data") \
            if spec else ("built-in demo set", "its validation split")
        columns = f"{spec.text_column} / {spec.label_column}" if spec else f"text / {task}"
        rows.append(f"| {task} | {train} | {val} | {columns} | {counts.get(task, '?')} | {', '.join(task_labels)} |")
    return "## Data\n\n" + "\n".join(rows)


def metrics_section(summary: dict) -> str:
    rows = ["| task | accuracy | macro-F1 | loss |", "|---|---|---|---|"]
    for task, m in summary.get("tasks", {}).items():
        rows.append(f"| {task} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['loss']:.3f} |")
    return ("## Metrics\n\nOn the validation data, at the end of the run (every evaluation is in "
            "`metrics.jsonl`, the final predictions in `predictions.json`).\n\n" + "\n".join(rows))


def loading_section(heads: dict, rebuilt_on: str | None) -> str:
    pooled = ("the mean of the last hidden states over the real (non-padding) tokens" if heads["pooling"] == "mean"
              else "the pooler output where the model has one, else the first token's last hidden state")
    rebuilt = (f" The run stored only the tensors training could change: `model/` was rebuilt on its base, "
               f"{rebuilt_on}, checked tensor by tensor, when it was exported." if rebuilt_on else "")
    return ("## Load it\n\nFrom inside this folder, with `transformers` and `safetensors` (no pickle file, no "
            "remote code):\n\n```python\nfrom transformers import AutoModel, AutoTokenizer; from safetensors.torch "
            "import load_file\nmodel, tokenizer = (AutoModel.from_pretrained(\"model\", trust_remote_code=False), "
            "AutoTokenizer.from_pretrained(\"model\", trust_remote_code=False))\nheads = load_file(\"heads.safetensors\")  # <task>.classifier.weight / .bias; labels: "
            f"heads.json\n```\n\nEach head is a linear layer on {pooled}; its outputs are in the order of that task's "
            f"labels in `heads.json`.{rebuilt} `config.yaml` is the whole experiment: `python -m core train --config "
            "config.yaml` trains it again.")

