"""Trust and verification plots: real ledger data in, PNG files out, no display needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread

from wgtlab.errors import ConfigError
from wgtlab.notebook.plots import OUTCOME_COLOURS, trust_timeline, verification_grid
from wgtlab.trust import TrustLedger

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _saved_png(fig: Figure, path: Path) -> np.ndarray:
    fig.savefig(path, dpi=72)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    pixels = imread(path)[..., :3]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # a drawing, not a blank canvas
    return pixels


def _pixels_of(pixels: np.ndarray, colour: str) -> int:
    return int(np.all(np.abs(pixels - np.array(to_rgb(colour))) < 0.02, axis=-1).sum())


@pytest.fixture
def history() -> pd.DataFrame:
    ledger = TrustLedger(":memory:")
    for i in range(60):
        ledger.record("fp-honest", True, label="local-0", chunk=i)
        ledger.record("fp-flaky", i % 4 != 0, label="local-1", chunk=i)
        if i < 8:
            ledger.record("fp-liar", False, label="local-2", chunk=i)
    return ledger.history()


def test_trust_timeline_draws_each_worker_and_the_threshold(history, tmp_path):
    fig = trust_timeline(history, threshold=0.3)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert {"local-0", "local-1", "local-2", "threshold 0.3"} <= set(lines)
    liar = history[history["worker"] == "fp-liar"]
    assert list(lines["local-2"].get_ydata()) == list(liar["score"])
    assert list(lines["local-2"].get_xdata()) == list(liar["seq"])
    assert list(lines["threshold 0.3"].get_ydata()) == [0.3, 0.3]
    assert len(ax.collections) == 1  # one cross: only the liar fell below the threshold
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["quarantine zone", "threshold 0.3"]
    colours = {lines[n].get_color() for n in ("local-0", "local-1", "local-2")}
    assert len(colours) == 3
    _saved_png(fig, tmp_path / "timeline.png")


def test_trust_timeline_over_time_and_when_empty(history, tmp_path):
    fig = trust_timeline(history, x="time")
    assert fig.axes[0].get_xlabel() == "time"
    _saved_png(fig, tmp_path / "timeline-time.png")
    empty = trust_timeline(TrustLedger(":memory:").history())
    assert [t.get_text() for t in empty.axes[0].texts] == ["no outcomes recorded yet"]
    _saved_png(empty, tmp_path / "empty.png")


def test_trust_timeline_names_shared_labels_apart():
    frame = pd.DataFrame(
        {"seq": [1, 2], "worker": ["a" * 40, "b" * 40], "label": ["local-0", "local-0"],
         "score": [0.55, 0.45]}
    )  # fmt: skip
    labels = [line.get_label() for line in trust_timeline(frame).axes[0].get_lines()]
    assert "local-0 (aaaaaaaa)" in labels and "local-0 (bbbbbbbb)" in labels


VERIFICATION = pd.DataFrame(
    [
        (0, "local-0", "agreed"), (0, "local-1", "agreed"), (0, "local-10", "dissented"),
        (1, "local-0", "agreed"), (1, "local-10", "agreed"),
        (3, "local-0", "failed"), (3, "local-1", "failed"), (3, "local-10", "failed"),
        (4, "local-1", "dissented"), (4, "local-1", "agreed"),  # a retry: the last row wins
    ],
    columns=["chunk", "worker", "outcome"],
)  # fmt: skip


def test_verification_grid_cells_are_exact(tmp_path):
    fig = verification_grid(VERIFICATION)
    ax = fig.axes[0]
    grid = np.asarray(ax.images[0].get_array())
    # rows local-0, local-1, local-10 (natural order); columns chunks 0..4 (chunk 2 never ran)
    not_run, agreed, dissented, failed = 0, 1, 2, 3
    assert grid.tolist() == [
        [agreed, agreed, not_run, failed, not_run],
        [agreed, not_run, not_run, failed, agreed],
        [dissented, agreed, not_run, failed, not_run],
    ]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["local-0", "local-1", "local-10"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["not run (6)", "agreed (5)", "dissented (1)", "failed (3)"]
    pixels = _saved_png(fig, tmp_path / "grid.png")
    counts = {name: _pixels_of(pixels, colour) for name, colour in OUTCOME_COLOURS.items()}
    # the cells are drawn in their colours: 5 agreed cells against 1 dissented (plus a small
    # legend swatch each); black also colours the text, so failed is only a lower bound
    assert 4.0 < counts["agreed"] / counts["dissented"] < 5.5
    assert counts["failed"] > 2 * counts["dissented"] and counts["not run"] > 0


def test_verification_grid_with_string_chunks_and_many_chunks(tmp_path):
    named = VERIFICATION.assign(chunk=VERIFICATION["chunk"].map(lambda c: f"part-{c}"))
    fig = verification_grid(named)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "part-0", "part-1", "part-3", "part-4",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    big = pd.DataFrame(
        {"chunk": np.repeat(np.arange(500), 3), "worker": [f"w{i}" for i in range(3)] * 500,
         "outcome": rng.choice(["agreed", "dissented", "failed"], 1500, p=[0.9, 0.08, 0.02])}
    )  # fmt: skip
    _saved_png(verification_grid(big), tmp_path / "big.png")


def test_verification_grid_refuses_bad_input():
    with pytest.raises(ConfigError, match="missing \\['outcome'\\]"):
        verification_grid(VERIFICATION.drop(columns="outcome"))
    with pytest.raises(ConfigError, match="got \\['maybe'\\]"):
        verification_grid(VERIFICATION.assign(outcome="maybe"))
    with pytest.raises(ConfigError, match="missing \\['score', 'seq'\\]"):
        trust_timeline(VERIFICATION)
    empty = verification_grid(VERIFICATION.iloc[:0])
    assert [t.get_text() for t in empty.axes[0].texts] == ["no chunks verified yet"]


def test_plots_render_headless_without_pyplot(tmp_path):
    code = (
        "import sys, io, pandas as pd\n"
        "from wgtlab.notebook.plots import verification_grid\n"
        "df = pd.DataFrame({'chunk': [0], 'worker': ['w'], 'outcome': ['agreed']})\n"
        "verification_grid(df).savefig(io.BytesIO(), format='png')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(tmp_path)}  # no DISPLAY, no backend
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert out.stdout.strip() == "False"


def test_verification_grid_shows_worker_failures_as_failed():
    rows = pd.DataFrame(
        {"chunk": [0, 0, 1, 1], "worker": ["a", "b", "a", "b"],
         "outcome": ["crashed", "agreed", "stalled", "rejected"]}
    )  # fmt: skip
    grid = np.asarray(verification_grid(rows).axes[0].images[0].get_array())
    assert grid.tolist() == [[3, 3], [1, 3]]  # rows a, b; columns chunks 0, 1
