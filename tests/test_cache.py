"""The frozen-prefix cache: equal logits, cache hits, invalidation, fallbacks, and equal training."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from core.backbones import load_backbone
from core.batching import collate
from core.cache import FrozenPrefixCache, _Passthrough, decide
from core.config import parse_config
from core.events import StepEvent
from core.freezing import freeze, unfreeze
from core.model import MultiTaskModel
from core.training import prepare, run_experiment

TEXTS = ["hello world", "a much longer sentence with quite a few more words in it than the others",
         "short", "the cat sat on the mat", "freezing layers saves time", "one", "two words", "a b c d e f g"]


def tiny_model(folder: str, pooling: str = "mean") -> tuple[MultiTaskModel, object]:
    backbone, tokenizer = load_backbone(folder, pooling)
    torch.manual_seed(0)
    return MultiTaskModel(backbone, {"a": ["x", "y", "z"], "b": ["p", "q"]}, pooling, 0.0), tokenizer


def freeze_prefix(model: MultiTaskModel, depth: int, pooler: bool = True) -> None:
    unfreeze(model, *model.parts())
    parts = ["embeddings", *[f"layer.{i}" for i in range(depth)]]
    if pooler and depth == len(model.backbone_parts().layers) and "pooler" in model.parts():
        parts.append("pooler")
    freeze(model, *parts)


def encode(tokenizer, texts=TEXTS, max_length=32):
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def full_logits(model, task, ids, pad_id):
    input_ids, mask = collate(ids, pad_id)
    return model(task, input_ids, mask)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta", "deberta-v2", "electra", "mpnet"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_cached_logits_equal_uncached(tiny_backbone_factory, kind, depth):
    pooling = "cls" if kind == "bert" else "mean"  # BERT keeps its pooler with cls pooling
    model, tokenizer = tiny_model(tiny_backbone_factory(kind), pooling)
    freeze_prefix(model, depth)
    ids = encode(tokenizer)
    cache = FrozenPrefixCache(model, settings={"pad_id": tokenizer.pad_token_id})
    assert cache.active, cache.reason
    assert cache.kind == ("pooled" if depth == 3 else "hidden")
    model.eval()  # dropout off
    with torch.no_grad():
        expected = full_logits(model, "a", ids, tokenizer.pad_token_id)
        first = cache.logits("a", "val/a", ids, list(range(len(ids))))  # builds
        rows = [5, 1, 3]
        again = cache.logits("a", "val/a", ids, rows)  # served from the cache, other padding
        other_head = cache.logits("b", "val/a", ids, rows)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again, expected[rows], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(other_head, full_logits(model, "b", [ids[r] for r in rows], tokenizer.pad_token_id),
                               atol=1e-5, rtol=1e-4)
    assert cache.stats["prefix_examples"] == len(ids) and cache.stats["hit_examples"] == 2 * len(rows)


def test_trainable_pooler_on_frozen_stack_runs_only_the_pooler(tiny_bert):
    model, tokenizer = tiny_model(tiny_bert, "cls")
    freeze_prefix(model, 3, pooler=False)
    cache = FrozenPrefixCache(model, settings={"pad_id": tokenizer.pad_token_id})
    assert cache.kind == "last_hidden"
    ids = encode(tokenizer)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(cache.logits("a", "t", ids, list(range(len(ids)))),
                                   full_logits(model, "a", ids, tokenizer.pad_token_id), atol=1e-5, rtol=1e-4)


def test_prefix_runs_once_then_hits(tiny_bert):
    model, tokenizer = tiny_model(tiny_bert)
    freeze_prefix(model, 2)
    calls = {"layer0": 0, "layer2": 0}
    layers = model.backbone_parts().layers
    layers[0].register_forward_hook(lambda *a: calls.__setitem__("layer0", calls["layer0"] + 1))
    layers[2].register_forward_hook(lambda *a: calls.__setitem__("layer2", calls["layer2"] + 1))
    ids = encode(tokenizer)
    cache = FrozenPrefixCache(model, settings={"pad_id": tokenizer.pad_token_id}, verify=False)
    model.train()
    for _ in range(3):  # three "epochs" of two batches
        for rows in ([0, 1, 2, 3], [4, 5, 6, 7]):
            cache.logits("a", "train/a", ids, rows).sum().backward()
    assert calls["layer0"] == 2  # one prefix pass per batch of the first epoch only
    assert calls["layer2"] == 6  # the trainable layer runs on every batch
    assert cache.stats == {"prefix_batches": 2, "prefix_examples": 8, "hit_examples": 16, "invalidations": 0}
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None for p in layers[2].parameters())


@pytest.mark.parametrize("depth", [2, 3])
def test_filled_under_inference_mode_then_trained_on(tiny_bert, depth):
    model, tokenizer = tiny_model(tiny_bert)
    freeze_prefix(model, depth)
    ids = encode(tokenizer)
    cache = FrozenPrefixCache(model, settings={"pad_id": tokenizer.pad_token_id})
    model.eval()
    with torch.inference_mode():
        cache.logits("a", "s", ids, [0, 1, 2, 3])
    model.train()
    cache.logits("a", "s", ids, [0, 1, 2]).sum().backward()
    assert model.heads["a"].classifier.weight.grad is not None
    assert cache.stats["hit_examples"] == 3


def test_invalidated_when_data_max_length_or_prefix_changes(tiny_bert):
    model, tokenizer = tiny_model(tiny_bert)
    freeze_prefix(model, 2)
    ids = encode(tokenizer)
    cache = FrozenPrefixCache(model, settings={"pad_id": tokenizer.pad_token_id, "max_length": 32})
    rows = list(range(len(ids)))
    model.eval()

    def run(data):
        with torch.no_grad():
            return cache.logits("a", "train/a", data, rows)

    run(ids)
    run(list(ids))  # same data in a new list: a hit
    assert cache.stats["prefix_examples"] == 8 and cache.stats["invalidations"] == 0

    changed = encode(tokenizer, TEXTS[::-1])  # different data
    torch.testing.assert_close(run(changed), full_logits(model, "a", changed, tokenizer.pad_token_id),
                               atol=1e-5, rtol=1e-4)
    assert cache.stats["prefix_examples"] == 16 and cache.stats["invalidations"] == 1

    shorter = encode(tokenizer, TEXTS[::-1], max_length=8)  # a new max_length: new ids and a new setting
    cache.settings["max_length"] = 8
    torch.testing.assert_close(run(shorter), full_logits(model, "a", shorter, tokenizer.pad_token_id),
                               atol=1e-5, rtol=1e-4)
    assert cache.stats["prefix_examples"] == 24 and cache.stats["invalidations"] == 2
    cache.settings["tokenizer"] = "another"  # tokenizer settings alone also invalidate
    run(shorter)
    assert cache.stats["prefix_examples"] == 32 and cache.stats["invalidations"] == 3

    assert not cache.revalidate()  # nothing changed
    with torch.no_grad():  # the prefix's weights change
        model.backbone_parts().layers[1].attention.output.dense.weight.mul_(1.5)
    assert cache.revalidate()
    torch.testing.assert_close(run(shorter), full_logits(model, "a", shorter, tokenizer.pad_token_id),
                               atol=1e-5, rtol=1e-4)
    assert cache.stats["prefix_examples"] == 40

    freeze(model, "layer.2")  # a deeper prefix
    assert cache.revalidate() and cache.depth == 3 and cache.kind == "pooled"
    torch.testing.assert_close(run(shorter), full_logits(model, "a", shorter, tokenizer.pad_token_id),
                               atol=1e-5, rtol=1e-4)

    unfreeze(model, "embeddings")  # no prefix at all
    assert cache.revalidate() and not cache.active
    assert run(shorter) is None and "not a prefix" in cache.reason


def test_non_prefix_plans_do_not_cache(tiny_bert):
    model, _ = tiny_model(tiny_bert)
    freeze(model, "layer.1")
    decision = decide(model)
    assert decision["kind"] is None and "not a prefix" in decision["reason"] and "layer.1" in decision["reason"]
    unfreeze(model, "layer.1")
    assert decide(model)["reason"] == "nothing in the backbone is frozen"
    freeze(model, "embeddings")
    assert "only the embeddings" in decide(model)["reason"]
    freeze(model, "layer.0", "layer.2")
    decision = decide(model)
    assert decision["kind"] == "hidden" and decision["depth"] == 1
    assert decision["notes"] == ["layer.2 frozen above a trainable layer: computed every step"]
    assert "turned off" in decide(model, enabled=False)["reason"]
    assert "nothing trains" in decide(model, trains=False)["reason"]


def test_memory_mapped_storage_is_removed_at_close(tiny_bert, tmp_path):
    model, tokenizer = tiny_model(tiny_bert)
    freeze_prefix(model, 1)
    ids = encode(tokenizer)
    cache = FrozenPrefixCache(model, settings={"pad_id": tokenizer.pad_token_id}, folder=tmp_path, storage="mmap")
    model.eval()
    with torch.no_grad():
        cache.logits("a", "train/a", ids, [0, 1, 2])
        got = cache.logits("a", "train/a", ids, list(range(len(ids))))
    files = list((tmp_path / "prefix_cache").iterdir())
    assert [f.name for f in files] == ["train_a.bin"] and files[0].stat().st_size > 0
    torch.testing.assert_close(got, full_logits(model, "a", ids, tokenizer.pad_token_id), atol=1e-5, rtol=1e-4)
    info = cache.close()
    assert info["storage"] == "mmap" and info["mb"] > 0
    assert not (tmp_path / "prefix_cache").exists()


def test_an_architecture_the_replay_does_not_fit_falls_back(tiny_bert, monkeypatch):
    model, tokenizer = tiny_model(tiny_bert)
    freeze_prefix(model, 2)
    monkeypatch.setattr(_Passthrough, "forward", lambda self, *a, **k: k["inputs_embeds"] + 1.0)
    cache = FrozenPrefixCache(model, settings={"pad_id": tokenizer.pad_token_id})
    with torch.no_grad():
        assert cache.logits("a", "train/a", encode(tokenizer), [0, 1]) is None
    assert not cache.active and "does not reproduce" in cache.reason and not cache.stores


# ---- through the training loop ----------------------------------------------------------


@pytest.fixture(scope="module")
def small_tasks(tmp_path_factory) -> dict:
    from core.data import load_demo_rows

    folder = tmp_path_factory.mktemp("cache-data")
    rows = load_demo_rows()
    tasks = {}
    for task in ("topic", "sentiment"):
        for split, count in (("train", 48), ("validation", 20)):
            path = folder / f"{task}_{split}.csv"
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "label"])
                writer.writerows([r["text"], r[task]] for r in [r for r in rows if r["split"] == split][:count])
        tasks[task] = {"train": str(folder / f"{task}_train.csv"), "validation": str(folder / f"{task}_validation.csv")}
    return tasks


def train(backbone, tasks, runs_dir, cache: bool, freeze_config: dict, layer0_calls: list | None = None):
    config = parse_config({
        "backbone": backbone, "head_dropout": 0.0, "tasks": tasks, "freeze": freeze_config,
        "training": {"epochs": 3, "batch_size": 16, "eval_every": 0, "cache_frozen_prefix": cache},
    })
    experiment = prepare(config, runs_dir)
    subscribers = []
    if layer0_calls is not None:
        counter = {"n": 0}
        experiment.model.backbone_parts().layers[0].register_forward_hook(
            lambda *a: counter.__setitem__("n", counter["n"] + 1))
        subscribers.append(lambda e: layer0_calls.append(counter["n"]) if isinstance(e, StepEvent) else None)
    run = run_experiment(config, runs_dir, subscribers=subscribers, experiment=experiment)
    losses = [e.loss for e in run.events() if isinstance(e, StepEvent)]
    return run.summary(), losses


@pytest.mark.parametrize("freeze_config", [{"preset": "lower_k", "k": 2}, {"preset": "scenario2"}],
                         ids=["lower_2", "whole_backbone"])
def test_training_with_and_without_cache_gives_the_same_loss_curve(dropless_bert, small_tasks, tmp_path,
                                                                   freeze_config):
    calls: list[int] = []
    cached, cached_losses = train(dropless_bert, small_tasks, tmp_path, True, freeze_config, calls)
    plain, plain_losses = train(dropless_bert, small_tasks, tmp_path, False, freeze_config)
    assert cached["status"] == plain["status"] == "finished"
    info = cached["cache"]
    assert info["used"] and info["kind"] == ("hidden" if "k" in freeze_config else "pooled")
    assert info["depth"] == (2 if "k" in freeze_config else 3) and info["storage"] in ("cpu", "gpu")
    assert info["prefix_examples"] == 2 * (48 + 20)  # every example through the prefix exactly once
    assert info["hit_examples"] > 0 and info["semantics"]
    assert plain["cache"]["used"] is False and "turned off" in plain["cache"]["reason"]
    steps_per_epoch = len(calls) // 3
    assert calls[steps_per_epoch - 1] == steps_per_epoch  # epoch 1: one prefix pass per batch
    assert calls[steps_per_epoch] == calls[-1] == info["prefix_batches"]  # then only validation, once; no more
    assert len(cached_losses) == len(plain_losses) == 3 * steps_per_epoch
    assert cached_losses == pytest.approx(plain_losses, abs=1e-4)
    for task in ("topic", "sentiment"):
        assert cached["tasks"][task]["loss"] == pytest.approx(plain["tasks"][task]["loss"], abs=1e-4)
        assert cached["tasks"][task]["accuracy"] == plain["tasks"][task]["accuracy"]
    assert not any(tmp_path.glob("*/prefix_cache"))


def test_non_prefix_plan_trains_normally_and_says_why(dropless_bert, small_tasks, tmp_path):
    summary, losses = train(dropless_bert, small_tasks, tmp_path, True, {"parts": ["layer.1"]})
    assert summary["status"] == "finished" and losses
    assert summary["cache"]["used"] is False and "not a prefix" in summary["cache"]["reason"]
    json.dumps(summary["cache"])


# ---- the decision and the key, exactly ------------------------------------------------------

def decision(model, **kwargs) -> tuple:
    d = decide(model, **kwargs)
    assert d["n_layers"] == 3
    return d["depth"], d["kind"], d["reason"], d["notes"]


def test_the_decision_and_its_reason_for_each_freeze_state(tiny_bert):
    model, _ = tiny_model(tiny_bert, pooling="cls")
    assert decision(model) == (-1, None, "nothing in the backbone is frozen", [])
    freeze(model, "head.a")  # a frozen head is not part of the backbone
    assert decision(model) == (-1, None, "nothing in the backbone is frozen", [])
    freeze(model, "layer.1", "pooler")
    assert decision(model) == (-1, None, "the frozen parts (layer.1, pooler) are not a prefix: the embeddings train, "
                                         "so every layer's input changes each step; training runs normally", [])
    unfreeze(model, "layer.1", "pooler")
    freeze(model, "embeddings", "layer.2")
    assert decision(model) == (0, None, "only the embeddings are frozen: storing their output would save almost "
                                        "no time", ["layer.2 frozen above a trainable layer: computed every step"])
    freeze(model, "layer.0")
    assert decision(model) == (1, "hidden", "", ["layer.2 frozen above a trainable layer: computed every step"])
    freeze(model, "layer.1")
    assert decision(model) == (3, "last_hidden", "", [])  # cls pooling through the trainable pooler
    assert decision(model, enabled=False) == (3, None, "turned off (training.cache_frozen_prefix is false)", [])
    assert decision(model, trains=False) == (3, None, "nothing trains: the run evaluates once, so there is nothing "
                                                      "to reuse", [])
    freeze(model, "pooler")
    assert decision(model) == (3, "pooled", "", [])


def test_the_whole_stack_frozen_caches_pooled_vectors_when_no_pooler_runs(tiny_bert, tiny_backbone_factory):
    mean, _ = tiny_model(tiny_bert, pooling="mean")  # a trainable pooler that mean pooling never calls
    freeze_prefix(mean, 3, pooler=False)
    assert decision(mean)[:2] == (3, "pooled")
    no_pooler, _ = tiny_model(tiny_backbone_factory("distilbert"), pooling="cls")
    freeze_prefix(no_pooler, 3)
    assert decision(no_pooler)[:2] == (3, "pooled")


def test_one_note_names_every_frozen_layer_above_the_prefix(tiny_bert):
    model, _ = tiny_model(tiny_bert)
    freeze(model, "embeddings", "layer.1", "layer.2")
    assert decision(model)[3] == ["layer.1, layer.2 frozen above a trainable layer: computed every step"]


def test_the_key_changes_with_each_thing_it_stands_for(tiny_bert):
    model, tokenizer = tiny_model(tiny_bert)
    freeze_prefix(model, 1)
    ids = encode(tokenizer)
    cache = FrozenPrefixCache(model, settings={"pad_id": 0, "max_length": 32, "tokenizer": "t"})
    same = FrozenPrefixCache(model, settings={"tokenizer": "t", "max_length": 32, "pad_id": 0})  # another order
    key = cache.key(ids)
    assert key == same.key([list(x) for x in ids]) and len(key) == 32
    assert cache.settings_signature() == "max_length=32;pad_id=0;tokenizer=t"
    assert cache.key(ids[:-1]) != key and cache.key([*ids[:-1], ids[-1][:-1]]) != key
    cache.settings["max_length"] = 16
    assert cache.key(ids) != key
    cache.settings["max_length"] = 32
    for attribute, value in [("depth", 2), ("kind", "pooled"), ("fingerprint", "other")]:
        original = getattr(cache, attribute)
        setattr(cache, attribute, value)
        assert cache.key(ids) != key, attribute
        setattr(cache, attribute, original)
    assert cache.key(ids) == key


def test_the_data_fingerprint_sees_where_sequences_split():
    from core.cache import data_fingerprint

    assert data_fingerprint([[1, 2], [3]]) != data_fingerprint([[1], [2, 3]])  # same tokens, other lengths
    assert data_fingerprint([[1, 2], [3]]) != data_fingerprint([[1, 2], [4]])
    assert data_fingerprint([[1, 2], [3]]) == data_fingerprint([[1, 2], [3]])
    assert len(data_fingerprint([[7]])) == 32
