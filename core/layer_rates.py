"""Layer-wise learning rates: fastai's discriminative learning rates, as in ULMFiT.

Lower layers hold general features of language that a task should disturb least, upper
layers the task-shaped ones. So the top layer learns at ``training.learning_rate`` and
each layer below at ``training.layer_lr_decay`` times the rate of the layer above it;
the embeddings, below layer 0, learn slowest. The pooler sits above the top layer and
shares its rate; the heads keep ``training.head_learning_rate``. A decay of 1.0 (the
default) gives the whole backbone one rate. No torch here: the page shows the rates.
"""

from __future__ import annotations

from core import parts


def part_rates(names: list[str], learning_rate: float, head_learning_rate: float, decay: float) -> dict[str, float]:
    """Each part's learning rate before the warm-up and decay schedule scales them all alike."""
    top = parts.count_layers(names) - 1
    rates = {}
    for name in names:
        if parts.is_head(name):
            rates[name] = head_learning_rate
        elif parts.is_layer(name):
            rates[name] = learning_rate * decay ** (top - parts.layer_index(name))
        elif name == parts.EMBEDDINGS:
            rates[name] = learning_rate * decay ** (top + 1)
        else:  # the pooler, above the top layer
            rates[name] = learning_rate
    return rates
