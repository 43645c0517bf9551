"""The config: a YAML round trip keeps every value, and the checks name the key that is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config import (PRESET_NAMES, ConfigError, ExperimentConfig, dump_config, load_config, parse_config,
                         parse_config_text)

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # any text but lone surrogates
name = st.text("abcXYZ019_-", min_size=1, max_size=12).filter(lambda s: s.replace("_", "").replace("-", "").isalnum())


def unit(low: float, high: float, **bounds) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, **bounds)


@st.composite
def valid_configs(draw) -> dict:
    """A random config that validates: every section, keys present or left to their defaults."""
    optional = lambda strategy: st.none() | strategy  # noqa: E731
    task_names = draw(st.lists(name, min_size=1, max_size=3, unique=True))
    tasks = {t: draw(st.fixed_dictionaries({"train": text.filter(bool)}, optional={
        "validation": optional(text), "hub_subset": optional(text), "train_split": text,
        "validation_split": optional(text), "text_column": text, "label_column": text,
        "max_train_examples": optional(st.integers(1, 10**9)), "max_validation_examples": optional(st.integers(1, 10**9)),
        "validation_fraction": unit(0, 1, exclude_min=True, exclude_max=True),
        "loss_weight": unit(0, 100, exclude_min=True)})) for t in task_names}
    preset = draw(st.none() | st.sampled_from(PRESET_NAMES))
    freeze = {"preset": preset, "parts": draw(st.lists(text, max_size=4))}
    if preset == "lower_k" or draw(st.booleans()):
        freeze["k"] = draw(st.integers(0, 48))
    if preset == "scenario3" or draw(st.booleans()):
        freeze["head"] = draw(text.filter(bool))
    training = draw(st.fixed_dictionaries({}, optional={
        "epochs": st.integers(1, 100), "batch_size": st.integers(1, 1024),
        "learning_rate": unit(0, 1e-2, exclude_min=True), "head_learning_rate": unit(0, 1e-1, exclude_min=True),
        "weight_decay": unit(0, 1), "warmup_ratio": unit(0, 1, exclude_max=True),
        "max_grad_norm": unit(0, 1e6, exclude_min=True) | st.just(float("inf")), "max_length": st.integers(8, 4096),
        "seed": st.integers(0, 2**63), "eval_every": st.integers(0, 10**6),
        "task_sampling": st.sampled_from(["proportional", "equal"]),
        "device": st.sampled_from(["auto", "cpu", "cuda", "mps"]),
        "precision": st.sampled_from(["auto", "fp32", "bf16", "fp16"]),
        "cache_frozen_prefix": st.booleans(), "length_bucketing": st.booleans()}))
    return draw(st.fixed_dictionaries({}, optional={
        "name": optional(st.text(st.characters(exclude_categories=("Cs",)), max_size=80)),
        "backbone": text.filter(bool), "pooling": st.sampled_from(["mean", "cls"]),
        "head_dropout": unit(0, 1, exclude_max=True), "tasks": st.none() | st.just(tasks),
        "freeze": st.just(freeze), "training": st.just(training), "init_from": optional(text)}))


@given(valid_configs())
def test_a_valid_config_survives_a_yaml_round_trip_unchanged(data):
    config = parse_config(data)
    text_form = dump_config(config)
    again = parse_config_text(text_form, "config.yaml")
    assert again == config
    assert again.to_dict() == config.to_dict()
    assert dump_config(again) == text_form


def test_a_run_config_file_reads_back_as_the_same_config(tmp_path):
    config = parse_config({"name": "yes", "backbone": "null", "tasks": {"t": {"train": "1.0", "loss_weight": 2.5}},
                           "training": {"learning_rate": 1e-5, "seed": 7}, "freeze": {"preset": "lower_k", "k": 2}})
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert load_config(path) == config
    assert load_config(path).tasks["t"].loss_weight == 2.5 and load_config(path).name == "yes"


def test_a_config_that_is_not_a_mapping_is_refused_in_one_sentence():
    with pytest.raises(ConfigError) as caught:
        parse_config("epochs: 3")
    assert str(caught.value) == "invalid config: the top level must be a mapping of keys to values"


def test_defaults_when_a_key_is_left_out():
    config = parse_config(None)
    assert config == parse_config({}) == ExperimentConfig()
    assert config.task_names == ["topic", "sentiment"] and config.backbone == "minilm"
    assert parse_config({"tasks": {"a": {"train": "x.csv"}, "b-2": {"train": "y.csv"}}}).task_names == ["a", "b-2"]


@pytest.mark.parametrize("data, message", [
    ([1, 2], "invalid config: the top level must be a mapping of keys to values"),
    ({"epochs": 3}, "invalid config: epochs: unknown key"),
    ({"training": {"epochs": 0}}, "invalid config: training.epochs: Input should be greater than or equal to 1"),
    ({"freeze": {"preset": "lower_k"}}, "invalid config: freeze: preset lower_k needs k"),
    ({"freeze": {"preset": "scenario3"}}, "invalid config: freeze: preset scenario3 needs head"),
    ({"tasks": {}}, "invalid config: tasks: tasks is empty"),
    ({"tasks": {"a b": {"train": "x"}}}, "invalid config: tasks: task name 'a b' may hold only"),
    ({"training": {"epochs": 0, "seed": -1}}, "training.epochs: Input should be greater than or equal to 1; "
                                              "training.seed: Input should be greater than or equal to 0"),
])
def test_a_bad_config_is_one_line_naming_the_key(data, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("invalid config: ")
    assert not str(caught.value).startswith("Value error")


@pytest.mark.parametrize("text_form, message", [
    ("training:\n  epochs: 2\n  epochs: 3\n", "the key 'epochs' is given twice"),
    ("a: [1, 2\n", "c.yaml: YAML syntax error at line 2, column 1"),
    ("base: &b {epochs: 2}\ntraining:\n  <<: *b\n  epochs: 3\n", "base: unknown key"),
])
def test_yaml_problems_name_the_file_and_place(text_form, message):
    with pytest.raises(ConfigError, match=message):
        parse_config_text(text_form, "c.yaml")


def test_a_merge_key_may_be_overridden_by_the_keys_after_it():
    config = parse_config_text("tasks:\n  a: &task {train: x.csv, label_column: topic}\n"
                               "  b:\n    <<: *task\n    label_column: sentiment\n", "c.yaml")
    assert config.tasks["b"].train == "x.csv" and config.tasks["b"].label_column == "sentiment"
    assert config.tasks["a"].label_column == "topic"


def test_config_files_that_cannot_be_read_say_why(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: config file not found"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(latin)
    assert str(caught.value) == (f"{latin}: the config is not UTF-8 text (byte 0xe9 at offset 9); "
                                 "save it as UTF-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read the config (IsADirectoryError)"
    utf8 = tmp_path / "ok.yaml"
    utf8.write_text("name: café ✓\n", encoding="utf-8")
    assert load_config(str(utf8)).name == "café ✓"  # a str path works too


def test_yaml_syntax_errors_give_line_column_and_problem():
    with pytest.raises(ConfigError) as caught:
        parse_config_text("name: x\ntraining: [1,\n  epochs: 2\n", "c.yaml")
    assert str(caught.value) == ("c.yaml: YAML syntax error at line 4, column 1: "
                                 "expected ',' or ']', but got '<stream end>'")
    with pytest.raises(ConfigError) as caught:
        parse_config_text("training:\n  seed: 1\n  seed: 2\n", "c.yaml")
    assert str(caught.value) == "c.yaml: YAML syntax error at line 3, column 3: the key 'seed' is given twice"
    for text_form, place in [("name: x\n\ninit_from: a\nbackbone: mini\x07lm\nseed: 1\n", "line 4, column 15"),
                             ("\nbackbone: \x1b\n", "line 2, column 11"), ("name: \x00", "line 1, column 7")]:
        with pytest.raises(ConfigError) as caught:  # a control character, pasted by accident
            parse_config_text(text_form, "c.yaml")
        code = next(c for c in text_form if c in "\x00\x07\x1b")
        assert str(caught.value) == (f"c.yaml: YAML syntax error at {place}: unacceptable character "
                                     f"#x{ord(code):04x}: special characters are not allowed")
    with pytest.raises(ConfigError, match="found unhashable key"):
        parse_config_text("? [a, b]\n: 1\n", "c.yaml")


def test_duplicate_keys_are_found_at_every_depth_and_after_a_merge():
    with pytest.raises(ConfigError, match="the key 'train' is given twice"):
        parse_config_text("tasks:\n  a:\n    train: x.csv\n    train: y.csv\n", "c.yaml")
    with pytest.raises(ConfigError, match="the key 'label_column' is given twice"):
        parse_config_text("tasks:\n  a: &t {train: x.csv}\n  b:\n    <<: *t\n    label_column: p\n"
                          "    label_column: q\n", "c.yaml")


def test_dump_keeps_the_documented_key_order():
    text_form = dump_config(parse_config({"training": {"seed": 3}}))
    keys = [line.split(":")[0] for line in text_form.splitlines() if not line.startswith(" ")]
    assert keys == ["name", "backbone", "pooling", "head_dropout", "tasks", "freeze", "training", "adapter",
                    "init_from"]
    assert ExperimentConfig().to_dict()["training"]["seed"] == 0


def test_a_config_file_with_bad_yaml_is_named_in_the_message(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: YAML syntax error at line 2, column 1: ")
