"""The live job dashboard, fed by a real job's event stream on a cluster with a liar."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sandbox_hostile as hostile

import wgtlab as wgt
from wgtlab.errors import ConfigError
from wgtlab.jobs import events as ev
from wgtlab.jobs.events import Event, TextProgress
from wgtlab.notebook.widgets import JobDashboard, expected_chunks, job_progress
from wgtlab.trust.policy import TrustPolicy
from wgtlab.views import worker_rows


def histogram_job(values: np.ndarray, replicas: int = 3) -> wgt.Job:
    job = wgt.Job("fares")
    job.input(values, chunk_rows=1_000)
    job.kernel(wgt.kernels.histogram(bins=8, lo=0.0, hi=80.0))
    job.verify("redundancy", replicas=replicas)
    return job


@pytest.fixture
def cluster():
    with wgt.LocalCluster(workers=4, faults={"local-0": wgt.faults.Liar(rate=1.0, seed=7)}) as c:
        yield c


def test_dashboard_counts_match_the_result(cluster):
    # 30 chunks: the liar (trust-weighted, so picked less as it falls) is quarantined whatever
    # the timing; with 12 it missed the 5 lies that takes in a few percent of runs.
    values = np.random.default_rng(1).uniform(0, 80, 30_000)
    job = histogram_job(values)
    dashboard = JobDashboard.for_job(job, cluster)
    assert dashboard.total == 30 and dashboard.state == "waiting"
    assert [t.score for t in dashboard.tallies.values()] == [0.5] * 4
    text = TextProgress(total=30, disable=True)
    result = wgt.delegate_job(job, cluster, subscribers=[dashboard, text])

    assert dashboard.state == "done" and dashboard.verified == 30 and dashboard.failed == 0
    assert dashboard.overall.value == dashboard.overall.max == 30
    assert dashboard.overall.bar_style == "success"
    # Every trust outcome the ledger holds for this run is on the dashboard, worker by worker.
    history = cluster.ledger.history()
    history = history[history.job == result.job_id]
    for name, tally in dashboard.tallies.items():
        mine = history[history.label == name]
        assert (tally.agreed, tally.disagreed) == (int(mine.ok.sum()), int((~mine.ok).sum()))
        assert tally.failed == 0
        assert tally.score == pytest.approx(cluster.ledger.score(cluster.fingerprint(name)))
        _label, bar, trust, _score = dashboard.rows[name]
        assert trust.value == pytest.approx(tally.score)
        assert f"{tally.agreed} verified · {tally.disagreed} disagreed" in bar.value
    assert dashboard.lies_caught == int((~history.ok).sum()) > 0
    # The dashboard, the terminal bar and the result count the same lies (late and probation
    # replies that lose the vote included).
    assert dashboard.lies_caught == text.caught == result.disagreements
    assert text.quarantined == ["local-0"]
    liar = dashboard.tallies["local-0"]
    assert liar.agreed == 0 and liar.quarantined
    assert dashboard.rows["local-0"][2].bar_style == "danger"
    assert "quarantined" in dashboard.rows["local-0"][3].value
    assert "30/30 verified" in dashboard.status.value
    assert dashboard.summary().startswith("fares: done, 30/30 chunks verified")


def test_ticker_stops_when_the_job_ends(cluster):
    job = histogram_job(np.arange(3_000.0) % 80, replicas=2)
    dashboard = JobDashboard.for_job(job, cluster)
    wgt.delegate_job(job, cluster, subscribers=[dashboard])
    assert dashboard._ticker is not None
    dashboard._ticker.join(timeout=5)
    assert not dashboard._ticker.is_alive()
    assert not any(t.name.startswith("wgt-dashboard") for t in threading.enumerate())


def test_events_from_another_thread_and_an_interrupt():
    dashboard = JobDashboard("manual", ["w-0", "w-1"], total=4, refresh_s=0.01)
    feed = [
        Event(ev.JOB_STARTED, "manual-1", time=100.0),
        Event(ev.CHUNK_SCHEDULED, "manual-1", 0, "w-0"),
        Event(ev.CHUNK_DONE, "manual-1", 0, "w-0"),
        Event(ev.CHUNK_FAILED_ON_WORKER, "manual-1", 1, "w-1", {"why": "crashed"}),
        Event(ev.TRUST_UPDATED, "manual-1", 1, "w-1", {"score": 0.45, "ok": False}),
        Event(ev.TRUST_UPDATED, "manual-1", 0, "w-0", {"score": 0.55, "ok": True}),
        Event(ev.CHUNK_VERIFIED, "manual-1", 0, None, {"agreed": ("w-0",), "dissented": ()}),
    ]

    def send() -> None:
        for event in feed:
            dashboard(event)

    sender = threading.Thread(target=send)
    sender.start()
    sender.join()
    dashboard.finish(KeyboardInterrupt())
    assert dashboard.state == "interrupted"
    assert dashboard.overall.value == 1 and dashboard.overall.max == 4
    assert (dashboard.tallies["w-1"].failed, dashboard.tallies["w-1"].disagreed) == (1, 0)
    assert dashboard.tallies["w-0"].agreed == 1
    assert "interrupted" in dashboard.status.value
    assert "1 failed" in dashboard.rows["w-1"][1].value


def test_display_bundle_has_the_widget_and_a_text_fallback():
    dashboard = JobDashboard("shown", ["local-0"])
    bundle = dashboard._repr_mimebundle_()
    assert (
        bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == dashboard.widget.model_id
    )
    assert bundle["text/plain"] == "wgtlab dashboard for job 'shown' (live in Jupyter)"
    dashboard(Event(ev.JOB_STARTED, "shown-1", time=10.0))
    dashboard(Event(ev.JOB_DONE, "shown-1", data={"ok": True}, time=12.5))
    done = dashboard._repr_mimebundle_()["text/plain"]
    assert done == "shown: done, 0/0 chunks verified, 0 lies caught, 0 failed, 2.5 s"


def test_progress_kinds(cluster):
    job = histogram_job(np.arange(2_000.0) % 80, replicas=1)
    assert expected_chunks(job.plan()) == 2
    assert job_progress(job, cluster, "none") is None
    text = job_progress(job, cluster, "auto")  # no Jupyter kernel here: the text bar
    assert isinstance(text, TextProgress)
    text.close()
    with pytest.raises(ConfigError, match="progress must be one of auto, widget, text, none"):
        job_progress(job, cluster, "fancy")
    # bytes are cut as they stream: their chunks are not counted ahead
    words = wgt.Job("bytes").input(b"abc " * 100).kernel(wgt.kernels.word_count())
    assert expected_chunks(words.plan()) is None


@pytest.fixture
def strict_cluster():
    """Two workers under a policy that quarantines below 0.6, not the default 0.3: local-0 lied
    three times before this policy was in use (score 0.3645, never flagged), local-1 agreed
    three times (0.6355)."""
    ledger = wgt.TrustLedger(":memory:")
    policy = TrustPolicy(ledger, quarantine_threshold=0.6)
    with wgt.LocalCluster(workers=2, policy=policy) as c:
        for name, ok in (("local-0", False), ("local-1", True)):
            for _ in range(3):
                ledger.record(c.fingerprint(name), ok, label=name)
        yield c


def test_views_judge_trust_by_the_threshold_of_the_policy_in_use(strict_cluster):
    cluster = strict_cluster
    ids = {name: cluster.fingerprint(name) for name in ("local-0", "local-1")}
    states = cluster.ledger.states(ids.values())
    liar = states[ids["local-0"]]
    assert 0.3 < liar.score < 0.6 < states[ids["local-1"]].score and not liar.quarantined
    assert cluster.policy.is_quarantined(ids["local-0"])
    assert cluster.policy.quarantine_threshold == 0.6
    assert cluster.ledger.rule.threshold == 0.3

    dashboard = JobDashboard.for_job(histogram_job(np.arange(2_000.0) % 80, 1), cluster)
    assert dashboard.tallies["local-0"].quarantined and not dashboard.tallies["local-1"].quarantined
    assert dashboard.rows["local-0"][2].bar_style == "danger"
    assert "quarantined" in dashboard.rows["local-0"][3].value
    assert dashboard.rows["local-1"][2].bar_style == "success"
    # The same score under the default threshold is only a warning.
    lax = JobDashboard("lax", ["local-0"], scores={"local-0": liar.score})
    assert lax.rows["local-0"][2].bar_style == "warning"

    def row(name: str, threshold: float) -> str:
        return worker_rows([(name, states[ids[name]], "")], threshold)

    assert "quarantined" in row("local-0", 0.6) and "#c0392b" in row("local-0", 0.6)  # red
    assert "active" in row("local-1", 0.6)
    assert "active" in row("local-0", 0.3) and "#d4a017" in row("local-0", 0.3)  # amber


def test_the_cluster_card_judges_trust_by_the_threshold_of_its_policy(strict_cluster):
    card = strict_cluster._repr_html_()
    liar_row = card[card.index(">local-0<") : card.index(">local-1<")]
    assert "quarantined" in liar_row


def test_in_hash_mode_each_worker_row_counts_the_chunks_its_results_verified():
    """In hash mode nobody earns trust (there is no quorum to agree with), but each verified
    chunk is a worker's result: the rows add up to the header, never "0 verified" under 7/7."""
    with wgt.LocalCluster(workers=2) as honest:
        job = wgt.Job("vowels").input(np.arange(7_000.0), chunk_rows=1_000)
        job.kernel(wgt.kernels.sum())
        dashboard = JobDashboard.for_job(job, honest)
        result = wgt.delegate_job(job, honest, subscribers=[dashboard])
    assert "7/7 verified" in dashboard.status.value
    agreed = result.verification.query("outcome == 'agreed'").worker.value_counts()
    assert sum(t.verified for t in dashboard.tallies.values()) == 7
    for name, tally in dashboard.tallies.items():
        assert tally.verified == agreed.get(name, 0) and tally.agreed == 0
        assert f"{tally.done} done · {tally.verified} verified · 0 disagreed" in (
            dashboard.rows[name][1].value
        )


