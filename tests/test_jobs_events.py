"""The job event stream: what subscribers see, and what happens when one of them breaks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import wgtlab as wgt
from wgtlab.jobs import events as ev


def test_a_subscriber_that_raises_is_dropped_with_a_warning_and_the_job_goes_on() -> None:
    values = np.arange(1_000.0)
    job = wgt.Job("sum-with-a-broken-bar").input(values, chunk_rows=100).kernel(wgt.kernels.sum())
    calls: list[str] = []

    def broken_progress_bar(event: ev.Event) -> None:
        calls.append(event.kind)
        raise RuntimeError("the terminal went away")

    seen: list[str] = []
    job.subscribe(broken_progress_bar)
    job.subscribe(lambda event: seen.append(event.kind))
    with (
        wgt.LocalCluster(workers=2) as cluster,
        pytest.warns(wgt.SubscriberWarning) as warned,
    ):
        result = job.run(on=cluster)

    assert result.ok and result.value == float(values.sum())
    assert calls == [ev.JOB_STARTED]  # dropped at its first failure, never called again
    assert seen[0] == ev.JOB_STARTED and seen[-1] == ev.JOB_DONE  # the others see everything
    assert seen.count(ev.CHUNK_VERIFIED) == 10
    [warning] = [w for w in warned if issubclass(w.category, wgt.SubscriberWarning)]
    message = str(warning.message)
    assert "broken_progress_bar" in message
    assert "RuntimeError: the terminal went away" in message
    assert f"on a {ev.JOB_STARTED} event" in message


def test_a_broken_subscriber_fails_loudly_where_wgtlab_warnings_are_errors() -> None:
    # As in this test suite: a subscriber that breaks cannot pass unnoticed.
    stream = ev.EventStream()

    def broken(event: ev.Event) -> None:
        raise ValueError("bad")

    stream.subscribe(broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error", wgt.SubscriberWarning)
        with pytest.raises(wgt.SubscriberWarning, match=r"raised ValueError: bad on a job_sta"):
            stream.emit(ev.Event(ev.JOB_STARTED, "job-1"))
        stream.emit(ev.Event(ev.JOB_DONE, "job-1"))  # already unsubscribed: nothing raised
