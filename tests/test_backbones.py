"""Backbone loading and part discovery across encoder architectures, and the errors for everything else."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from core.backbones import BackboneError, discover_parts, load_backbone
from core.freezing import apply_plan, count_parameters, FreezePlan
from core.model import MultiTaskModel

ENCODERS = ["bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2", "mpnet"]
HAS_POOLER = {"bert", "roberta", "xlm-roberta", "mpnet"}
# parameters outside embeddings and layers that the shared-parameter rule files with the embeddings
EXTRA = {"electra": ["embeddings_project"], "deberta-v2": ["encoder.rel_embeddings", "encoder.LayerNorm"],
         "mpnet": ["encoder.relative_attention_bias"]}
LABELS = {"topic": ["a", "b", "c", "d"], "sentiment": ["neg", "neu", "pos"]}


def unique_numel(modules) -> int:
    seen = {id(p): p for m in modules for p in m.parameters()}
    return sum(p.numel() for p in seen.values())


@pytest.mark.parametrize("kind", ENCODERS)
def test_parts_and_exact_accounting(kind, tiny_backbone_factory):
    backbone, tokenizer = load_backbone(tiny_backbone_factory(kind), pooling="cls")
    model = MultiTaskModel(backbone, LABELS, "cls", 0.1)
    parts = model.parts()
    expected = ["embeddings", "layer.0", "layer.1", "layer.2"] + (["pooler"] if kind in HAS_POOLER else [])
    assert list(parts) == expected + ["head.topic", "head.sentiment"]
    assert discover_parts(backbone).extra_embedding_modules == EXTRA.get(kind, [])

    # parts never share a tensor, and together they hold every parameter of the model
    owners: dict[int, str] = {}
    for name, modules in parts.items():
        for module in modules:
            for p in module.parameters():
                assert owners.setdefault(id(p), name) == name, f"{name} shares a tensor with {owners[id(p)]}"
    assert set(owners) == {id(p) for p in model.parameters()}

    counts = count_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    assert counts["total"] == counts["trainable"] == total
    assert sum(c["total"] for c in counts["by_part"].values()) == total
    for name, modules in parts.items():
        assert counts["by_part"][name]["total"] == unique_numel(modules)
    layer_sizes = {counts["by_part"][f"layer.{i}"]["total"] for i in range(3)}
    assert len(layer_sizes) == 1 and layer_sizes.pop() > 0  # three identical, non-empty layers

    # after a plan the trainable figure is exactly what requires_grad says
    counts = apply_plan(model, FreezePlan.of(["embeddings", "layer.0"]))
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["by_part"]["embeddings"]["trainable"] == 0 and counts["by_part"]["layer.1"]["trainable"] > 0

    # and the model runs: one vector per sentence, logits per task
    batch = tokenizer(["a short sentence", "another one here"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model("topic", batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_mean_pooling_drops_the_unused_pooler(kind, tiny_backbone_factory):
    backbone, _ = load_backbone(tiny_backbone_factory(kind), pooling="mean")
    model = MultiTaskModel(backbone, LABELS, "mean", 0.1)
    assert "pooler" not in model.parts()
    assert count_parameters(model)["total"] == sum(p.numel() for p in model.parameters())


def test_minilm_counts():
    """The packaged all-MiniLM-L6-v2: 22,713,216 parameters with its pooler, which mean pooling drops."""
    pooler = 384 * 384 + 384
    backbone, _ = load_backbone("minilm", pooling="cls")
    assert sum(p.numel() for p in backbone.parameters()) == 22_713_216
    parts = discover_parts(backbone)
    assert len(parts.layers) == 6 and parts.extra_embedding_modules == []
    assert unique_numel([parts.pooler]) == pooler
    backbone, _ = load_backbone("MiniLM", pooling="mean")  # the name is case-insensitive
    assert backbone.pooler is None and discover_parts(backbone).pooler is None
    assert sum(p.numel() for p in backbone.parameters()) == 22_713_216 - pooler


def test_albert_is_refused_because_layers_share_weights(tiny_backbone_factory):
    with pytest.raises(BackboneError, match="shares one layer's weights"):
        load_backbone(tiny_backbone_factory("albert"))


def test_unsupported_architecture_names_what_it_found(tmp_path):
    import transformers as tf
    from transformers import AutoTokenizer

    from core.backbones import minilm_path

    # Funnel keeps its layers in blocks of 2: no single list of num_hidden_layers (4) layers exists
    config = tf.FunnelConfig(vocab_size=30522, d_model=32, n_head=2, d_head=16, d_inner=48, block_sizes=[2, 2],
                             num_decoder_layers=1)
    tf.FunnelModel(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(tmp_path)
    with pytest.raises(BackboneError) as caught:
        load_backbone(str(tmp_path))
    message = str(caught.value)
    assert message.startswith("unsupported architecture funnel: expected one list of 4 layers")
    assert "encoder.blocks (2)" in message and "decoder.layers (1)" in message
    assert "top-level modules: embeddings, encoder, decoder" in message


def _save_config(folder, config):
    config.save_pretrained(folder)
    return str(folder)


def test_decoder_only_is_refused(tmp_path):
    import transformers as tf

    folder = _save_config(tmp_path, tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                                  bos_token_id=0, eos_token_id=0))
    with pytest.raises(BackboneError, match=r"is a decoder-only model \(gpt2\)"):
        load_backbone(folder)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_encoder_decoder_is_refused(kind, tmp_path):
    import transformers as tf

    config = (tf.T5Config(vocab_size=100, d_model=32, d_ff=48, d_kv=16, num_layers=2, num_heads=2)
              if kind == "t5" else
              tf.BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=48,
                            decoder_ffn_dim=48, encoder_attention_heads=2, decoder_attention_heads=2,
                            max_position_embeddings=64))
    with pytest.raises(BackboneError, match=rf"is an encoder-decoder model \({kind}\)"):
        load_backbone(_save_config(tmp_path, config))


def test_folder_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BackboneError, match="is not a model folder: it has no config.json"):
        load_backbone(str(tmp_path))
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(str(tmp_path / "missing"))


def test_folder_without_weights_says_so(tmp_path):
    config = tiny_config("bert")
    config.architectures = ["BertModel"]
    config.save_pretrained(tmp_path)
    with pytest.raises(BackboneError) as caught:
        load_backbone(str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and "model.safetensors" in message
    assert "hub" not in message  # a local folder: nothing to do with the hub or its cache


@pytest.mark.parametrize("model_type", ["bert", "freeze-lab-custom"])
def test_remote_code_is_refused(model_type, tmp_path, tiny_bert):
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_x.py").write_text("raise SystemExit('remote code ran')\n")
    (folder / "configuration_x.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(BackboneError, match="Freeze Lab never runs"):
        load_backbone(str(folder))


def test_trust_remote_code_is_never_enabled(tiny_bert, monkeypatch):
    import transformers

    calls = []
    for cls in (transformers.AutoConfig, transformers.AutoModel, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs.get("trust_remote_code", "missing")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_backbone(tiny_bert)
    assert {name for name, _ in calls} == {"AutoConfig", "AutoModel", "AutoTokenizer"}
    assert all(flag is False for _, flag in calls), calls
