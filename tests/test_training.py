"""The training loop: it learns, it reports, it stops when asked, and it fails cleanly."""

from __future__ import annotations

import statistics
import threading

import pytest
import torch

from core import events as ev
from core.config import parse_config
from core.locks import BusyError, training_lock
from core.runs import RunStore
from core.training import OOM_HINT, Trainer, prepare, run_experiment


def kinds(events) -> list[str]:
    return [e.kind if e.kind != "state" else f"state:{e.state}" for e in events]


def test_loss_falls_on_the_demo_data(tiny_bert, tmp_path):
    config = parse_config({"backbone": tiny_bert, "training": {
        "epochs": 2, "batch_size": 64, "max_length": 32, "learning_rate": 2e-3, "head_learning_rate": 2e-2,
        "eval_every": 0, "warmup_ratio": 0.05}})
    seen = []
    run = run_experiment(config, tmp_path, [seen.append])
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    losses = [e.loss for e in seen if isinstance(e, ev.StepEvent)]
    assert len(losses) == summary["steps"] == 2 * (18 + 18)  # 1,115 rows per task, batches of 64
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    assert last < 0.85 * first, (first, last)  # seen: 1.29 -> 0.91
    # clearly better than chance (0.25) or one class on the validation data
    assert summary["tasks"]["topic"]["accuracy"] > 0.4
    assert sum(map(sum, summary["tasks"]["topic"]["confusion"])) == 276


def test_events_and_metrics_file(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, training={"eval_every": 5, "epochs": 2})
    seen = []
    run = run_experiment(config, tmp_path, [seen.append])
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    order = kinds(seen)
    assert order[0] == "state:started" and order[-1] == "state:finished"
    # the final evaluation, then where learning happened, come just before the end
    assert order[-3:-1] == ["eval", "change"] and seen[-3].final
    changes = [e for e in seen if isinstance(e, ev.ChangeEvent)]
    assert [e.step for e in changes] == [5, 10, 15, 20, 24]  # one change record per evaluation
    steps = [e for e in seen if isinstance(e, ev.StepEvent)]
    progress = [e for e in seen if isinstance(e, ev.ProgressEvent)]
    evals = [e for e in seen if isinstance(e, ev.EvalEvent)]
    assert [e.step for e in steps] == list(range(1, 25)) == [e.step for e in progress]
    assert {e.total_steps for e in progress} == {24} and progress[-1].eta_seconds == 0
    assert {e.task for e in steps} == {"topic", "sentiment"}
    assert all(e.loss > 0 and e.lr >= 0 for e in steps)
    assert [(e.step, e.final) for e in evals] == [(5, False), (10, False), (15, False), (20, False), (24, True)]
    assert steps[-1].epoch == 2.0
    for e in evals:
        assert set(e.tasks) == {"topic", "sentiment"}
        assert set(e.tasks["topic"]) == {"loss", "accuracy", "macro_f1", "confusion", "labels"}
        assert sum(map(sum, e.tasks["topic"]["confusion"])) == 24
    assert summary["tasks"]["topic"]["accuracy"] == evals[-1].tasks["topic"]["accuracy"]
    # metrics.jsonl holds the same events, in the same order, and reads back to the same objects
    stored = run.events()
    assert kinds(stored) == order
    assert [ev.to_dict(e) for e in stored] == [ev.to_dict(e) for e in seen]
    assert run.has_weights()


def test_stop_takes_effect_within_one_step(tiny_bert, small_config, tmp_path):
    stop = threading.Event()

    def stop_at_five(event):
        if isinstance(event, ev.StepEvent) and event.step == 5:
            stop.set()

    config = small_config(tiny_bert, training={"epochs": 3})
    seen = []
    run = run_experiment(config, tmp_path, [stop_at_five, seen.append], stop)
    summary = run.summary()
    assert summary["status"] == "stopped"
    assert summary["steps"] in (5, 6) and summary["total_steps"] == 36
    assert summary["message"] == f"stopped at step {summary['steps']} of 36"
    stored = run.events()
    assert len([e for e in stored if e.kind == "step"]) == summary["steps"]
    assert kinds(stored)[0] == "state:started" and kinds(stored)[-1] == "state:stopped"
    assert run.has_weights()  # a stopped run keeps what it learned


