"""Reading a set of shards: judging each one, then rebuilding each segment's sealed payload.

Each shard is judged on its own (header, footer checksum, key id, MAC) and placed by the index in
its header, so list order and duplicates do not matter; a damaged fragment only costs its segment
that one fragment. ``inspect`` reports the same judgement as a value for the CLI and notebooks.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from wgtlab.ces.erasure import ErasureCodec
from wgtlab.ces.format import ShardHeader, ShardLayout, fragment_checksum, parse_layout
from wgtlab.ces.keys import KeySchedule
from wgtlab.errors import (
    CESError,
    ConfigError,
    KeyMismatchError,
    NotEnoughShardsError,
    ShardFormatError,
)

if TYPE_CHECKING:
    import pandas as pd

# Shard states, as reported per shard.
OK = "ok"
DAMAGED = "damaged"
MISSING = "missing"
FOREIGN = "foreign"
DUPLICATE = "duplicate"


class ShardSource(Protocol):
    """Random access to one shard's bytes."""

    size: int

    def read_at(self, offset: int, length: int) -> bytes: ...


class BytesSource:
    """A shard held in memory."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, str):
            raise TypeError("a shard is bytes, not str")
        self._view = memoryview(data).cast("B")
        self.size = len(self._view)

    def read_at(self, offset: int, length: int) -> bytes:
        return bytes(self._view[offset : offset + length])


class FileSource:
    """A shard in an open binary file (local or fsspec); reads are serialised by a lock."""

    def __init__(self, file: Any, size: int, name: str = "") -> None:
        self._file = file
        self._lock = threading.Lock()
        self.size = size
        self.name = name

    def read_at(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._file.seek(offset)
            return self._file.read(length)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class ShardStatus:
    """What was found at one position of a shard set."""

    position: int  # place in the list (or the manifest) the shard came from
    name: str  # file name, or "#<position>" for shards in memory
    state: str  # "ok" | "damaged" | "missing" | "foreign" | "duplicate"
    index: int | None = None  # the shard index its header claims, once parsed
    reason: str = ""
    damaged_fragments: int = 0
    size: int = 0


@dataclass(frozen=True)
class ShardSetReport:
    """The state of a shard set: its header fields, each shard's status, whether it rebuilds.

    ``key_checked`` says whether header MACs were verified (a key was given); without a key,
    bit rot is still found through the checksums, but not deliberate tampering.
    """

    shards: tuple[ShardStatus, ...]
    header: ShardHeader | None
    key_checked: bool
    usable: int  # good fragments in the worst segment
    needed: int
    recoverable: bool
    problem: str = ""  # why the set cannot be rebuilt at all (wrong key, mixed datasets, ...)

    @property
    def dataset_id(self) -> str | None:
        return self.header.dataset_id.hex() if self.header else None

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.state for s in self.shards))

    def _repr_html_(self) -> str:
        from wgtlab.views import shard_report_html

        return shard_report_html(self)

    def to_frame(self) -> pd.DataFrame:
        """One row per shard position (pandas)."""
        import pandas as pd

        rows = [
            {
                "position": s.position,
                "name": s.name,
                "index": s.index,
                "state": s.state,
                "damaged_fragments": s.damaged_fragments,
                "size": s.size,
                "reason": s.reason,
            }
            for s in self.shards
        ]
        return pd.DataFrame(rows).set_index("position")

    def summary(self) -> str:
        """A few lines of text: the header fields, then one line per shard."""
        lines = []
        h = self.header
        if h is not None:
            lines += [
                f"dataset id      {h.dataset_id.hex()}",
                f"key id          {h.key_id.hex()}",
                f"format version  {h.version}",
                f"shards          {h.data_shards} data + {h.parity_shards} parity ({h.codec_name})",
                f"compression     zstd level {h.compression_level}",
                f"segments        {h.segment_count} x {h.segment_size} bytes",
                f"original size   {h.original_size} bytes",
            ]
        verdict = "recoverable" if self.recoverable else "NOT recoverable"
        lines.append(
            f"status          {verdict}: {self.usable} usable, {self.needed} needed"
            + ("" if self.key_checked else " (no key given: header MACs not checked)")
        )
        if self.problem:
            lines.append(f"problem         {self.problem}")
        for s in self.shards:
            where = f"index {s.index}" if s.index is not None else "index ?"
            detail = f" ({s.reason})" if s.reason else ""
            lines.append(f"  {s.name:<16} {where:<10} {s.state}{detail}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class _Member:
    position: int
    source: ShardSource
    layout: ShardLayout


@dataclass(frozen=True)
class Judgement:
    """Every shard judged: statuses per position, the chosen set, and what stops a rebuild."""

    statuses: tuple[ShardStatus, ...]
    header: ShardHeader | None
    members: dict[int, _Member]
    problem: CESError | None  # why there is no usable set, or why it is ambiguous


def judge_shards(
    sources: Sequence[ShardSource | None],
    keys: KeySchedule | None,
    *,
    names: Sequence[str] | None = None,
    missing_reasons: Sequence[str] | None = None,
) -> Judgement:
    """Parse every shard, check key ids and MACs (with ``keys``), group by dataset.

    Never raises for bad shards: each bad shard gets a status, and a set-level failure (wrong
    key, nothing readable, an ambiguous mix of datasets) is returned as ``problem``; shards of
    another dataset among the chosen set are "foreign" (counted as missing).
    """
    names = list(names) if names is not None else [f"#{p}" for p in range(len(sources))]
    statuses: list[ShardStatus | None] = [None] * len(sources)
    parsed: list[_Member] = []
    for p, source in enumerate(sources):
        if source is None:
            reason = missing_reasons[p] if missing_reasons else ""
            statuses[p] = ShardStatus(p, names[p], MISSING, reason=reason)
            continue
        try:
            layout = parse_layout(source.size, source.read_at)
        except (ShardFormatError, OSError, ValueError) as exc:
            statuses[p] = ShardStatus(p, names[p], DAMAGED, reason=str(exc), size=source.size)
            continue
        parsed.append(_Member(p, source, layout))

    def status(m: _Member, state: str, reason: str = "") -> ShardStatus:
        header = m.layout.header
        return ShardStatus(
            m.position, names[m.position], state, header.index, reason, 0, m.layout.size
        )

    def verdict(
        problem: CESError | None,
        header: ShardHeader | None = None,
        members: dict[int, _Member] | None = None,
    ) -> Judgement:
        done = tuple(s for s in statuses if s is not None)
        return Judgement(done, header, members or {}, problem)

    if not parsed:
        if all(s is None for s in sources):
            return verdict(NotEnoughShardsError("no shards given: every shard is missing", 0, 1))
        reasons = sorted({s.reason for s in statuses if s and s.state == DAMAGED})
        return verdict(
            ShardFormatError(
                f"none of the {len(sources)} shards is a readable CES shard: " + "; ".join(reasons)
            )
        )

    if keys is not None:
        ours = [m for m in parsed if m.layout.header.key_id == keys.key_id]
        for m in parsed:
            if m.layout.header.key_id != keys.key_id:
                statuses[m.position] = status(
                    m, FOREIGN, f"sealed under another key (key id {m.layout.header.key_id.hex()})"
                )
            elif not m.layout.mac_ok(keys.mac_key):
                statuses[m.position] = status(
                    m, DAMAGED, "header MAC does not verify (tampered or damaged)"
                )
        if not ours:
            found = ", ".join(sorted({m.layout.header.key_id.hex() for m in parsed}))
            return verdict(
                KeyMismatchError(
                    f"the shards were sealed under another key (key id {found}); this key's id "
                    f"is {keys.key_id.hex()}. Use the key the data was encoded with (nothing "
                    "was decrypted)."
                )
            )
        parsed = [m for m in ours if statuses[m.position] is None]
        if not parsed:
            k = ours[0].layout.header.data_shards
            return verdict(
                NotEnoughShardsError(
                    "no shard sealed under this key has an intact header (MACs fail)", 0, k
                )
            )

    # Group by everything the header says about the set (all but the index). Several groups:
    # shards of other datasets are mixed in. The one group that can be rebuilt is the set, the
    # others are foreign; two that could each be rebuilt, or a tie, are not ours to choose from.
    groups: dict[ShardHeader, list[_Member]] = {}
    for m in parsed:
        groups.setdefault(m.layout.header.with_index(0), []).append(m)
    header, chosen, problem = _choose_set(groups)
    for other, group in groups.items():
        if other != header:
            for m in group:
                reason = f"belongs to another shard set (dataset {other.dataset_id.hex()})"
                statuses[m.position] = status(m, FOREIGN, reason)

    members: dict[int, _Member] = {}
    for m in chosen:
        index = m.layout.header.index
        if index in members:
            first = names[members[index].position]
            statuses[m.position] = status(m, DUPLICATE, f"same index as {first}")
            continue
        members[index] = m
        statuses[m.position] = status(m, OK)
    return verdict(problem, header, members)


def _choose_set(
    groups: dict[ShardHeader, list[_Member]],
) -> tuple[ShardHeader, list[_Member], CESError | None]:
    """The shard set among ``groups`` (shards grouped by header): the one with the most distinct
    shard indices, unless that is ambiguous (then a ``ShardFormatError`` as the problem).

    Ambiguous: two groups tie for the most, or more than one group has enough shards to be
    rebuilt (two whole datasets were mixed, not a few strays: which one is meant is not for
    the library to guess). Without a key, groups are not authenticated: this only decides what
    a report shows, as nothing can be decrypted.
    """

    def indices(group: list[_Member]) -> int:
        return len({m.layout.header.index for m in group})

    ranked = sorted(groups.items(), key=lambda item: indices(item[1]), reverse=True)
    header, chosen = ranked[0]
    if len(ranked) == 1:
        return header, chosen, None
    rebuildable = [(h, g) for h, g in ranked if indices(g) >= h.data_shards]
    runner_up = indices(ranked[1][1])
    if len(rebuildable) < 2 and runner_up < indices(chosen):
        return header, chosen, None
    ids = ", ".join(f"{h.dataset_id.hex()} ({indices(g)} shards)" for h, g in ranked)
    why = (
        f"{len(rebuildable)} of them could each be rebuilt"
        if len(rebuildable) > 1
        else "none of them has more shards than the others"
    )
    problem = ShardFormatError(
        f"the shards come from {len(groups)} different shard sets (dataset ids {ids}) and "
        f"{why}: which one is meant is ambiguous; pass only the shards of one dataset"
    )
    return header, chosen, problem


class ShardSet:
    """The usable shards of one dataset, ready to give up segments.

    ``open`` judges every shard; ``sealed_segment(j)`` then rebuilds segment ``j``'s sealed
    payload from fragments that pass their checksums (safe to call from several threads).
    """

    def __init__(self, judgement: Judgement) -> None:
        assert judgement.header is not None
        self.header: ShardHeader = judgement.header
        self.members = judgement.members
        self._statuses = judgement.statuses
        self.codec = _codec(self.header.data_shards, self.header.parity_shards, self.header.codec)
        self._damage: Counter[int] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        sources: Sequence[ShardSource | None],
        keys: KeySchedule | None,
        *,
        names: Sequence[str] | None = None,
        missing_reasons: Sequence[str] | None = None,
    ) -> ShardSet:
        """Judge every shard and keep the usable ones of the one dataset they belong to.

        Raises ``KeyMismatchError`` if no shard carries ``keys``' key id (before any
        decryption), ``ShardFormatError`` if no shard is readable or the mix of datasets is
        ambiguous, ``NotEnoughShardsError`` if fewer whole shards remain than the data needs
        (shards of another dataset count as missing).
        """
        judgement = judge_shards(sources, keys, names=names, missing_reasons=missing_reasons)
        if judgement.problem is not None:
            raise judgement.problem
        shard_set = cls(judgement)
        if len(shard_set.members) < shard_set.header.data_shards:
            raise shard_set._not_enough(len(shard_set.members), "")
        return shard_set

    # --- segments --------------------------------------------------------------------------

    def fragments(self, j: int, need: int | None = None) -> dict[int, bytes]:
        """Good fragments of segment ``j`` by shard index: data shards first, ``need`` of them
        (all, when None). Fragments failing their checksum are counted as damage, not used."""
        good: dict[int, bytes] = {}
        for index in sorted(self.members):
            if need is not None and len(good) >= need:
                break
            layout = self.members[index].layout
            length = layout.fragment_lengths[j]
            try:
                fragment = self.members[index].source.read_at(layout.fragment_offsets[j], length)
            except (OSError, ValueError):
                fragment = b""
            if (
                len(fragment) == length
                and fragment_checksum(fragment) == (layout.fragment_checksums[j])
            ):
                good[index] = fragment
            else:
                with self._lock:
                    self._damage[index] += 1
        return good

    def sealed_segment(self, j: int) -> bytes:
        """Segment ``j`` as it was sealed (nonce + ciphertext + tag), rebuilt from k fragments."""
        k = self.header.data_shards
        good = self.fragments(j, need=k)
        if len(good) < k:
            raise self._not_enough(len(good), f" in segment {j}")
        return self.codec.decode(good)

    def _not_enough(self, usable: int, where: str) -> NotEnoughShardsError:
        k, n = self.header.data_shards, self.header.total_shards
        states = ", ".join(f"{c} {state}" for state, c in sorted(self.counts().items()))
        return NotEnoughShardsError(
            f"only {usable} usable shards{where}, {k} of the {n} are needed ({states}). "
            f"Find more shards of dataset {self.header.dataset_id.hex()}.",
            usable=usable,
            needed=k,
        )

    def counts(self) -> dict[str, int]:
        """Shards per state; positions never given count as missing."""
        statuses = self.statuses()
        counts = Counter(s.state for s in statuses)
        counts[MISSING] += max(0, self.header.total_shards - len(statuses))
        return {state: c for state, c in counts.items() if c > 0}

    def statuses(self) -> list[ShardStatus]:
        """Per-position status, with the fragment damage found so far."""
        out = []
        for s in self._statuses:
            damaged = self._damage.get(s.index, 0) if s.state == OK and s.index is not None else 0
            if damaged:
                s = ShardStatus(
                    s.position,
                    s.name,
                    DAMAGED,
                    s.index,
                    f"{damaged} of {self.header.segment_count} fragments fail their checksum",
                    damaged,
                    s.size,
                )
            out.append(s)
        return out

    def report(self, key_checked: bool, problem: str = "") -> ShardSetReport:
        """Check every fragment of every shard and report (reads everything once)."""
        k = self.header.data_shards
        worst = len(self.members)
        for j in range(self.header.segment_count):
            worst = min(worst, len(self.fragments(j)))
        return ShardSetReport(
            shards=tuple(self.statuses()),
            header=self.header,
            key_checked=key_checked,
            usable=worst,
            needed=k,
            recoverable=worst >= k and not problem,
            problem=problem,
        )


@functools.lru_cache(maxsize=32)
def _codec(data_shards: int, parity_shards: int, codec: int) -> ErasureCodec:
    # Shared across shard sets of one layout, so pyeclib's per-thread drivers are built once.
    return ErasureCodec(data_shards, parity_shards, codec)


def memory_sources(
    shards: Sequence[bytes | None], present: Sequence[bool] | None
) -> list[ShardSource | None]:
    if isinstance(shards, bytes | bytearray | memoryview | str) or not isinstance(shards, Sequence):
        raise ConfigError(
            "reconstruct() takes a list of shards (bytes, or None for a missing shard), as "
            f"returned by process(); got {type(shards).__name__}"
        )
    if present is not None and len(present) != len(shards):
        raise ConfigError(
            f"present has {len(present)} entries but there are {len(shards)} shards; give one "
            "flag per shard"
        )
    check_shard_types(shards)
    return [
        None if shard is None or (present is not None and not present[i]) else BytesSource(shard)
        for i, shard in enumerate(shards)
    ]


def check_shard_types(shards: Sequence[Any]) -> None:
    """Refuse, before any work, a shard that is neither None nor contiguous bytes-like data.

    Damaged bytes count as a missing shard; a str or another object is a caller's mistake, and
    calling it damage would only say "0 bytes" about data that was never bytes at all.
    """
    wrong: dict[str, list[int]] = {}
    for i, shard in enumerate(shards):
        if shard is None:
            continue
        if not isinstance(shard, str):
            try:
                with memoryview(shard) as view:
                    if view.c_contiguous:
                        continue
                    kind = f"non-contiguous {type(shard).__name__}"
            except TypeError:
                kind = type(shard).__name__
        else:
            kind = "str"
        wrong.setdefault(kind, []).append(i)
    if not wrong:
        return
    given = "; ".join(f"{_positions(at, len(shards))} {kind}" for kind, at in wrong.items())
    hint = (
        " (shards are binary: read shard files in binary mode; if you stored them as text, "
        "e.g. hex or base64, decode them back to bytes first)"
        if "str" in wrong
        else ""
    )
    raise ConfigError(
        f"each shard must be bytes, bytearray or a contiguous memoryview (or None for a missing "
        f"shard), as process() returns them; but {given}{hint}"
    )


def _positions(at: list[int], total: int) -> str:
    if len(at) == total:
        return f"all {total} shards are" if total > 1 else "the shard is"
    listed = ", ".join(map(str, at[:8])) + (", ..." if len(at) > 8 else "")
    return f"shard {listed} is" if len(at) == 1 else f"shards {listed} are"
