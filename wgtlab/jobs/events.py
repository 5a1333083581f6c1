"""Job events: what happens while a job runs, delivered to subscribers (widgets, CLI, tests).

Nothing polls: the manager emits, every subscriber sees the same stream in the same order.
``TextProgress`` is the plain-text subscriber that the CLI and the notebook (outside Jupyter) share.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wgtlab.errors import SubscriberWarning

# Event kinds, in the order a chunk meets them.
JOB_STARTED = "job_started"
CHUNK_SCHEDULED = "chunk_scheduled"  # a replica of a chunk was sent to a worker
CHUNK_DONE = "chunk_done"  # a worker's reply arrived and passed digest + signature checks
CHUNK_REJECTED = "chunk_rejected"  # a reply failed a check (bad digest, signature, unassigned)
CHUNK_FAILED_ON_WORKER = "chunk_failed_on_worker"  # crash, timeout or vanished worker
CHUNK_VERIFIED = "chunk_verified"  # the chunk has a canonical result
CHUNK_DISAGREED = "chunk_disagreed"  # replicas disagreed; more may be scheduled
CHUNK_FAILED = "chunk_failed"  # no canonical result after every try
TRUST_UPDATED = "trust_updated"
WORKER_QUARANTINED = "worker_quarantined"
JOB_DONE = "job_done"

KINDS = (
    JOB_STARTED,
    CHUNK_SCHEDULED,
    CHUNK_DONE,
    CHUNK_REJECTED,
    CHUNK_FAILED_ON_WORKER,
    CHUNK_VERIFIED,
    CHUNK_DISAGREED,
    CHUNK_FAILED,
    TRUST_UPDATED,
    WORKER_QUARANTINED,
    JOB_DONE,
)


@dataclass(frozen=True)
class Event:
    """One thing that happened in a job; ``data`` holds kind-specific values (plain types)."""

    kind: str
    job: str
    chunk: int | None = None
    worker: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Subscriber = Callable[[Event], None]


class EventStream:
    """Fan-out of events to subscribers; a failing subscriber is dropped with a
    ``SubscriberWarning``, never the job."""

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self._subscribers: list[Subscriber] = list(subscribers or [])
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        with self._lock:
            self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception as exc:  # a broken progress bar must not break the job
                self.unsubscribe(subscriber)
                warnings.warn(
                    f"job {event.job!r}: subscriber {subscriber!r} raised "
                    f"{type(exc).__name__}: {exc} on a {event.kind} event; it gets no more "
                    "events, the job goes on",
                    SubscriberWarning,
                    stacklevel=2,
                )


class TextProgress:
    """A terminal progress bar (tqdm): counts chunks as they verify or fail, and lies as they
    are caught; a job subscriber."""

    def __init__(self, total: int | None = None, desc: str = "chunks", **tqdm_options: Any):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="chunk", leave=True, **tqdm_options)
        self.caught = 0
        self.quarantined: list[str] = []

    def __call__(self, event: Event) -> None:
        if event.kind == JOB_DONE:
            self.bar.close()
            return
        if event.kind in (CHUNK_VERIFIED, CHUNK_FAILED):
            self.bar.update(1)
        elif event.kind == TRUST_UPDATED and event.data.get("dissent"):
            self.caught += 1  # late and probation replies that lose count too, as in the result
        elif event.kind == WORKER_QUARANTINED and event.worker:
            self.quarantined.append(event.worker)
        else:
            return
        postfix: dict[str, Any] = {"lies caught": self.caught}
        if self.quarantined:
            postfix["quarantined"] = ",".join(self.quarantined)
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()