def test_a_worker_quarantined_before_the_job_wears_its_badge_from_the_start(cluster):
    first = histogram_job(np.random.default_rng(1).uniform(0, 80, 30_000))
    wgt.delegate_job(first, cluster)
    assert cluster.policy.is_quarantined(cluster.fingerprint("local-0"))

    again = histogram_job(np.arange(3_000.0) % 80, replicas=2)
    dashboard = JobDashboard.for_job(again, cluster)
    liar = dashboard.tallies["local-0"]
    assert dashboard.state == "waiting" and liar.quarantined and liar.score < 0.3
    assert "quarantined" in dashboard.rows["local-0"][3].value
    assert dashboard.rows["local-0"][2].bar_style == "danger"
    assert not any(dashboard.tallies[n].quarantined for n in ("local-1", "local-2", "local-3"))
    seen: list[Event] = []
    wgt.delegate_job(again, cluster, subscribers=[dashboard, seen.append])
    # Nothing in this run says so again (the badge came from the ledger), and it stays.
    assert not [e for e in seen if e.kind == ev.WORKER_QUARANTINED]
    assert dashboard.state == "done" and "quarantined" in dashboard.rows["local-0"][3].value


def test_chunks_cancelled_after_the_first_failure_are_counted_apart(cluster):
    spin = wgt.WasmModule.from_wat(hostile.INFINITE_LOOP, name="spin")
    job = wgt.Job("too-greedy").input(b"x" * 40_000, chunk_bytes=10_000).kernel(spin)
    job.limits(max_cpu_cycles=1_000_000)
    dashboard = JobDashboard.for_job(job, cluster)
    with pytest.raises(wgt.ChunkFailed) as failure:
        wgt.delegate_job(job, cluster, subscribers=[dashboard])
    # How many chunks failed before the job stopped, and how many it cancelled, is a matter of
    # timing (four workers, four chunks): the dashboard says what the result says.
    outcomes = failure.value.result.outcomes
    cancelled = sum((o.reason or "").startswith("cancelled") for o in outcomes)
    failed = len(outcomes) - cancelled
    assert len(outcomes) == 4 and failed >= 1
    assert (dashboard.failed, dashboard.cancelled) == (failed, cancelled)
    also = f", {cancelled} cancelled" if cancelled else ""
    assert dashboard.summary().startswith(
        f"too-greedy: failed, 0/4 chunks verified, 0 lies caught, {failed} failed{also}, "
    )
    also = f" · {cancelled} cancelled" if cancelled else ""
    assert f"{failed} failed{also} · " in dashboard.status.value
    assert dashboard.overall.value == dashboard.overall.max == 4
