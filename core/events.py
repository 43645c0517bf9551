"""Events the engine emits while it works; the page and the CLI only render them.

Every event is a small dataclass with a ``kind``; ``to_dict`` is what goes into
``metrics.jsonl``, and ``from_dict`` reads it back, so a live run and a stored
run look the same to whoever draws them.
"""

from __future__ import annotations

import queue
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Union


@dataclass
class StepEvent:
    step: int
    epoch: float
    task: str
    loss: float
    lr: float
    kind: str = "step"
    time: float = field(default_factory=time.time)


@dataclass
class EvalEvent:
    step: int
    epoch: float
    tasks: dict  # task -> {loss, accuracy, macro_f1, confusion, labels}
    final: bool = False
    kind: str = "eval"
    time: float = field(default_factory=time.time)


@dataclass
class ProgressEvent:
    step: int
    total_steps: int
    epoch: float
    examples_per_second: float
    eta_seconds: float
    kind: str = "progress"
    time: float = field(default_factory=time.time)


@dataclass
class StateEvent:
    state: str  # started | finished | evaluated | stopped | failed | interrupted
    message: str = ""
    kind: str = "state"
    time: float = field(default_factory=time.time)


@dataclass
class ChangeEvent:
    """Where learning happened so far (core.changes): per part, relative_change and grad_norm."""

    step: int
    parts: dict  # part -> {relative_change, grad_norm}
    kind: str = "change"
    time: float = field(default_factory=time.time)


@dataclass
class PlanEvent:
    """The freeze schedule changed the plan (core.schedules): from this step on, these parts are frozen.
    A scheduled run's first one, at step 0, is the plan it starts from."""

    step: int  # training steps run when the new plan took effect
    frozen: list  # the new plan's frozen part names, <part>:<kind> included
    kind: str = "plan"
    time: float = field(default_factory=time.time)


Event = Union[StepEvent, EvalEvent, ProgressEvent, StateEvent, ChangeEvent, PlanEvent]
Subscriber = Callable[[Event], None]
KINDS = {"step": StepEvent, "eval": EvalEvent, "progress": ProgressEvent, "state": StateEvent,
         "change": ChangeEvent, "plan": PlanEvent}


def to_dict(event: Event) -> dict:
    return asdict(event)


def from_dict(data: dict) -> Event:
    return KINDS[data["kind"]](**data)


class EventBus:
    """Fan an event out to every subscriber the moment it happens."""

    def __init__(self, subscribers: list[Subscriber] | None = None):
        self.subscribers = list(subscribers or [])

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in self.subscribers:
            subscriber(event)


class QueueSubscriber:
    """A subscriber that puts events on a queue, for a reader in another thread."""

    def __init__(self, maxsize: int = 0):
        self.queue: queue.Queue = queue.Queue(maxsize)

    def __call__(self, event: Event) -> None:
        self.queue.put(event)

    def drain(self) -> list[Event]:
        events = []
        while True:
            try:
                events.append(self.queue.get_nowait())
            except queue.Empty:
                return events