def test_a_stop_file_in_the_run_folder_stops_it_after_the_current_step(tiny_bert, small_config, tmp_path):
    """No event, no signal: what any process on any OS can do (the page's Stop, a restarted page)."""
    runs = []

    def stop_file_at_five(event):
        if isinstance(event, ev.StepEvent) and event.step == 5:
            runs[0].request_stop()
            runs[0].request_stop()  # pressed twice: still one request

    run = run_experiment(small_config(tiny_bert, training={"epochs": 3}), tmp_path, [stop_file_at_five],
                         on_run=runs.append)
    summary = run.summary()
    assert summary["status"] == "stopped" and summary["message"] == "stopped at step 5 of 36"
    assert summary["steps"] == 5 == len([e for e in run.events() if e.kind == "step"])
    assert run.has_weights()
    assert not run.stop_path.exists() and not run.stop_requested()  # the finished record keeps no request


def _failing_step(after: int, error: BaseException):
    original = Trainer.train_step
    calls = []

    def step(self, task, rows, weight):
        calls.append(1)
        if len(calls) > after:
            raise error
        return original(self, task, rows, weight)

    return step


def test_a_failing_step_is_stored_and_the_next_run_can_start(tiny_bert, small_config, tmp_path, monkeypatch):
    config = small_config(tiny_bert)
    monkeypatch.setattr(Trainer, "train_step", _failing_step(2, RuntimeError("the batch exploded\nsecond line")))
    seen = []
    run = run_experiment(config, tmp_path, [seen.append])
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["message"] == "RuntimeError: the batch exploded"
    assert summary["steps"] == 2
    assert kinds(seen)[-1] == "state:failed" and seen[-1].message == summary["message"]
    assert not run.has_weights()
    monkeypatch.undo()
    monkeypatch.setenv("FREEZE_LAB_LOCK_DIR", str(tmp_path))
    again = run_experiment(config, tmp_path)  # the lock was released
    assert again.summary()["status"] == "finished"
    assert [r.status for r in RunStore(tmp_path).list()] == ["finished", "failed"]


def test_out_of_memory_suggests_a_smaller_batch(tiny_bert, small_config, tmp_path, monkeypatch):
    config = small_config(tiny_bert)
    monkeypatch.setattr(Trainer, "train_step", _failing_step(0, torch.OutOfMemoryError("CUDA out of memory.")))
    run = run_experiment(config, tmp_path)
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["message"] == OOM_HINT
    assert "smaller batch size" in OOM_HINT and "max length" in OOM_HINT


def test_a_second_run_is_refused_while_one_trains(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert)
    experiment = prepare(config, tmp_path)
    with training_lock("cpu"):
        with pytest.raises(BusyError, match="already training"):
            run_experiment(config, tmp_path, experiment=experiment)
    assert RunStore(tmp_path).list() == []  # no run folder was left behind


def test_a_short_real_minilm_run(small_config, tmp_path):
    """Frozen pretrained MiniLM with trained heads: the backbone stays exact and topic is learned."""
    config = small_config("minilm", freeze={"preset": "scenario2"},
                          training={"epochs": 3, "head_learning_rate": 2e-2})
    experiment = prepare(config, tmp_path)
    backbone_before = {k: v.clone() for k, v in experiment.model.backbone.state_dict().items()}
    run = run_experiment(config, tmp_path, experiment=experiment)
    summary = run.summary()
    assert summary["status"] == "finished", summary["message"]
    assert summary["params"]["trainable"] == 384 * 4 + 4 + 384 * 3 + 3  # the two heads only
    for name, tensor in experiment.model.backbone.state_dict().items():
        assert torch.equal(tensor, backbone_before[name]), name
    # pretrained sentence features separate the four topics well above chance (0.25)
    assert summary["tasks"]["topic"]["accuracy"] >= 0.6, summary["tasks"]["topic"]


# ---- the Trainer's stages, one at a time ----------------------------------------------------

def staged_trainer(config, tmp_path, setup: bool = True):
    """A Trainer for ``config`` with its events collected, set up but not run."""
    experiment = prepare(config, tmp_path)
    seen: list = []
    trainer = Trainer(experiment, RunStore(tmp_path).create(config), ev.EventBus([seen.append]), threading.Event())
    if setup:
        trainer.setup()
    return trainer, seen


