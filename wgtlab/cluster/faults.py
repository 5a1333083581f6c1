"""Simulated faulty workers for demos and tests: liars, crashes, stalls, forgers, misdirectors.

Every fault is seeded and decides per (chunk, replica), so a run is reproducible whatever order
the threads finish in. Faults wrap a worker's normal work; the manager sees only replies.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wgtlab.cluster.task import Task, WorkerReply
from wgtlab.errors import ConfigError, TimeLimitExceeded


class SimulatedCrash(RuntimeError):
    """Raised by a worker with a ``Crash`` fault: to the manager it looks like a dead worker."""


@dataclass(frozen=True)
class Fault:
    """Base: with probability ``rate`` (per chunk and replica, seeded) the fault strikes."""

    rate: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)):
            raise ConfigError(f"{type(self).__name__}.rate must be a number, got {self.rate!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ConfigError(f"{type(self).__name__}.rate must be in [0, 1], got {self.rate}")

    def strikes(self, task: Task) -> bool:
        if self.rate >= 1.0:
            return True
        rng = random.Random(f"{type(self).__name__}:{self.seed}:{task.chunk}:{task.replica}")
        return rng.random() < self.rate

    def before(self, task: Task) -> None:
        """Called before the task runs; may raise (a SandboxError is reported, signed, as the
        task's outcome; anything else is a crash) or sleep."""

    def tamper(self, task: Task, output: bytes) -> bytes:
        """May alter the output before it is digested and signed."""
        return output

    def after(self, task: Task, reply: WorkerReply) -> WorkerReply:
        """May alter the signed reply."""
        return reply


@dataclass(frozen=True)
class Liar(Fault):
    """Returns altered output with a valid signature of its own (caught only by redundancy).

    Each lie is drawn from (seed, chunk, replica), so two liars never tell the same lie about a
    chunk: independent liars cannot outvote an honest majority by agreeing with each other."""

    def tamper(self, task: Task, output: bytes) -> bytes:
        if not self.strikes(task):
            return output
        return _alter(output, random.Random(f"lie:{self.seed}:{task.chunk}:{task.replica}"))


def _alter(output: bytes, rng: random.Random) -> bytes:
    """A plausible lie: a digit changed into another (text outputs stay parseable), else one
    byte into another (binary outputs keep their length)."""
    if not output:
        return bytes([rng.randrange(1, 256)])
    altered = bytearray(output)
    digits = [i for i, b in enumerate(altered[:4096]) if 0x30 <= b <= 0x39]
    if digits:
        position = rng.choice(digits)
        altered[position] = rng.choice([d for d in b"0123456789" if d != altered[position]])
    else:
        position = rng.randrange(len(altered))
        altered[position] ^= rng.randrange(1, 256)
    return bytes(altered)


@dataclass(frozen=True)
class Colluder(Fault):
    """Returns the same altered output as every other ``Colluder`` with the same ``seed``: the
    lie depends on the chunk only, so colluders vote together. Redundancy with ``replicas``
    greater than the number of colluders never accepts it."""

    def tamper(self, task: Task, output: bytes) -> bytes:
        if not self.strikes(task):
            return output
        return _alter(output, random.Random(f"collusion:{self.seed}:{task.chunk}"))

    def strikes(self, task: Task) -> bool:
        # Decided per chunk, not per replica: colluders lie about the same chunks.
        if self.rate >= 1.0:
            return True
        return random.Random(f"Colluder:{self.seed}:{task.chunk}").random() < self.rate


@dataclass(frozen=True)
class FakeTimeout(Fault):
    """Claims the wall-clock limit stopped every task it strikes, without running it. A claim
    refuted by another worker finishing the chunk costs trust."""

    def before(self, task: Task) -> None:
        if self.strikes(task):
            raise TimeLimitExceeded(
                f"simulated: claims chunk {task.chunk} ran past max_execution_time_ms"
            )


@dataclass(frozen=True)
class Crash(Fault):
    """Dies instead of answering (the manager re-runs the chunk elsewhere)."""

    def before(self, task: Task) -> None:
        if self.strikes(task):
            raise SimulatedCrash(f"simulated crash on chunk {task.chunk}")


@dataclass(frozen=True)
class Stall(Fault):
    """Answers only after ``seconds`` (past the deadline, the manager gives up on it)."""

    seconds: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.seconds, (int, float)) or not 0.0 <= self.seconds <= 3600.0:
            raise ConfigError(f"Stall.seconds must be in [0, 3600], got {self.seconds!r}")

    def before(self, task: Task) -> None:
        if self.strikes(task):
            time.sleep(self.seconds)


@dataclass(frozen=True)
class Forger(Fault):
    """Signs its replies with a key that is not its registered one."""

    def after(self, task: Task, reply: WorkerReply) -> WorkerReply:
        if not self.strikes(task):
            return reply
        forged = Ed25519PrivateKey.generate().sign(b"not the registered key")
        return dataclasses.replace(reply, signature=forged)


@dataclass(frozen=True)
class Misdirect(Fault):
    """Answers for a chunk it was never assigned (the next one)."""

    def after(self, task: Task, reply: WorkerReply) -> WorkerReply:
        if not self.strikes(task):
            return reply
        return dataclasses.replace(reply, chunk=reply.chunk + 1, task_id=reply.task_id + 10_000)


#: simulated faults by worker name, or by worker index
FaultMap = Mapping[str, Fault] | Mapping[int, Fault] | Mapping[int | str, Fault]

__all__ = [
    "Colluder",
    "Crash",
    "FakeTimeout",
    "Fault",
    "FaultMap",
    "Forger",
    "Liar",
    "Misdirect",
    "SimulatedCrash",
    "Stall",
]
