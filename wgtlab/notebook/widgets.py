"""The live job dashboard: overall progress, per-worker bars and trust, fed by job events.

Events only move counters (cheap, on the job's thread); a ticker thread draws them a few times a
second, so the job never waits on the front end and the kernel's interrupt is never held up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wgtlab import defaults
from wgtlab.cluster.base import Cluster
from wgtlab.jobs import events as ev
from wgtlab.jobs.chunking import source_kind
from wgtlab.jobs.events import Event, TextProgress
from wgtlab.jobs.plan import JobDefinition, JobPlan
from wgtlab.views import badge, render

PROGRESS_KINDS = ("auto", "widget", "text", "none")
_TEMPLATES = "wgtlab.notebook.templates"
_REFRESH_S = 0.2  # how often the ticker redraws: smooth to the eye, negligible for the kernel
# A chunk the job gave up on because another chunk failed first (on_error="fail"): its reason
# starts so. It is no failure of its own, so the dashboard counts it apart.
_CANCELLED = "cancelled"
_STATE_TONES = {
    "waiting": "off",
    "running": "info",
    "done": "ok",
    "failed": "bad",
    "interrupted": "warn",
}


@dataclass
class WorkerTally:
    """One worker's counts in this run; ``disagreed`` excludes crashes, stalls and rejections."""

    done: int = 0  # replies that passed the digest and signature checks
    verified: int = 0  # replies that decided a verified chunk, in every verification mode
    agreed: int = 0  # agreements that earned trust (under redundancy, and on probation)
    disagreed: int = 0  # replies that lost the vote (the job result's ``disagreements``)
    failed: int = 0  # crashed, stalled or rejected tasks
    score: float = defaults.TRUST_INITIAL_SCORE
    quarantined: bool = False


