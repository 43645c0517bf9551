"""The ``lesson`` section of a config, and the guess a run keeps: the core side of lesson mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from core.config import ConfigError, dump_config, parse_config, parse_config_text

LESSON = {"title": "Does freezing the lower layers hurt?", "hide": ["backbone", "data", "settings"],
          "lock": ["freeze"], "ask": "Which will score higher on sentiment?",
          "choices": ["full fine-tuning", "lower 4 frozen", "about the same"]}


def test_a_lesson_survives_the_yaml_round_trip_and_a_config_without_one_reads_as_before():
    config = parse_config({"lesson": LESSON})
    assert parse_config_text(dump_config(config), "lesson.yaml") == config
    assert "lesson" not in dump_config(parse_config({}))  # no 'lesson: null' in every run's config.yaml


@pytest.mark.parametrize("lesson, message", [
    ({**LESSON, "hide": ["everything"]}, "lesson.hide.0: Input should be 'backbone', 'data', 'freeze' or 'settings'"),
    ({**LESSON, "quiz": True}, "lesson.quiz: unknown key"),
    ({"hide": ["data"]}, "lesson.title: Field required"),
    ({"title": "t", "choices": ["a", "b"]}, "lesson: choices need a question (ask)"),
    ({**LESSON, "choices": ["a", "a"]}, "lesson.choices: a choice is given twice"),
])
def test_a_bad_lesson_is_refused_with_one_line_naming_the_key(lesson, message):
    with pytest.raises(ConfigError) as error:
        parse_config({"lesson": lesson})
    assert str(error.value) == f"invalid config: {message}"


def test_a_guess_must_be_one_of_the_choices():
    lesson = parse_config({"lesson": LESSON}).lesson
    assert lesson.checked_guess(" about the same ") == "about the same"
    with pytest.raises(ConfigError, match="not one of the lesson's choices"):
        lesson.checked_guess("no idea")
    with pytest.raises(ConfigError, match="asks no question"):
        parse_config({"lesson": {"title": "t"}}).lesson.checked_guess("x")


def test_the_cli_trains_a_lesson_file_and_keeps_the_guess_in_the_summary(tiny_bert, tmp_path):
    config = tmp_path / "lesson.yaml"
    config.write_text(yaml.safe_dump({"backbone": tiny_bert, "freeze": {"preset": "scenario1"}, "lesson": LESSON}),
                      encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", "train", "--config", str(config), "--runs-dir",
                               str(tmp_path / "runs"), "--quiet", *extra], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    refused = train("--guess", "no idea")
    assert refused.returncode != 0 and not (tmp_path / "runs").exists()  # refused before anything loads
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "guess 'no idea' is not one of the lesson's choices: full fine-tuning, lower 4 frozen, about the same")
    result = train("--guess", "about the same")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "evaluated"
    assert summary["lesson"] == {"title": LESSON["title"], "ask": LESSON["ask"], "choices": LESSON["choices"],
                                 "guess": "about the same"}


def test_a_sweep_over_devices_refuses_a_guess_in_one_line(tmp_path):
    """Members trained by children under --devices would drop the guess: refused before anything loads."""
    config = tmp_path / "lesson.yaml"
    config.write_text(yaml.safe_dump({"lesson": LESSON}), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "core", "sweep", "--config", str(config), "--depths", "0,1",
                             "--devices", "cpu,cpu", "--guess", "about the same", "--runs-dir", str(tmp_path / "runs")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and not (tmp_path / "runs").exists()
    assert result.stderr.strip().splitlines()[-1].endswith("leave out --devices or --guess")
