"""'Is this difference real?': the tests' error rates on synthetic predictions, and compare over the store."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from core.__main__ import main
from core.compare import CompareError, compare, paired_test, seed_test
from core.runs import RunStore, atomic_write_json

SIMULATIONS = 2000


def false_alarm_ceiling(rate: float = 0.05, n: int = SIMULATIONS) -> float:
    """The nominal rate plus three standard errors of a rate measured over n comparisons."""
    return rate + 3 * (rate * (1 - rate) / n) ** 0.5


def test_same_setting_across_seeds_is_called_real_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    n = SIMULATIONS // 2  # scipy's t-test costs ~5 ms a call
    for seeds in (2, 3):
        calls = [seed_test(list(rng.normal(0.8, 0.02, seeds)), list(rng.normal(0.8, 0.02, seeds)))["verdict"]
                 for _ in range(n)]
        assert set(calls) <= {"real", "within noise"}
        assert calls.count("real") / n <= false_alarm_ceiling(n=n), seeds


def test_a_clear_gap_across_seeds_is_called_real():
    rng = np.random.default_rng(1)
    calls = [seed_test(list(rng.normal(0.80, 0.01, 3)), list(rng.normal(0.88, 0.01, 3)))["verdict"]
             for _ in range(200)]
    assert calls.count("real") >= 195
    result = seed_test([0.80, 0.81, 0.79], [0.90, 0.91, 0.89])
    assert result["verdict"] == "real" and result["p_value"] < 0.001 and result["test"].startswith("Welch")


def test_one_seed_a_side_is_too_few_runs_and_no_spread_is_not_a_crash():
    assert seed_test([0.8], [0.9, 0.91]) == {"test": seed_test([0.8], [0.9])["test"], "n_a": 1, "n_b": 2,
                                             "p_value": None, "verdict": "too few runs"}
    assert seed_test([0.8, 0.8], [0.8, 0.8])["verdict"] == "within noise"
    assert seed_test([0.8, 0.8], [0.9, 0.9])["verdict"] == "real"


def simulated_predictions(rng, n: int, accuracy: float, true: np.ndarray) -> list[int]:
    """A 4-class model right on each example with probability ``accuracy``, independently."""
    right = rng.random(n) < accuracy
    wrong = (true + rng.integers(1, 4, n)) % 4
    return list(np.where(right, true, wrong))


def test_two_equally_good_models_on_the_same_examples_are_called_real_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(2)
    n = 300
    real = 0
    for _ in range(SIMULATIONS):
        true = rng.integers(0, 4, n)
        a, b = simulated_predictions(rng, n, 0.8, true), simulated_predictions(rng, n, 0.8, true)
        real += paired_test(list(true), a, b)["verdict"] == "real"
    assert real / SIMULATIONS <= false_alarm_ceiling()


def test_a_clearly_better_model_on_the_same_examples_is_called_real():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 4, 500)
    result = paired_test(list(true), simulated_predictions(rng, 500, 0.70, true),
                         simulated_predictions(rng, 500, 0.85, true))
    assert result["verdict"] == "real" and result["b_only_correct"] > result["a_only_correct"]
    assert result["test"].startswith("McNemar")
    same = paired_test([0, 1, 2], [0, 1, 1], [0, 1, 1])
    assert same["p_value"] == 1.0 and same["verdict"] == "within noise"


# ---- through the run store and the CLI --------------------------------------------------------


def fake_run(runs, run_id: str, accuracy: dict, predictions: dict | None = None, fingerprint: str = "v1",
             status: str = "finished") -> str:
    """A run folder as the trainer leaves it, without training: summary.json and predictions.json."""
    folder = runs / run_id
    folder.mkdir(parents=True)
    atomic_write_json(folder / "summary.json", {
        "run_id": run_id, "status": status, "started_at": time.time(),
        "tasks": {t: {"accuracy": a, "macro_f1": a} for t, a in accuracy.items()},
        "validation_fingerprint": {t: fingerprint for t in accuracy}})
    if predictions is not None:
        atomic_write_json(folder / "predictions.json", {"tasks": {
            t: {"labels": ["x", "y"], "true": true, "predicted": predicted, "confidence": [0.9] * len(true)}
            for t, (true, predicted) in predictions.items()}})
    return run_id


TRUE = [0, 1] * 50


def test_single_runs_get_the_paired_answer_and_too_few_runs_for_the_seed_question(tmp_path, capsys):
    a = fake_run(tmp_path, "a", {"topic": 0.5}, {"topic": (TRUE, [0] * 100)})  # right on half
    b = fake_run(tmp_path, "b", {"topic": 0.95}, {"topic": (TRUE, TRUE[:95] + [1 - t for t in TRUE[95:]])})
    result = compare(RunStore(tmp_path), a, b)["tasks"]["topic"]
    assert result["a"] == 0.5 and result["b"] == 0.95 and result["difference"] == pytest.approx(0.45)
    assert result["verdict"] == "too few runs" and result["p_value"] is None
    assert result["paired"]["verdict"] == "real" and result["paired"]["p_value"] < 1e-6

    assert main(["compare", a, b, "--runs-dir", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["tasks"]["topic"]
    assert {"a", "b", "difference", "p_value", "verdict", "test"} <= set(printed)
    assert main(["compare", a, b, "--runs-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "topic: A 0.500, B 0.950, difference +0.450" in text and "too few runs" in text and "real" in text


def test_lists_and_sweep_variants_use_the_seeds(tmp_path, capsys):
    for i, (low, high) in enumerate([(0.70, 0.90), (0.71, 0.91), (0.69, 0.89)]):
        fake_run(tmp_path, f"low{i}", {"topic": low})
        fake_run(tmp_path, f"high{i}", {"topic": high})
    members = [{"run_id": f"{v}{i}", "variant": v, "depth": None, "seed": i, "status": "finished"}
               for v in ("low", "high") for i in range(3)]
    (tmp_path / "sweeps" / "sw").mkdir(parents=True)
    atomic_write_json(tmp_path / "sweeps" / "sw" / "sweep.json", {
        "sweep_id": "sw", "name": "sw", "status": "finished", "started_at": 0, "members": members,
        "variants": [{"variant": "low", "depth": None}, {"variant": "high", "depth": None}]})
    by_list = compare(RunStore(tmp_path), "low0,low1,low2", "high0,high1,high2")
    by_sweep = compare(RunStore(tmp_path), "sw:low", "sw:high")
    assert by_list["tasks"] == by_sweep["tasks"]
    topic = by_sweep["tasks"]["topic"]
    assert topic["verdict"] == "real" and topic["n_a"] == topic["n_b"] == 3 and topic["paired"]["p_value"] is None
    assert main(["compare", "sw:middle", "sw:high", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: sweep sw has no variant 'middle'; it has low, high"


@pytest.mark.parametrize("change,expected", [
    ({"accuracy": {"sentiment": 0.6}}, "cannot compare: run a has tasks topic but run b has sentiment"),
    ({"fingerprint": "v2"}, "cannot compare: the runs were validated on different topic data"),
    ({"status": "stopped"}, "cannot compare: run b did not finish (status stopped)"),
])
def test_different_tasks_or_validation_data_are_refused_without_a_p_value(tmp_path, capsys, change, expected):
    fake_run(tmp_path, "a", {"topic": 0.5})
    fake_run(tmp_path, "b", **{"accuracy": {"topic": 0.6}, **change})
    with pytest.raises(CompareError, match=re.escape(expected)):
        compare(RunStore(tmp_path), "a", "b")
    assert main(["compare", "a", "b", "--runs-dir", str(tmp_path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {expected}" and captured.out == ""


def test_a_run_without_predictions_says_so(tmp_path):
    fake_run(tmp_path, "old", {"topic": 0.5})
    fake_run(tmp_path, "new", {"topic": 0.6}, {"topic": (TRUE, TRUE)})
    paired = compare(RunStore(tmp_path), "old", "new")["tasks"]["topic"]["paired"]
    assert paired["p_value"] is None and "run old has no predictions.json" in paired["note"]