def gradients_of_one_step(trainer, task: str, rows: list[int]) -> tuple[float, dict]:
    """Run one training step through loss_weights and train_step; the gradients the optimizer was given."""
    grads = {}

    def record():
        grads.update({n: p.grad.clone() for n, p in trainer.experiment.model.named_parameters() if p.grad is not None})

    trainer.optimizer.step = record
    torch.manual_seed(0)  # the same dropout masks in every call
    loss = trainer.train_step(task, rows, trainer.loss_weights()[task])
    return loss, grads


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # optimizer.step is recorded only
def test_a_tasks_loss_weight_scales_its_gradients(tiny_bert, small_config, small_data, tmp_path):
    def trainer_with(weight: float):
        tasks = {"topic": {**small_data, "label_column": "topic", "loss_weight": weight},
                 "sentiment": {**small_data, "label_column": "sentiment"}}
        config = small_config(tiny_bert, tasks=tasks, training={"max_grad_norm": 1e9, "device": "cpu"})
        return staged_trainer(config, tmp_path / str(weight))[0]

    plain, weighted = trainer_with(1.0), trainer_with(4.0)
    assert weighted.loss_weights() == {"topic": 4.0, "sentiment": 1.0}
    rows = [0, 3, 5, 7]
    loss_1, grads_1 = gradients_of_one_step(plain, "topic", rows)
    loss_4, grads_4 = gradients_of_one_step(weighted, "topic", rows)
    assert loss_4 == pytest.approx(loss_1)  # the reported loss is the task's own, unweighted
    assert grads_1.keys() == grads_4.keys() and any(n.startswith("backbone.") for n in grads_1)
    for name, grad in grads_1.items():
        torch.testing.assert_close(grads_4[name], 4 * grad, rtol=1e-4, atol=1e-7, msg=name)
    # the other task keeps weight 1: the same gradients in both runs
    _, other_1 = gradients_of_one_step(plain, "sentiment", rows)
    _, other_4 = gradients_of_one_step(weighted, "sentiment", rows)
    assert all(torch.allclose(other_4[n], g, rtol=1e-4, atol=1e-7) for n, g in other_1.items())


def test_demo_tasks_weigh_one(tiny_bert, tmp_path):
    config = parse_config({"backbone": tiny_bert, "training": {"device": "cpu"}})
    trainer, _ = staged_trainer(config, tmp_path, setup=False)
    assert trainer.loss_weights() == {"topic": 1.0, "sentiment": 1.0}


def test_a_step_clips_then_updates_only_its_tasks_head(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, training={"max_grad_norm": 0.5, "device": "cpu", "warmup_ratio": 0.0})
    trainer, _ = staged_trainer(config, tmp_path)
    norms = []
    original_step = trainer.optimizer.step

    def step():
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.trainable
                                                           if p.grad is not None])).item())
        original_step()

    trainer.optimizer.step = step
    model = trainer.experiment.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train_step("topic", [0, 1, 2, 3], 1.0)
    assert norms[0] == pytest.approx(0.5, rel=1e-3)  # clipped to max_grad_norm (the loss starts above it)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("heads.topic.") for n in changed) and any(n.startswith("backbone.") for n in changed)
    assert not any(n.startswith("heads.sentiment.") for n in changed)
    assert all(p.grad is None for p in model.parameters())  # gradients are cleared for the next step
    assert trainer.scheduler.get_last_lr()[0] > 0  # the schedule moved one step


def test_optimizer_groups_give_heads_their_learning_rate_and_skip_frozen_parts(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, freeze={"parts": ["embeddings"]},
                          training={"learning_rate": 3e-5, "head_learning_rate": 2e-3, "weight_decay": 0.05,
                                    "device": "cpu"})
    trainer, _ = staged_trainer(config, tmp_path, setup=False)
    model = trainer.experiment.model
    groups = trainer.make_optimizer().param_groups
    parts = ["layer.0", "layer.1", "layer.2", "head.topic", "head.sentiment"]  # one pair per trainable part
    assert [(g["part"], g["lr"], g["weight_decay"]) for g in groups] == [
        (part, 2e-3 if part.startswith("head.") else 3e-5, decay) for part in parts for decay in (0.05, 0.0)]
    ids = [{id(p) for p in g["params"]} for g in groups]
    heads = set().union(*ids[6:])
    assert heads == {id(p) for p in model.heads.parameters()}
    expected = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert set().union(*ids[:6]) == expected and sum(map(len, ids)) == len(expected | heads)
    assert not {id(p) for p in model.backbone.embeddings.parameters()} & expected
    # biases and LayerNorm weights are not decayed (Hugging Face Trainer, nanoGPT); matrices are
    no_decay = {id(p) for n, p in model.named_parameters() if p.requires_grad and (n.endswith(".bias") or "LayerNorm" in n)}
    assert no_decay and set().union(*ids[1::2]) == no_decay
    assert {id(model.heads["topic"].classifier.weight), id(model.backbone.encoder.layer[0].attention.self.query.weight)} <= set().union(*ids[::2])


