"""Worker selection on top of the ledger: trust-weighted replicas, quarantine and probation,
and adaptive replication (a long agreed run earns spot checks instead of full replication)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping, Sequence

from wgtlab import defaults
from wgtlab.errors import ConfigError, NoEligibleWorkers
from wgtlab.trust.ledger import Outcome, TrustLedger, WorkerState
from wgtlab.trust.rules import QuarantineRule

_MIN_WEIGHT = 1e-9  # a worker at score 0 that is not quarantined may still be drawn, rarely


class TrustPolicy:
    """Decides who runs a chunk, how many replicas it needs, and who is quarantined.

    Quarantine: a worker whose score falls below ``quarantine_threshold`` gets no deciding work.
    It may still be given probation tasks (:meth:`choose_probation`): extra replicas whose result
    is compared with the canonical one and recorded, but never counted in the quorum. After
    ``probation_successes`` agreed results in a row, with its score back at the threshold, it
    returns. The state lives in the ledger, so it survives restarts and is shared by processes.

    Adaptive replication (BOINC-style, used only by jobs that ask for ``spot_check``): a worker
    with at least ``adaptive_run`` agreed results in a row is spot-checked with the job's
    probability (default ``1 / adaptive_run``), otherwise it runs alone; any disagreement resets
    its run.
    """

    def __init__(
        self,
        ledger: TrustLedger,
        *,
        quarantine_threshold: float = defaults.QUARANTINE_THRESHOLD,
        probation_successes: int = defaults.PROBATION_SUCCESSES,
        adaptive_run: int = defaults.ADAPTIVE_RUN_LENGTH,
        seed: int | None = None,
    ) -> None:
        if isinstance(adaptive_run, bool) or not isinstance(adaptive_run, int) or adaptive_run < 1:
            raise ConfigError(f"adaptive_run must be an int >= 1, got {adaptive_run!r}")
        self.ledger = ledger
        self.rule = QuarantineRule(quarantine_threshold, probation_successes)
        self.adaptive_run = adaptive_run
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()  # one seeded stream, drawn from many threads

    @property
    def quarantine_threshold(self) -> float:
        """Below this score a worker gets no deciding work."""
        return self.rule.threshold

    def _quarantined(self, state: WorkerState) -> bool:
        # The stored flag carries the hysteresis; the score test covers a ledger written under a
        # laxer threshold than this policy's.
        return state.quarantined or state.score < self.rule.threshold

    def is_quarantined(self, worker: str) -> bool:
        """True if ``worker`` (id or label) may only get probation tasks."""
        return self._quarantined(self.ledger.state(worker))

    def choose(
        self,
        candidates: Sequence[str],
        n: int,
        *,
        exclude: Iterable[str] = (),
        states: Mapping[str, WorkerState] | None = None,
    ) -> list[str]:
        """``n`` distinct workers from ``candidates``, drawn without replacement with
        probability proportional to trust, never quarantined or excluded ones. ``states``: the
        candidates' ledger states if the caller read them already (one read for many draws)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"the number of workers to choose must be an int >= 0, got {n!r}")
        excluded = set(exclude)
        pool = [c for c in dict.fromkeys(candidates) if c not in excluded]
        if states is None or not all(c in states for c in pool):
            states = self.ledger.states(pool)
        eligible = [c for c in pool if not self._quarantined(states[c])]
        if len(eligible) < n:
            quarantined = len(pool) - len(eligible)
            raise NoEligibleWorkers(
                f"need {n} distinct workers but only {len(eligible)} of "
                f"{len(set(candidates))} candidates are eligible ({quarantined} quarantined, "
                f"{len(set(candidates)) - len(pool)} excluded): add workers, request fewer "
                "replicas, or let quarantined workers finish probation"
            )
        with self._rng_lock:
            # Efraimidis-Spirakis: the n largest u ** (1 / weight) are a weighted sample
            # without replacement.
            keys = {
                c: self._rng.random() ** (1.0 / max(states[c].score, _MIN_WEIGHT)) for c in eligible
            }
        return sorted(eligible, key=keys.__getitem__, reverse=True)[:n]

    def choose_probation(
        self, candidates: Sequence[str], *, exclude: Iterable[str] = ()
    ) -> str | None:
        """A quarantined candidate to run an extra, non-deciding replica, or None.

        The one that has waited longest since its last outcome goes first, so every
        quarantined worker gets its chance to earn its way back."""
        excluded = set(exclude)
        pool = [c for c in dict.fromkeys(candidates) if c not in excluded]
        waiting = [
            (s.last_seq, c) for c, s in self.ledger.states(pool).items() if self._quarantined(s)
        ]
        return min(waiting)[1] if waiting else None

    def replicas_for(self, worker: str, requested: int, *, check_rate: float | None = None) -> int:
        """How many replicas a chunk whose first replica runs on ``worker`` needs: ``requested``,
        or 1 when the worker's agreed run has reached ``adaptive_run`` and this chunk was not
        picked for a spot check (probability ``check_rate``, default ``1 / adaptive_run``)."""
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ConfigError(f"requested replicas must be an int >= 1, got {requested!r}")
        rate = 1.0 / self.adaptive_run if check_rate is None else check_rate
        if not 0.0 < rate <= 1.0:
            raise ConfigError(f"check_rate must be in (0, 1], got {check_rate!r}")
        if requested == 1:
            return 1
        state = self.ledger.state(worker)
        if self._quarantined(state) or state.run < self.adaptive_run:
            return requested
        with self._rng_lock:
            checked = self._rng.random() < rate
        return requested if checked else 1

    def update(
        self,
        worker: str,
        agreed: bool,
        *,
        job: str | None = None,
        chunk: int | None = None,
        reason: str | None = None,
        label: str | None = None,
    ) -> WorkerState:
        """Record a verified outcome under this policy's quarantine rule; the new state."""
        return self.ledger.update(
            worker, agreed, job=job, chunk=chunk, reason=reason, label=label, rule=self.rule
        )

    def record(
        self,
        worker: str,
        agreed: bool,
        *,
        job: str | None = None,
        chunk: int | None = None,
        reason: str | None = None,
        label: str | None = None,
    ) -> float:
        """Record a verified outcome (score, agreed run, quarantine); returns the new score."""
        return self.update(worker, agreed, job=job, chunk=chunk, reason=reason, label=label).score

    def record_many(self, outcomes: Iterable[Outcome | tuple]) -> dict[str, float]:
        """:meth:`TrustLedger.record_many` under this policy's quarantine rule."""
        return self.ledger.record_many(outcomes, rule=self.rule)
