"""Quorum over replicas: table-driven cases and properties over random votes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgtlab.defaults import MAX_EXTRA_REPLICAS
from wgtlab.errors import ConfigError
from wgtlab.verify import QuorumDecision, quorum

X, Y, Z = "aa" * 32, "bb" * 32, "cc" * 32


def votes(*digests: str) -> list[tuple[str, str]]:
    return [(f"w{i}", d) for i, d in enumerate(digests)]


# (replicas, max_replicas, digests) -> (status, digest, agreed, dissented, extra_needed)
CASES = [
    # one replica: the single vote is the result
    (1, 1, [X], ("canonical", X, ("w0",), (), 0)),
    (1, 1, [], ("need_more", None, (), (), 1)),
    (1, 4, [], ("need_more", None, (), (), 1)),
    # two replicas: both must agree; a disagreement asks for a tie-breaker
    (2, 3, [X], ("need_more", None, (), (), 1)),
    (2, 3, [X, X], ("canonical", X, ("w0", "w1"), (), 0)),
    (2, 3, [X, Y], ("need_more", None, (), (), 1)),
    (2, 3, [X, Y, X], ("canonical", X, ("w0", "w2"), ("w1",), 0)),
    (2, 3, [X, Y, Y], ("canonical", Y, ("w1", "w2"), ("w0",), 0)),
    (2, 3, [X, Y, Z], ("failed", None, (), (), 0)),  # all different, cap reached
    (2, 2, [X, Y], ("failed", None, (), (), 0)),  # no room for a tie-breaker
    (2, 5, [X, Y, Z], ("need_more", None, (), (), 2)),  # X, X would make 3 of 5
    # three replicas: unanimity of three decides; two equal votes are not enough
    (3, 3, [], ("need_more", None, (), (), 3)),
    (3, 3, [X, X], ("need_more", None, (), (), 1)),
    (3, 5, [X, X, X], ("canonical", X, ("w0", "w1", "w2"), (), 0)),
    (3, 3, [X, Y], ("failed", None, (), (), 0)),  # 3 equal votes of 3 are out of reach
    (3, 3, [X, Y, X], ("failed", None, (), (), 0)),  # 2 of 3 agree: not 3 replicas
    (3, 5, [X, X, Y], ("need_more", None, (), (), 1)),  # dissent: X needs 3 of 4
    (3, 5, [X, X, Y, X], ("canonical", X, ("w0", "w1", "w3"), ("w2",), 0)),
    (3, 3, [X, Y, Z], ("failed", None, (), (), 0)),
    (3, 4, [X, Y, Z], ("failed", None, (), (), 0)),  # needs 2 more (3 of 5) > cap 4
    (3, 5, [X, Y, Z], ("need_more", None, (), (), 2)),
    (3, 5, [X, Y, Z, X], ("need_more", None, (), (), 1)),
    (3, 5, [X, Y, Z, X, X], ("canonical", X, ("w0", "w3", "w4"), ("w1", "w2"), 0)),
    (3, 5, [X, Y, Z, X, Y], ("failed", None, (), (), 0)),
    # two colluders agreeing on a lie among five: the lie never reaches 3 votes
    (3, 5, [Y, Y, X], ("need_more", None, (), (), 1)),  # one more Y could decide; none comes
    (3, 5, [Y, Y, X, X, X], ("canonical", X, ("w2", "w3", "w4"), ("w0", "w1"), 0)),
    # four replicas
    (4, 5, [X, X, Y, Y], ("failed", None, (), (), 0)),  # 4 X of 5 is out of reach
    (4, 5, [X, X, Y], ("need_more", None, (), (), 2)),  # X, X would make 4 of 5
    (4, 6, [X, Y, X, Y, Y], ("need_more", None, (), (), 1)),  # Y would make 4 of 6
    (4, 4, [X, X, X, Y], ("failed", None, (), (), 0)),  # 3 of 4 is not 4 replicas
    (4, 4, [X, X, X, X], ("canonical", X, ("w0", "w1", "w2", "w3"), (), 0)),
]


@pytest.mark.parametrize(("replicas", "cap", "digests", "expected"), CASES)
def test_quorum_table(replicas, cap, digests, expected):
    decision = quorum(votes(*digests), replicas=replicas, max_replicas=cap)
    got = (
        decision.status,
        decision.digest,
        decision.agreed,
        decision.dissented,
        decision.extra_needed,
    )
    assert got == expected
    assert decision.decided == (expected[0] != "need_more")


def test_failed_decision_shows_the_disagreement():
    decision = quorum(votes(X, Y, Z, Y), replicas=3, max_replicas=4)
    assert decision.status == "failed"
    assert decision.groups == ((Y, ("w1", "w3")), (X, ("w0",)), (Z, ("w2",)))


def test_default_cap_is_replicas_plus_max_extra():
    assert MAX_EXTRA_REPLICAS == 3
    for digests in ([X, Y], [X, Y, Z], [X, Y, Z, X], [X, Y, Z, "dd" * 32], [X, Y, X, Y, Z]):
        assert quorum(votes(*digests), replicas=2) == quorum(
            votes(*digests), replicas=2, max_replicas=5
        )
    assert quorum(votes(X, Y, Z), replicas=2).extra_needed == 2  # X, X would make 3 of 5


def test_decision_is_frozen():
    decision = quorum(votes(X), replicas=1, max_replicas=1)
    assert isinstance(decision, QuorumDecision)
    with pytest.raises(AttributeError):
        decision.status = "failed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("vote_list", "kwargs", "message"),
    [
        ([("a", X), ("a", X)], {"replicas": 2}, "voted twice"),
        ([("a", X), ("a", Y)], {"replicas": 2}, "voted twice"),
        ([], {"replicas": 0}, "replicas must be an int >= 1"),
        ([], {"replicas": True}, "replicas must be an int >= 1"),
        ([], {"replicas": 3, "max_replicas": 2}, "must be at least replicas"),
    ],
)
def test_bad_arguments(vote_list, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        quorum(vote_list, **kwargs)


# --- properties over random vote lists -------------------------------------------------------


def _would_decide(digests: list[str], replicas: int, cap: int) -> bool:
    return quorum(votes(*digests), replicas=replicas, max_replicas=cap).status == "canonical"


@st.composite
def elections(draw):
    replicas = draw(st.integers(1, 5))
    cap = draw(st.integers(replicas, replicas + 4))
    digests = draw(st.lists(st.sampled_from([X, Y, Z, "dd" * 32]), max_size=cap))
    return replicas, cap, digests


@settings(max_examples=400, deadline=None)
@given(elections(), st.randoms(use_true_random=False))
def test_quorum_properties(election, rnd):
    replicas, cap, digests = election
    decision = quorum(votes(*digests), replicas=replicas, max_replicas=cap)
    workers = {f"w{i}" for i in range(len(digests))}
    counts = {d: digests.count(d) for d in set(digests)}
    n = len(digests)
    # The plain definition: canonical iff some digest has at least ``replicas`` votes and they
    # are a strict majority of all votes.
    leaders = [d for d, c in counts.items() if c >= replicas and 2 * c > n]
    assert (decision.status == "canonical") == bool(leaders)
    assert sum(len(w) for _, w in decision.groups) == n
    if decision.status == "canonical":
        assert [decision.digest] == leaders
        assert set(decision.agreed) | set(decision.dissented) == workers
        assert not set(decision.agreed) & set(decision.dissented)
        assert all(digests[int(w[1:])] == decision.digest for w in decision.agreed)
        assert decision.extra_needed == 0
    top = max(counts.values(), default=0)
    best = max(counts, key=counts.get) if counts else X
    if decision.status == "need_more":
        k = decision.extra_needed
        assert 1 <= k <= cap - n
        # k more votes for the leader would decide; k - 1 of any kind could not
        assert _would_decide(digests + [best] * k, replicas, cap)
        assert k == 1 or not _would_decide(digests + [best] * (k - 1), replicas, cap)
    if decision.status == "failed":
        assert decision.digest is None and decision.extra_needed == 0
        # even filling every remaining replica with the leader could not decide
        assert top + cap - n < replicas or 2 * (top + cap - n) <= cap
    # A wrong digest never wins with fewer than ``replicas`` workers returning it.
    if decision.status == "canonical":
        assert counts[decision.digest] >= replicas
    # the order in which votes arrive does not matter
    shuffled = votes(*digests)
    rnd.shuffle(shuffled)
    again = quorum(shuffled, replicas=replicas, max_replicas=cap)
    assert (again.status, again.digest, again.extra_needed) == (
        decision.status,
        decision.digest,
        decision.extra_needed,
    )
    assert set(again.agreed) == set(decision.agreed)
