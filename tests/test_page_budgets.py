"""The page on trainable budgets: a partly trainable part reads as such, and the readout's learning rates."""

from __future__ import annotations

from page_helpers import frozen_toggles, new_app, ready, rerun_until, trainable
from test_page import page_env  # noqa: F401  (the page's fixture: its runs folder, uploads and allowed folders)



def readout_html(at) -> str:
    return "".join(h.proto.body for h in at.get("html"))


def test_bitfit_sets_the_toggles_and_the_kept_kind_and_reads_partly_trainable(page_env, tiny_bert):
    from core.backbones import load_backbone
    from core.freezing import apply_plan
    from core.model import MultiTaskModel
    from core.presets import preset_plan

    at = rerun_until(new_app(tiny_bert), ready)
    at.button(key="preset:bitfit").click().run()
    assert frozen_toggles(at) == {"embeddings", "layer.0", "layer.1", "layer.2"}
    assert at.multiselect(key="frozen_keeps").value == ["bias"]
    backbone, _ = load_backbone(tiny_bert, "mean")
    model = MultiTaskModel(backbone, {"topic": list("abcd"), "sentiment": list("abc")}, "mean", 0.0)
    assert trainable(at) == apply_plan(model, preset_plan("bitfit", list(model.parts())))["trainable"]
    assert "partly trainable: biases" in readout_html(at)
    assert any("Bit" in s.value for s in at.success)  # the preset still matches: its reasoning is shown
    at.multiselect(key="frozen_keeps").set_value(["bias", "norm"]).run()
    assert "partly trainable: biases and LayerNorms" in readout_html(at)
    at.multiselect(key="frozen_keeps").set_value([]).run()
    assert trainable(at) == 32 * 4 + 4 + 32 * 3 + 3  # scenario 2: only the heads
    assert "partly trainable" not in readout_html(at)


def test_the_readout_shows_each_parts_learning_rate_and_the_setting_reaches_the_config(page_env, tiny_bert):
    import yaml

    at = rerun_until(new_app(tiny_bert), ready)
    assert at.number_input(key="layer_lr_decay").value == 1.0
    assert readout_html(at).count("5.00e-05") == 4  # no decay: embeddings and the three layers alike
    at.number_input(key="layer_lr_decay").set_value(0.5).run()
    rows = {row.split("</td>")[0].rsplit(">", 1)[-1]: row for row in readout_html(at).split("<tr>")[1:]}
    for part, rate in (("layer.2", "5.00e-05"), ("layer.1", "2.50e-05"), ("layer.0", "1.25e-05"),
                       ("embeddings", "6.25e-06"), ("head.topic", "1.00e-03")):
        assert f">{rate}</td>" in rows[part], part
    at.button(key="preset:scenario1").click().run()  # evaluates only: quick
    at.button(key="train").click().run()
    at = rerun_until(at, lambda a: any("evaluated" in s.value for s in a.success))
    run = next(p for p in (page_env / "runs").iterdir() if (p / "config.yaml").exists())
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["layer_lr_decay"] == 0.5


def test_a_schedule_on_the_page_is_checked_at_once_and_reaches_the_config(page_env, tiny_bert):
    import yaml

    at = rerun_until(new_app(tiny_bert), ready)
    at.selectbox(key="schedule_kind").set_value("gradual_unfreeze").run()
    assert any("gradual_unfreeze has nothing to unfreeze" in e.value for e in at.error)  # nothing is frozen
    at.button(key="preset:scenario1").click().run()  # everything frozen: evaluates... until a layer unfreezes
    assert not any("nothing to unfreeze" in e.value for e in at.error)
    at.selectbox(key="schedule_unit").set_value("step").run()
    at.number_input(key="schedule_every").set_value(5).run()
    at.button(key="train").click().run()

    def stored(_) -> list:
        runs = page_env / "runs"
        return [p / "config.yaml" for p in runs.iterdir() if (p / "config.yaml").exists()] if runs.exists() else []

    config = stored(rerun_until(at, stored))[0]  # the run's record exists: the page fixture stops it
    schedule = yaml.safe_load(config.read_text())["freeze"]["schedule"]
    assert schedule == {"kind": "gradual_unfreeze", "every": 5, "unit": "step"}
