"""Shared fixtures: tiny random backbones saved as local model folders, and offline mode."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

# Property tests (hypothesis): a bounded number of examples so CI stays fast, no deadline (a shared
# CI machine is slow at random). The mutation run picks "mutation": derandomized, so a mutant is
# killed or not on every run. Choose one with HYPOTHESIS_PROFILE=... .
settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("mutation", settings.get_profile("ci"), derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


def mkdir_error(path: Path) -> str:
    """What this OS says when a folder cannot be made under a regular file: 'Not a directory' on
    Linux and macOS, 'The system cannot find the path specified' on Windows."""
    try:
        path.mkdir(parents=True)
    except OSError as error:
        return error.strerror
    raise AssertionError(f"{path} could be made")


def tiny_backbone(tmp_path_factory, kind: str) -> str:
    """A tiny random backbone folder: fresh per session, or reused from FREEZE_LAB_TEST_BACKBONES.

    The mutation run (bench/mutation.sh) sets that variable, because it starts one pytest
    session per mutant and building the backbones would dominate each one.
    """
    shared = os.environ.get("FREEZE_LAB_TEST_BACKBONES")
    if not shared:
        return str(save_tiny_backbone(tmp_path_factory.mktemp(f"tiny-{kind}"), kind))
    folder = Path(shared) / f"tiny-{kind}"
    if not (folder / "config.json").exists():  # built once, then renamed into place whole
        building = save_tiny_backbone(tmp_path_factory.mktemp(f"tiny-{kind}-building"), kind)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(building, folder)
        except OSError:  # another worker renamed its copy first
            pass
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return tiny_backbone(tmp_path_factory, "bert")


@pytest.fixture(scope="session")
def dropless_bert(tmp_path_factory) -> str:
    """A tiny BERT with every dropout at zero, so cached and uncached training must agree."""
    from transformers import AutoModel, AutoTokenizer

    import torch

    from core.backbones import minilm_path

    folder = tmp_path_factory.mktemp("dropless-bert")
    config = tiny_config("bert")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_backbone_factory(tmp_path_factory):
    made: dict[str, str] = {}

    def make(kind: str) -> str:
        if kind not in made:
            made[kind] = tiny_backbone(tmp_path_factory, kind)
        return made[kind]

    return make


@pytest.fixture(autouse=True)
def _isolated_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEZE_LAB_LOCK_DIR", str(tmp_path))


@pytest.fixture(autouse=True, scope="session")
def _session_lock_dir(tmp_path_factory):
    """Module- and session-scoped fixtures that train (before the per-test folder above exists) lock in a
    folder of the test session's own, never in the machine's temporary folder where a real run may hold it."""
    os.environ["FREEZE_LAB_LOCK_DIR"] = str(tmp_path_factory.mktemp("freeze-lab-locks"))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache_dir(tmp_path_factory):
    """Remembered backbone descriptions go to a fresh folder, never to the user's ~/.cache."""
    os.environ["FREEZE_LAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("freeze-lab-cache"))


# ---- no network: every test runs with outbound connections refused ----------------------

class NetworkBlocked(RuntimeError):
    """Raised by the test guard when code tries to reach a non-loopback address.

    Deliberately not an OSError, so that no library can mistake it for "offline" and
    quietly carry on: an attempt fails the test that made it.
    """


NETWORK_ATTEMPTS: list = []


def _is_loopback(host) -> bool:
    import ipaddress

    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Refuse socket connections to anything but loopback and Unix sockets, for the whole session."""
    import socket

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def allowed(sock, address) -> bool:
        if getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX:
            return True
        return isinstance(address, tuple) and _is_loopback(address[0])

    def refuse(what) -> NetworkBlocked:
        NETWORK_ATTEMPTS.append(what)
        return NetworkBlocked(f"test network guard: connection to {what!r} refused (tests must stay offline)")

    def connect(sock, address):
        if not allowed(sock, address):
            raise refuse(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not allowed(sock, address):
            raise refuse(address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            raise refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield NETWORK_ATTEMPTS
    # a library that swallowed the guard's error still fails the session here
    assert not NETWORK_ATTEMPTS, f"code under test tried to reach the network: {NETWORK_ATTEMPTS}"


# ---- small task data and configs for fast runs -------------------------------------------

def write_small_demo_csvs(folder: Path, per_cell_train: int = 4, per_cell_val: int = 2) -> tuple[Path, Path]:
    """Balanced slices of the demo set (every topic x sentiment cell) as train.csv and val.csv."""
    import csv

    from core.data import load_demo_rows

    rows = load_demo_rows()
    picked = {"train": [], "validation": []}
    counts: dict = {}
    for row in rows:
        key = (row["split"], row["topic"], row["sentiment"])
        limit = per_cell_train if row["split"] == "train" else per_cell_val
        if counts.get(key, 0) < limit:
            counts[key] = counts.get(key, 0) + 1
            picked[row["split"]].append(row)
    paths = []
    for split, name in (("train", "train.csv"), ("validation", "val.csv")):
        path = folder / name
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "topic", "sentiment"])
            writer.writeheader()
            writer.writerows({k: r[k] for k in ("text", "topic", "sentiment")} for r in picked[split])
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> dict:
    """48 training and 24 validation rows of the demo set, with a topic and a sentiment column."""
    train, val = write_small_demo_csvs(tmp_path_factory.mktemp("small-data"))
    return {"train": str(train), "validation": str(val)}


@pytest.fixture(scope="session")
def small_config(small_data):
    """``small_config(backbone, **sections)``: a fast ExperimentConfig on the small data (1 epoch, batch 8)."""
    from core.config import parse_config

    def make(backbone: str, **overrides):
        data = {
            "backbone": backbone,
            "tasks": {task: {**small_data, "label_column": task} for task in ("topic", "sentiment")},
            "training": {"epochs": 1, "batch_size": 8, "max_length": 32, "eval_every": 0},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return parse_config(data)

    return make