class JobDashboard:
    """A job's live view; call it with events (it is a job subscriber), display it in Jupyter.

    ``total``: the number of chunks if known (else the bar follows the chunks seen so far).
    ``scores``: each worker's trust score before the run; ``quarantined``: the workers already
    quarantined then. ``threshold``: the quarantine threshold of the policy in use, which
    colours the trust bars.
    """

    def __init__(
        self,
        name: str,
        workers: list[str],
        *,
        mode: str = defaults.JOB_VERIFICATION,
        replicas: int = 1,
        total: int | None = None,
        scores: dict[str, float] | None = None,
        quarantined: Iterable[str] = (),
        threshold: float = defaults.QUARANTINE_THRESHOLD,
        refresh_s: float = _REFRESH_S,
    ) -> None:
        self.name = name
        self.mode = mode if mode != "redundancy" else f"redundancy ×{replicas}"
        self.total = total
        self.tallies = {w: WorkerTally() for w in workers}
        for worker, score in (scores or {}).items():
            if worker in self.tallies:
                self.tallies[worker].score = score
        for worker in quarantined:
            if worker in self.tallies:
                self.tallies[worker].quarantined = True
        self.threshold = threshold
        self.state = "waiting"
        self.verified = 0
        self.failed = 0
        self.cancelled = 0
        self.chunks_seen: set[int] = set()
        self.started: float | None = None
        self.finished: float | None = None
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._dirty = True
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.display_handle: Any = None  # set when shown, to leave a text summary behind
        self._build()

    @classmethod
    def for_job(cls, job: JobPlan | JobDefinition, cluster: Cluster) -> JobDashboard:
        """A dashboard for ``job`` on ``cluster``, with the workers' trust before the run, judged
        by the cluster's trust policy."""
        plan = job if isinstance(job, JobPlan) else job.plan()
        names = cluster.worker_names()
        ids = cluster.worker_ids()
        states = cluster.ledger.states(ids.values())
        return cls(
            plan.name,
            names,
            mode=plan.verification.mode,
            replicas=plan.verification.replicas,
            total=expected_chunks(plan),
            scores={n: states[ids[n]].score for n in names},
            quarantined=[n for n in names if cluster.policy.is_quarantined(ids[n])],
            threshold=cluster.policy.quarantine_threshold,
        )

    # --- the subscriber ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._count(event)
            self._dirty = True
        if event.kind == ev.JOB_STARTED:
            self._start_ticker()
        elif event.kind == ev.JOB_DONE:
            self.finish()

    def _count(self, event: Event) -> None:
        kind, data = event.kind, event.data
        tally = self.tallies.get(event.worker) if event.worker else None
        if event.worker and tally is None:  # a worker that joined after the dashboard was made
            tally = self.tallies[event.worker] = WorkerTally()
        if kind == ev.JOB_STARTED:
            self.state, self.started = "running", event.time
        elif kind == ev.CHUNK_SCHEDULED and event.chunk is not None:
            self.chunks_seen.add(event.chunk)
        elif kind == ev.CHUNK_DONE and tally is not None:
            tally.done += 1
        elif kind == ev.CHUNK_FAILED_ON_WORKER and tally is not None:
            tally.failed += 1
        elif kind == ev.CHUNK_VERIFIED:
            self.verified += 1
            for worker in data.get("agreed", ()):
                self.tallies.setdefault(worker, WorkerTally()).verified += 1
        elif kind == ev.CHUNK_FAILED:
            if str(data.get("error") or "").startswith(_CANCELLED):
                self.cancelled += 1
            else:
                self.failed += 1
        if kind in (ev.CHUNK_VERIFIED, ev.CHUNK_FAILED) and event.chunk is not None:
            self.chunks_seen.add(event.chunk)  # a chunk cancelled before it was scheduled too
        elif kind == ev.TRUST_UPDATED and tally is not None:
            tally.score = float(data.get("score", tally.score))
            if data.get("ok"):
                tally.agreed += 1
            elif data.get("dissent"):
                tally.disagreed += 1
        elif kind == ev.WORKER_QUARANTINED and tally is not None:
            tally.quarantined = True
        elif kind == ev.JOB_DONE:
            ok = data.get("ok", True)
            self.state = "done" if ok else "interrupted" if data.get("interrupted") else "failed"
            self.finished = event.time

    # --- life cycle ----------------------------------------------------------------------------

    def _start_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(
                target=self._tick, name=f"wgt-dashboard-{self.name}", daemon=True
            )
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.draw()

    def finish(self, error: BaseException | None = None) -> None:
        """Stop the ticker and draw the final state; ``error`` marks a run that did not end."""
        with self._lock:
            if error is not None and self.state in ("waiting", "running"):
                self.state = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            if self.finished is None and self.state != "running":
                self.finished = time.time()
            self._dirty = True
        self._stop.set()
        self.draw()
        if self.display_handle is not None:
            # Front ends without ipywidgets (nbconvert, GitHub, some editors) show text/plain:
            # leave the final summary there instead of a note about the live view.
            self.display_handle.update(self)
            self.display_handle = None

    @property
    def lies_caught(self) -> int:
        return sum(t.disagreed for t in self.tallies.values())

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def summary(self) -> str:
        """One line of text: what the dashboard shows."""
        total = self.total if self.total is not None else len(self.chunks_seen)
        cancelled = f", {self.cancelled} cancelled" if self.cancelled else ""
        return (
            f"{self.name}: {self.state}, {self.verified}/{total} chunks verified, "
            f"{self.lies_caught} lies caught, {self.failed} failed{cancelled}, "
            f"{self.elapsed:.1f} s"
        )

    # --- drawing -------------------------------------------------------------------------------

    def _build(self) -> None:
        import ipywidgets as w

        self.header = w.HTML()
        self.overall = w.IntProgress(min=0, max=1, value=0, layout=w.Layout(width="320px"))
        self.status = w.HTML()
        self.rows: dict[str, tuple[Any, Any, Any, Any]] = {}
        self.grid = w.VBox()
        self.widget = w.VBox(
            [self.header, w.HBox([self.overall, self.status]), self.grid],
            layout=w.Layout(border="1px solid #ddd", padding="6px 10px", width="fit-content"),
        )
        self.draw()

    def _row(self, worker: str) -> tuple[Any, Any, Any, Any]:
        import ipywidgets as w

        row = self.rows.get(worker)
        if row is None:
            row = (
                w.Label(worker, layout=w.Layout(width="90px")),
                w.HTML(layout=w.Layout(width="430px")),
                w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="120px")),
                w.HTML(layout=w.Layout(width="230px")),
            )
            self.rows[worker] = row
            self.grid.children = [*self.grid.children, w.HBox(list(row))]
        return row

    def draw(self) -> None:
        """Copy the counters into the widgets (if anything changed since the last draw)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            tallies = {name: WorkerTally(**vars(t)) for name, t in self.tallies.items()}
            state, verified, failed = self.state, self.verified, self.failed
            cancelled = self.cancelled
            total = self.total if self.total is not None else len(self.chunks_seen)
            elapsed = self.elapsed
        chunks = f"{total} chunks" if self.total is not None else "chunks as they come"
        self.header.value = render(
            "dashboard_header.html",
            _TEMPLATES,
            name=_escape(self.name),
            mode=_escape(self.mode),
            workers=len(tallies),
            chunks=chunks,
        )
        self.overall.max = max(1, total)
        self.overall.value = min(verified + failed + cancelled, self.overall.max)
        self.overall.bar_style = {"done": "success", "failed": "danger"}.get(state, "info")
        lies = sum(t.disagreed for t in tallies.values())
        self.status.value = render(
            "dashboard_status.html",
            _TEMPLATES,
            state=badge(state, _STATE_TONES[state]),
            verified=f"{verified}/{total}",
            lies=lies,
            failed=failed,
            cancelled_note=f" · {cancelled} cancelled" if cancelled else "",
            elapsed=f"{elapsed:.2f}",
        )
        widest = max([1] + [t.done + t.failed for t in tallies.values()])
        for name, tally in tallies.items():
            _label, bar, trust, score = self._row(name)
            pending = max(0, tally.done - tally.verified - tally.disagreed)
            bar.value = render(
                "dashboard_worker.html",
                _TEMPLATES,
                verified_pct=f"{100 * tally.verified / widest:.1f}",
                disagreed_pct=f"{100 * tally.disagreed / widest:.1f}",
                pending_pct=f"{100 * (pending + tally.failed) / widest:.1f}",
                done=tally.done,
                verified=tally.verified,
                disagreed=tally.disagreed,
                failed_note=f" · {tally.failed} failed" if tally.failed else "",
            )
            trust.value = tally.score
            trust.bar_style = (
                "danger"
                if tally.score < self.threshold
                else "warning"
                if tally.score < defaults.TRUST_INITIAL_SCORE
                else "success"
            )
            flag = " " + badge("quarantined", "bad") if tally.quarantined else ""
            score.value = f"<code>trust {tally.score:.3f}</code>{flag}"

    # --- display -------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        # What a front end without ipywidgets shows instead of the live view.
        live = self.state in ("waiting", "running")
        bundle["text/plain"] = (
            f"wgtlab dashboard for job {self.name!r} (live in Jupyter)" if live else self.summary()
        )
        return bundle

    def __repr__(self) -> str:
        return f"JobDashboard({self.summary()})"


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def expected_chunks(plan: JobPlan) -> int | None:
    """How many chunks ``plan`` will have, when that is cheap to know (in-memory rows)."""
    source = plan.source
    if source.splitter is not None:
        return None
    try:
        if source_kind(source.input.source, source.input.pipeline) not in (
            "table",
            "array",
            "list",
        ):
            return None
        return sum(1 for _ in source)
    except Exception:  # the run itself will report a bad input
        return None


def widgets_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets installed (a front end can draw them)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def job_progress(
    job: JobPlan | JobDefinition, cluster: Cluster, kind: str = "auto"
) -> JobDashboard | TextProgress | None:
    """A progress view for ``job`` on ``cluster``, already displayed, as a job subscriber.

    ``kind``: "widget" (the live dashboard), "text" (a tqdm bar), "none", or "auto" (the
    dashboard in a Jupyter kernel, else text).
    """
    if kind not in PROGRESS_KINDS:
        from wgtlab.errors import ConfigError

        raise ConfigError(f"progress must be one of {', '.join(PROGRESS_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = "widget" if widgets_available() else "text"
    if kind == "widget":
        from IPython.display import display

        dashboard = JobDashboard.for_job(job, cluster)
        dashboard.display_handle = display(dashboard, display_id=True)
        return dashboard
    if kind == "text":
        plan = job if isinstance(job, JobPlan) else job.plan()
        return TextProgress(total=expected_chunks(plan), desc=plan.name)
    return None
