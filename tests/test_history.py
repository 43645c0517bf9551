"""A history worth keeping: a run's note and tags (core.runs), the history filter (core.history) and
``python -m core runs`` with --note, --tag, --untag and the filters."""

from __future__ import annotations

import json
import threading

import pytest

from core.__main__ import main
from core.config import parse_config
from core.history import choices, facets, select
from core.runs import MAX_TAGS, RunError, RunStore


@pytest.fixture
def store(tmp_path) -> RunStore:
    """Three runs with no training: a finished scenario2 on minilm, a stopped custom one on another
    backbone, and one still running (this process is alive, so it stays running)."""
    store = RunStore(tmp_path / "runs")
    finished = store.create(parse_config({"name": "frozen", "freeze": {"preset": "scenario2"}}))
    finished.update_summary(status="finished", started_at=3.0)
    custom = store.create(parse_config({"name": "custom", "backbone": "other/model",
                                        "freeze": {"parts": ["embeddings"]}}))
    custom.update_summary(status="stopped", started_at=2.0)
    store.create(parse_config({"name": "live"})).update_summary(started_at=1.0)
    return store


def ids(store: RunStore) -> dict[str, str]:
    return {run.name: run.id for run in store.list()}


def test_note_and_tags_are_saved_in_the_run_folder_and_survive_summary_rewrites(store):
    run = store.get(ids(store)["live"])
    assert run.notes() == {"note": "", "tags": []}
    saved = run.annotate("  lr too high?  ", add=["Baseline", "lesson-1", "baseline"])
    assert saved == {"note": "lr too high?", "tags": ["baseline", "lesson-1"]}  # trimmed, lower-case, once each
    assert json.loads(run.notes_path.read_text()) == saved
    run.write_summary({**run.summary(), "status": "finished"})  # the trainer rewrites its summary whole
    assert store.get(run.id).notes() == saved
    assert run.annotate(add=["x"], remove=["LESSON-1"]) == {"note": "lr too high?", "tags": ["baseline", "x"]}
    assert run.annotate("", remove=["x"]) == {"note": "", "tags": ["baseline"]}  # "" clears, None keeps


@pytest.mark.parametrize("change, message", [
    ({"add": ["two words"]}, "invalid tag 'two words'"),
    ({"add": [""]}, "invalid tag ''"),
    ({"add": ["x" * 33]}, "invalid tag"),
    ({"remove": ["a,b"]}, "invalid tag 'a,b'"),
    ({"note": "n" * 1001}, "at most 1000 characters"),
    ({"add": [f"t{i}" for i in range(MAX_TAGS)]}, f"at most {MAX_TAGS} tags"),
])
def test_a_refused_change_is_one_line_and_keeps_what_was_saved(store, change, message):
    run = store.get(ids(store)["frozen"])
    before = run.annotate("keep me", add=["kept"])
    with pytest.raises(RunError, match=message) as error:
        run.annotate(**change)
    assert "\n" not in str(error.value)
    assert run.notes() == before