def test_a_frozen_backbone_leaves_the_heads_alone_in_the_optimizer(tiny_bert, small_config, tmp_path):
    config = small_config(tiny_bert, freeze={"preset": "scenario2"}, training={"head_learning_rate": 2e-3,
                                                                              "device": "cpu"})
    trainer, _ = staged_trainer(config, tmp_path, setup=False)
    groups = trainer.make_optimizer().param_groups
    model = trainer.experiment.model
    assert [g["part"] for g in groups] == ["head.topic"] * 2 + ["head.sentiment"] * 2
    assert {g["lr"] for g in groups} == {2e-3} and [g["weight_decay"] for g in groups[1::2]] == [0.0, 0.0]
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.heads.parameters()}


@pytest.mark.parametrize("freeze", [{}, {"preset": "lower_k", "k": 2}], ids=["uncached", "cached-prefix"])
def test_evaluation_scores_every_validation_example_once(freeze, tiny_bert, small_config, tmp_path):
    from core.batching import collate
    from core.metrics import accuracy, confusion_matrix, macro_f1

    config = small_config(tiny_bert, freeze=freeze, training={"batch_size": 5, "device": "cpu"})  # chunks of 10
    trainer, seen = staged_trainer(config, tmp_path)
    assert trainer.prefix_cache.active == bool(freeze)
    trainer.step, trainer.steps_per_epoch = 3, 7  # mid-run, as the loop leaves them
    results = trainer.evaluate(final=True)
    assert trainer.model.training  # evaluation hands the model back in training mode
    model = trainer.experiment.model
    model.eval()
    for task, split in trainer.val_splits.items():
        # the same numbers, one example at a time
        with torch.no_grad():
            logits = torch.cat([model(task, *collate([ids], trainer.pad_id)) for ids in split.ids])
        labels = torch.tensor(split.labels)
        predictions = logits.argmax(-1).tolist()
        matrix = confusion_matrix(split.labels, predictions, len(trainer.experiment.tasks[task].labels))
        got = results[task]
        assert got["confusion"] == matrix and sum(map(sum, matrix)) == len(split) == 24
        assert got["accuracy"] == accuracy(matrix) and got["macro_f1"] == macro_f1(matrix)
        assert got["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-4)

        assert got["labels"] == trainer.experiment.tasks[task].labels
    if freeze:  # each validation example went through the frozen prefix once; a second evaluation reuses it
        assert trainer.prefix_cache.stats["prefix_examples"] == 48 and trainer.prefix_cache.stats["hit_examples"] == 0
        assert trainer.evaluate() == results and trainer.prefix_cache.stats["hit_examples"] == 48
    (event, *_) = [e for e in seen if isinstance(e, ev.EvalEvent)]
    assert event.final and event.step == 3 and event.tasks == results == trainer.last_eval
    assert event.epoch == 0.4286  # 3 / 7 epochs, to 4 places


def test_a_seed_repeats_a_run_exactly_and_another_seed_does_not(tiny_bert, small_config, tmp_path):
    """Seeds are what a comparison's repeats vary: the same seed must give the same run, step for step, or a
    'within noise' verdict would be measuring the machine."""
    def losses(seed: int, folder: str) -> tuple[list[float], float]:
        config = small_config(tiny_bert, training={"epochs": 2, "seed": seed, "data_seed": 0})
        seen = []
        summary = run_experiment(config, tmp_path / folder, [seen.append]).summary()
        return [e.loss for e in seen if isinstance(e, ev.StepEvent)], summary["tasks"]["topic"]["loss"]

    first, again, other = losses(0, "a"), losses(0, "b"), losses(1, "c")
    assert first == again  # bit for bit: the batch order, the heads' start, dropout
    assert first[0] != other[0]
