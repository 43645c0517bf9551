"""Part names: built and read in one place, in the order from input to output."""

from __future__ import annotations

import pytest

from core import parts


def test_all_parts_in_order_from_input_to_output():
    assert parts.all_parts(2, True, ["topic", "sentiment"]) == [
        "embeddings", "layer.0", "layer.1", "pooler", "head.topic", "head.sentiment"]
    assert parts.all_parts(1, False, []) == ["embeddings", "layer.0"]


def test_names_are_read_back_and_sorted_by_kind():
    names = parts.all_parts(12, True, ["topic", "head.x"])
    assert [parts.layer_index(n) for n in parts.layers(names)] == list(range(12))  # layer.10 is no layer.1
    assert parts.heads(names) == ["head.topic", "head.head.x"]
    assert [parts.head_task(n) for n in parts.heads(names)] == ["topic", "head.x"]
    assert parts.backbone(names) == names[:14] and parts.count_layers(names) == 12


@pytest.mark.parametrize("name", ["layer.", "layer.a", "layers.1", "head.topic", "embeddings"])
def test_a_name_that_is_no_layer_is_refused(name):
    assert not parts.is_layer(name)
    with pytest.raises(ValueError, match="not a layer"):
        parts.layer_index(name)


def test_a_name_that_is_no_head_is_refused():
    with pytest.raises(ValueError, match="not a head"):
        parts.head_task("layer.0")
