"""The page's "Also train LoRA at this budget" switch: one queue, and both runs side by side in Compare runs."""

from __future__ import annotations

from page_helpers import new_app, open_tab, rerun_until
from test_page import page_env, ready  # noqa: F401 - the page's fixture, shared

SWITCH = "Also train LoRA at this budget"


def switch(at):
    return next(t for t in at.toggle if t.label == SWITCH)


def test_the_switch_queues_lora_matched_to_the_plan_and_compare_shows_both_with_their_counts(page_env, tiny_bert,
                                                                                               monkeypatch):
    from core.runs import RunStore
    from dashboard.resources import job_manager

    monkeypatch.setenv("FREEZE_LAB_TRAIN_IN_PROCESS", "1")
    at = rerun_until(new_app(tiny_bert), ready)
    at.session_state["preset_k"] = 2
    at.button(key="preset:lower_k").click().run()
    at.session_state["epochs"] = 1
    at.session_state["eval_every"] = 0
    at.session_state["batch_size"] = 256  # the demo data, quickly: few large batches of short sentences
    at.session_state["max_length"] = 16
    switch(at).set_value(True).run()
    at.button(key="train").click().run()
    assert not at.exception and not at.error
    manager = job_manager()
    plan_job, [lora_job] = manager.current(), manager.waiting()
    assert plan_job.config.adapter is None and plan_job.config.freeze.preset == "lower_k"
    assert lora_job.config.adapter.r == "auto" and lora_job.config.adapter.match == plan_job.config.freeze
    assert plan_job.wait(240) and lora_job.wait(240) and lora_job.state == "done"
    runs = {run.summary()["name"]: run.summary() for run in RunStore(page_env / "runs").list()}
    assert len(runs) == 2 and all(s["status"] == "finished" for s in runs.values())
    lora = runs["LoRA at the budget of lower_k 2"]
    plan = next(s for name, s in runs.items() if s is not lora)
    assert lora["adapter"]["matched"]["trainable"] == plan["params"]["trainable"]
    assert abs(lora["params"]["trainable"] - plan["params"]["trainable"]) <= 0.15 * plan["params"]["trainable"]

    at = open_tab(at, "Compare runs")
    assert not at.exception
    assert set(at.multiselect(key="compare").value) == {lora["run_id"], plan["run_id"]}  # the two newest
    history = next(d.value for d in at.dataframe if "run" in d.value.columns).set_index("run")
    assert history.loc[lora["run_id"], "frozen"] == f"scenario2 + LoRA rank {lora['adapter']['r']}"
    assert history.loc[lora["run_id"], "trainable"] == lora["params"]["trainable"]
    assert history.loc[plan["run_id"], "trainable"] == plan["params"]["trainable"]
    differences = next(d.value for d in at.dataframe if "" in d.value.columns)
    counts = differences[differences[""] == "trainable params"].iloc[0]
    assert counts[lora["name"]] == f"{lora['params']['trainable']:,}"
    assert counts[plan["name"]] == f"{plan['params']['trainable']:,}"
    adapters = differences[differences[""] == "adapter"].iloc[0]
    assert adapters[plan["name"]] == "none" and adapters[lora["name"]].startswith(f"LoRA rank {lora['adapter']['r']}")
    assert f"against its {plan['params']['trainable']:,}" in adapters[lora["name"]]


def test_the_switch_refuses_a_plan_that_trains_nothing_and_starts_nothing(page_env, tiny_bert):
    from dashboard.resources import job_manager

    at = rerun_until(new_app(tiny_bert), ready)
    at.button(key="preset:scenario1").click().run()
    switch(at).set_value(True).run()
    at.button(key="train").click().run()
    assert [e.value for e in at.error] == [f"{SWITCH}: this plan trains nothing, so there is no budget to match; "
                                          "unfreeze a part or turn the switch off"]
    assert job_manager().current() is None
