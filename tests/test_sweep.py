"""Sweeps: members are ordinary runs, sweep.json matches them, stop keeps what finished,
the shared prefix changes nothing but the time, and bad input fails before the first member."""

from __future__ import annotations

import json
import statistics
import threading
from pathlib import Path

import pytest
import torch
import yaml

from core.__main__ import main
from core.compare import compare
from core.cache import FrozenPrefixCache, SharedPrefix, prefix_fingerprint
from core.events import StepEvent
from core.freezing import freeze
from core.runs import RunStore
from core.sweep import load_sweep, preset_variant, run_sweep, sweep_results
from core.training import prepare, run_experiment
from test_cache import TEXTS, encode, tiny_model


def sweep_files(runs: Path) -> list[Path]:
    return sorted((runs / "sweeps").glob("*/sweep.json"))


def test_three_depths_two_seeds_write_six_runs_and_a_matching_table(tiny_bert, small_config, tmp_path):
    runs = tmp_path / "runs"
    record = run_sweep(small_config(tiny_bert, name="depths"), [0, 2, 3], seeds=2, runs_dir=runs)
    assert record["status"] == "finished"
    store = RunStore(runs)
    assert len(store.list()) == 6  # the sweep folder is not mistaken for a run
    on_disk = json.loads(sweep_files(runs)[0].read_text(encoding="utf-8"))
    assert on_disk["members"] == record["members"]
    assert [(m["variant"], m["depth"], m["seed"], m["status"]) for m in record["members"]] == [
        (f"depth {d}", d, s, "finished") for s in (0, 1) for d in (0, 2, 3)]
    summaries = {m["run_id"]: store.get(m["run_id"]).summary() for m in record["members"]}
    for member in record["members"]:
        summary = summaries[member["run_id"]]
        assert summary["sweep"] == record["sweep_id"] and summary["seed"] == member["seed"]
        config = store.get(member["run_id"]).config()
        assert config.freeze.preset == "lower_k" and config.freeze.k == member["depth"]
        assert config.training.seed == member["seed"] and config.training.data_seed == 0
        assert (store.get(member["run_id"]).path / "predictions.json").is_file()
    fingerprints = {json.dumps(s["validation_fingerprint"], sort_keys=True) for s in summaries.values()}
    assert len(fingerprints) == 1  # every member saw the same validation data

    assert [row["variant"] for row in record["table"]] == ["depth 0", "depth 2", "depth 3"]
    for row in record["table"]:
        members = [summaries[m["run_id"]] for m in record["members"] if m["variant"] == row["variant"]]
        assert row["trainable"] == members[0]["params"]["trainable"]
        assert row["trainable_fraction"] == pytest.approx(row["trainable"] / members[0]["params"]["total"])
        assert row["train_seconds_mean"] == pytest.approx(statistics.fmean(s["train_seconds"] for s in members))
        for task in ("topic", "sentiment"):
            accuracies = [s["tasks"][task]["accuracy"] for s in members]
            cell = row["tasks"][task]
            assert cell["n_seeds"] == 2
            assert cell["accuracy_mean"] == pytest.approx(statistics.fmean(accuracies))
            assert cell["accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
            assert cell["macro_f1_mean"] == pytest.approx(statistics.fmean(s["tasks"][task]["macro_f1"]
                                                                           for s in members))
    assert record["table"][0]["trainable"] > record["table"][1]["trainable"] > record["table"][2]["trainable"]
    assert record["recovery"]["full"] == "depth 0" and record["recovery"]["all_frozen"] == "depth 3"
    assert set(record["recovery"]["tasks"]) == {"topic", "sentiment"}
    depth_2 = [summaries[m["run_id"]]["cache"] for m in record["members"] if m["depth"] == 2]
    assert all(c["used"] and c["shared"] and c["prefix_examples"] == 0 for c in depth_2)  # nothing rebuilt
    assert record["shared_prefix"]["depths"] == [2, 3]
    assert not any(runs.glob("sweeps/*/prefix_cache"))
    assert sweep_results(runs, record["sweep_id"])["table"] == record["table"]

    seeds = compare(store, f"{record['sweep_id']}:depth 0", f"{record['sweep_id']}:depth 3")["tasks"]["topic"]
    assert seeds["n_a"] == seeds["n_b"] == 2 and 0 <= seeds["p_value"] <= 1 and seeds["test"].startswith("Welch")
    one, other = record["members"][0]["run_id"], record["members"][2]["run_id"]
    paired = compare(store, one, other)["tasks"]["topic"]["paired"]
    assert paired["n_examples"] == 24 and 0 <= paired["p_value"] <= 1


def test_a_stopped_sweep_keeps_its_finished_members(tiny_bert, small_config, tmp_path):
    stop = threading.Event()
    steps = {"n": 0, "first": None}

    def stop_in_second_member(event) -> None:
        if isinstance(event, StepEvent):
            steps["n"] += 1
            if event.step == 1 and steps["first"] is not None:
                stop.set()
            steps["first"] = steps["first"] or steps["n"]

    record = run_sweep(small_config(tiny_bert), [3, 2, 1], seeds=1, runs_dir=tmp_path, stop=stop,
                       subscribers=[stop_in_second_member])
    assert [m["status"] for m in record["members"]] == ["finished", "stopped", "not started"]
    assert record["status"] == "stopped" and record["members"][2]["run_id"] is None
    assert [row["variant"] for row in record["table"]] == ["depth 3"]
    assert RunStore(tmp_path).get(record["members"][1]["run_id"]).status == "stopped"
    assert load_sweep(tmp_path, record["sweep_id"])["members"] == record["members"]


def test_a_stop_during_the_shared_pass_starts_no_member(tiny_bert, small_config, tmp_path):
    stop = threading.Event()
    stop.set()
    record = run_sweep(small_config(tiny_bert), [1, 2], runs_dir=tmp_path, stop=stop)
    assert record["status"] == "stopped" and [m["status"] for m in record["members"]] == ["not started"] * 2
    assert RunStore(tmp_path).list() == [] and not any(tmp_path.glob("sweeps/*/prefix_cache"))


def test_shared_states_equal_the_per_run_capture(tiny_backbone_factory):
    for kind in ("bert", "distilbert"):
        model, tokenizer = tiny_model(tiny_backbone_factory(kind))
        ids = encode(tokenizer)
        settings = {"pad_id": tokenizer.pad_token_id}
        caches, needs = {}, {}
        for depth in (1, 2, 3):
            freeze(model, "embeddings", *[f"layer.{i}" for i in range(depth)])
            caches[depth] = FrozenPrefixCache(model, settings=settings, verify=False)
            needs[(depth, caches[depth].kind)] = prefix_fingerprint(model, depth)
        shared = SharedPrefix(model, {"val/a": ids}, settings, needs, batch_size=3)
        shared.build()
        rows = list(range(len(TEXTS)))
        for depth, cache in caches.items():
            own = cache.store("val/a", ids)
            cache.build(own, rows)
            borrowed = shared.lookup(cache.key(ids))
            assert borrowed is not None, (kind, depth)
            torch.testing.assert_close(borrowed.get(rows, "cpu")[0], own.get(rows, "cpu")[0], atol=1e-5, rtol=1e-4)


def test_members_from_the_shared_prefix_train_like_members_alone(dropless_bert, small_config, tmp_path):
    base = small_config(dropless_bert, name="equal", head_dropout=0.0, training={"epochs": 2})
    record = run_sweep(base, [2], seeds=1, runs_dir=tmp_path / "sweep")
    store = RunStore(tmp_path / "sweep")
    member = store.get(record["members"][0]["run_id"])
    assert member.summary()["cache"]["shared"] is True
    config = member.config()
    alone = run_experiment(config, tmp_path / "alone", experiment=prepare(config, tmp_path / "alone"))
    assert alone.summary()["cache"]["used"] and not alone.summary()["cache"]["shared"]

    def losses(run):
        return [e.loss for e in run.events() if isinstance(e, StepEvent)]

    assert losses(member) == pytest.approx(losses(alone), abs=1e-4)
    shared_preds = json.loads((member.path / "predictions.json").read_text(encoding="utf-8"))["tasks"]
    alone_preds = json.loads((alone.path / "predictions.json").read_text(encoding="utf-8"))["tasks"]
    for task in ("topic", "sentiment"):
        assert shared_preds[task]["predicted"] == alone_preds[task]["predicted"]
        assert shared_preds[task]["confidence"] == pytest.approx(alone_preds[task]["confidence"], abs=1e-3)
        assert member.summary()["tasks"][task]["loss"] == pytest.approx(alone.summary()["tasks"][task]["loss"],
                                                                        abs=1e-4)


def test_variants_from_presets_and_parts():
    assert preset_variant("scenario3:topic").freeze == {"preset": "scenario3", "head": "topic"}
    assert preset_variant("lower_k:2").depth == 2
    assert preset_variant("parts:embeddings+layer.0").freeze == {"parts": ["embeddings", "layer.0"]}
    assert preset_variant(["layer.1"]).name == "parts layer.1"


# ---- the command line ------------------------------------------------------------------------


def write_config(path: Path, config) -> str:
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    return str(path)


def test_cli_sweep_prints_a_table_and_the_folder_last(tiny_bert, small_config, tmp_path, capsys):
    config = write_config(tmp_path / "base.yaml", small_config(tiny_bert, name="cli"))
    code = main(["sweep", "--config", config, "--depths", "3", "--presets", "scenario2,scenario1",
                 "--runs-dir", str(tmp_path / "runs")])
    captured = capsys.readouterr()
    out, err = captured.out.strip().splitlines(), captured.err.splitlines()
    assert code == 0, out
    folder = Path(out[-1].removeprefix("sweep folder: "))
    assert out[-1].startswith("sweep folder: ") and (folder / "sweep.json").is_file()
    assert f"sweep folder: {folder}" in err  # at once, for a caller following it live
    assert len([line for line in err if line.startswith("run folder: ")]) == 3
    record = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    assert [m["status"] for m in record["members"]] == ["finished", "finished", "evaluated"]
    assert record["recovery"] == {}  # neither 'none' nor depth 0: no full end to measure against
    assert any(line.startswith("scenario1") and "evaluated" in line for line in out)


@pytest.mark.parametrize("args,expected", [
    (["--depths", "0,9"], "error: depth 9 is outside 0..3 (the backbone has 3 layers)"),
    (["--presets", "scenario3:nope"], "error: scenario3 needs one of the heads sentiment, topic, not 'nope'"),
    (["--presets", "scenario3"], "error: variant 'scenario3': invalid config: freeze: preset scenario3 needs head (the task whose head is frozen)"),
    (["--depths", "two"], "error: --depths: expected 'all' or comma-separated integers, not 'two'"),
])
def test_cli_sweep_bad_variants_fail_before_the_first_member(tiny_bert, small_config, tmp_path, capsys, args,
                                                            expected):
    config = write_config(tmp_path / "base.yaml", small_config(tiny_bert))
    assert main(["sweep", "--config", config, *args, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [expected]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_sweep_bad_backbone_data_or_seeds_exit_2(small_config, tmp_path, capsys):
    runs = str(tmp_path / "runs")
    missing = write_config(tmp_path / "a.yaml", small_config(str(tmp_path / "no-model")))
    assert main(["sweep", "--config", missing, "--runs-dir", runs]) == 2
    assert capsys.readouterr().err.startswith("error: backbone folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--config", missing, "--seeds", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("argument --seeds: must be 1 or more, not 0")
    bad_data = small_config("minilm", tasks={"topic": {"train": str(tmp_path / "none.csv")}})
    assert main(["sweep", "--config", write_config(tmp_path / "b.yaml", bad_data), "--runs-dir", runs]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not sweep_files(Path(runs))


def test_a_sweep_waits_for_no_one_and_lets_no_one_in(tiny_bert, small_config, tmp_path):
    from core.locks import BusyError, training_lock

    with training_lock("cpu"):  # another run trains: the sweep is refused before it writes anything
        with pytest.raises(BusyError):
            run_sweep(small_config(tiny_bert, training={"device": "cpu"}), [3], runs_dir=tmp_path)
    assert not (tmp_path / "sweeps").exists()
    seen = []

    def try_to_train(member) -> None:
        with pytest.raises(BusyError):
            with training_lock("cpu"):
                pass
        seen.append(member["status"])

    def between_members(member, summary) -> None:  # the page's thread tries to train between two members
        thread = threading.Thread(target=try_to_train, args=(member,))
        thread.start()
        thread.join()

    record = run_sweep(small_config(tiny_bert, training={"device": "cpu"}), [3, 2], runs_dir=tmp_path,
                       on_member=between_members)
    assert record["status"] == "finished" and seen == ["finished", "finished"]


def test_reference_lines_majority_and_untrained(tiny_bert, small_config, tmp_path):
    from core.data import load_tasks
    from core.sweep import reference_lines

    config = small_config(tiny_bert, training={"seed": 3})
    assert reference_lines(load_tasks(config)) == {"topic": 0.25, "sentiment": pytest.approx(8 / 24)}
    record = run_sweep(config, [1], runs_dir=tmp_path / "sweep")
    untrained = record["reference"]["untrained_accuracy"]
    # read off the shared pass, it is what a scenario1 run with the base seed measures on its own
    alone = run_experiment(small_config(tiny_bert, training={"seed": 3}, freeze={"preset": "scenario1"}),
                           tmp_path / "alone").summary()
    assert alone["status"] == "evaluated"
    assert untrained == {task: alone["tasks"][task]["accuracy"] for task in ("topic", "sentiment")}
    assert record["reference"]["majority_accuracy"] == {"topic": 0.25, "sentiment": pytest.approx(8 / 24)}


def test_the_untrained_reference_predicts_what_a_scenario1_run_predicts(tiny_bert, small_config, tmp_path):
    """The probe's heads and the shared pass's pooled vectors stand in for a scenario1 run of the base seed."""
    from core.sweep import untrained_predictions
    from core.training import cache_settings, encode_splits

    def shared_predictions(seed: int) -> dict:
        probe = prepare(small_config(tiny_bert, training={"seed": seed}), tmp_path)
        _, val = encode_splits(probe)
        shared = SharedPrefix(probe.model, {f"val/{n}": s.ids for n, s in val.items()}, cache_settings(probe), {},
                              pooled_for=tuple(f"val/{n}" for n in val))
        shared.build()
        return untrained_predictions(probe.model.heads, shared, probe.tasks)

    run = run_experiment(small_config(tiny_bert, training={"seed": 3}, freeze={"preset": "scenario1"}), tmp_path)
    stored = json.loads(run.predictions_path.read_text(encoding="utf-8"))["tasks"]
    assert shared_predictions(3) == {task: stored[task]["predicted"] for task in ("topic", "sentiment")}
    assert shared_predictions(4) != shared_predictions(3)  # other heads predict otherwise: the match is no accident
