"""Shared fixtures: tiny random backbones saved as local model folders, and offline mode."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=128)


def tiny_config(kind: str):
    """A tiny random config of one architecture, sized to the MiniLM tokenizer's vocabulary."""
    import transformers as tf

    vocab = 30522
    if kind == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=3, n_heads=2, hidden_dim=48,
                                   max_position_embeddings=128)
    classes = {"bert": tf.BertConfig, "roberta": tf.RobertaConfig, "xlm-roberta": tf.XLMRobertaConfig,
               "electra": tf.ElectraConfig, "deberta-v2": tf.DebertaV2Config, "mpnet": tf.MPNetConfig,
               "albert": tf.AlbertConfig}
    extra = {"electra": {"embedding_size": 16}, "albert": {"embedding_size": 16},
             "deberta-v2": {"relative_attention": True, "position_buckets": 16, "norm_rel_ebd": "layer_norm"}}
    return classes[kind](vocab_size=vocab, **TINY, **extra.get(kind, {}))


def save_tiny_backbone(folder: Path, kind: str = "bert") -> Path:
    """A random model of ``kind`` plus the MiniLM tokenizer, saved as a local folder."""
    from transformers import AutoModel, AutoTokenizer

    from core.backbones import minilm_path

    import torch

    torch.manual_seed(0)
    AutoModel.from_config(tiny_config(kind)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(save_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"), "bert"))


@pytest.fixture(scope="session")
def tiny_backbone_factory(tmp_path_factory):
    made: dict[str, str] = {}

    def make(kind: str) -> str:
        if kind not in made:
            made[kind] = str(save_tiny_backbone(tmp_path_factory.mktemp(f"tiny-{kind}"), kind))
        return made[kind]

    return make


@pytest.fixture(autouse=True)
def _isolated_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEZE_LAB_LOCK_DIR", str(tmp_path))