def test_two_writers_at_once_both_keep_their_tags(store):
    run = store.get(ids(store)["frozen"])
    errors = []

    def add(tag: str) -> None:
        try:
            for n in range(5):
                run.annotate(add=[f"{tag}{n}"])
        except Exception as error:  # noqa: BLE001 - any error is the failure
            errors.append(repr(error))

    threads = [threading.Thread(target=add, args=(f"w{i}-",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(run.tags) == sorted(f"w{i}-{n}" for i in range(3) for n in range(5))


def test_an_unreadable_notes_file_reads_as_empty(store):
    run = store.get(ids(store)["frozen"])
    run.notes_path.write_text("[1, 2")
    assert run.notes() == {"note": "", "tags": []}
    run.notes_path.write_text('{"note": 3, "tags": ["ok", 4]}')
    assert run.notes() == {"note": "", "tags": ["ok"]}


def test_facets_and_the_filter(store):
    named = ids(store)
    store.get(named["frozen"]).annotate(add=["baseline"])
    store.get(named["custom"]).annotate(add=["baseline", "odd"])
    by_name = {run.name: facets(run) for run in store.list()}
    assert by_name["frozen"] == {"tag": ["baseline"], "preset": ["scenario2"], "status": ["finished"],
                                 "backbone": ["minilm"]}
    assert by_name["custom"]["preset"] == ["custom"] and by_name["custom"]["backbone"] == ["other/model"]
    assert by_name["live"]["preset"] == ["none"] and by_name["live"]["status"] == ["running"]

    def chosen(**wanted) -> list[str]:
        return [run.name for run in select(store.list(), wanted)]

    assert chosen() == ["frozen", "custom", "live"]  # no choice filters nothing; newest first stays
    assert chosen(tag=["baseline"]) == ["frozen", "custom"]
    assert chosen(tag=["baseline"], status=["stopped"]) == ["custom"]  # across facets: all must match
    assert chosen(status=["stopped", "running"]) == ["custom", "live"]  # within one: any
    assert chosen(preset=["scenario2"], backbone=["other/model"]) == []
    assert chosen(backbone=["minilm"], tag=[]) == ["frozen", "live"]
    assert choices(store.list()) == {"tag": ["baseline", "odd"], "preset": ["custom", "none", "scenario2"],
                                     "status": ["finished", "running", "stopped"],
                                     "backbone": ["minilm", "other/model"]}
    store.get(named["live"]).update_summary(preset=None, frozen=["layer.0"])  # as training leaves it
    assert facets(store.get(named["live"]))["preset"] == ["custom"]
    with pytest.raises(ValueError, match="unknown history filter"):
        select(store.list(), {"colour": ["red"]})


# ---- python -m core runs ------------------------------------------------------------------------

def runs_cli(store: RunStore, *args: str) -> int:
    return main(["runs", *args, "--runs-dir", str(store.root)])


def test_cli_sets_shows_and_filters_by_note_and_tags(store, capsys):
    named = ids(store)
    assert runs_cli(store, named["frozen"], "--note", "the frozen one", "--tag", "Baseline", "--tag", "draft") == 0
    out = capsys.readouterr().out
    assert "[baseline, draft]" in out and "note: the frozen one" in out
    assert runs_cli(store, named["frozen"], "--untag", "draft", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tags"] == ["baseline"] and shown["note"] == "the frozen one" and shown["preset"] == "scenario2"
    assert store.get(named["frozen"]).notes() == {"note": "the frozen one", "tags": ["baseline"]}

    assert runs_cli(store, named["live"], "--tag", "wip") == 0  # a running run may be noted: training never
    capsys.readouterr()                                          # writes notes.json
    assert runs_cli(store, "--tagged", "BASELINE", "--json") == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [named["frozen"]]
    assert runs_cli(store, "--status", "running", "--status", "stopped", "--json") == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [named["custom"], named["live"]]
    assert runs_cli(store, "--backbone", "other/model", "--preset", "custom") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(named["custom"])
    assert runs_cli(store, "--tagged", "nothing-has-this") == 0
    assert "no runs matching the filter" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["no-such-run", "--tag", "x"], "error: no run 'no-such-run' in "),
    (["--tag", "x"], "error: --note, --tag and --untag change one run: name it"),
    (["--note", "hello"], "error: --note, --tag and --untag change one run"),
    (["{frozen}", "--tag", "two words"], "error: invalid tag 'two words'"),
    (["{frozen}", "--status", "finished"], "error: --tagged, --preset, --status and --backbone filter the list"),
    (["--tagged", "a b"], "error: invalid tag 'a b'"),
])
def test_cli_bad_input_is_one_line_and_changes_nothing(store, capsys, args, message):
    named = ids(store)
    before = {run.id: run.notes() for run in store.list()}
    assert runs_cli(store, *[a.format(**named) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert {run.id: run.notes() for run in store.list()} == before


# ---- the trainable share, wherever it is shown --------------------------------------------------

HEADS_ONLY = {"trainable": 2_695, "total": 22_600_000}  # MiniLM, backbone frozen: 0.012% trains


def test_a_heads_only_share_is_small_not_zero_everywhere_it_is_shown(store, capsys):
    from core.__main__ import print_table
    from core.export import frozen_section
    from dashboard.runs_view import history_rows
    from dashboard.sweeps_view import table_rows

    run = store.get(ids(store)["frozen"])
    run.update_summary(params=HEADS_ONLY, frozen=["embeddings"], preset="scenario2")
    (row,) = [r for r in history_rows([run])]
    assert row["trainable %"] == "0.012%"
    assert "2,695 of 22,600,000 parameters (0.012%)" in frozen_section(run.summary())
    sweep_row = {"variant": "depth 6", "trainable": 2_695, "trainable_fraction": 2_695 / 22_600_000,
                 "train_seconds_mean": 1.0, "tasks": {"topic": {"accuracy_mean": 0.5, "accuracy_std": 0.0,
                                                                "macro_f1_mean": 0.5, "n_seeds": 1}}}
    assert table_rows({"table": [sweep_row], "recovery": None})[0]["trainable %"] == "0.012%"
    print_table({"table": [sweep_row], "recovery": None})
    assert " 0.012% " in capsys.readouterr().out
