"""Card precision@k per day against a hand-worked example (values computed by hand below)."""

from datetime import UTC, datetime

import pytest

from fraud_platform.lib.training.card_precision import card_precision_at_k


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


# (card, time, is_fraud, score). k = 2.
# Day 1: cards by max score A 0.9 (fraud: its 0.2 txn), B 0.8, C 0.7 (fraud), D 0.1 (fraud).
#        Top 2 = A, B -> 1 compromised -> 1/2. Caught: {A}.
# Day 2: A 0.95 (fraud) is removed (caught). C 0.6 (fraud), E 0.5, F 0.4 (fraud).
#        Top 2 = C, E -> 1/2. Caught: {A, C}.
# Day 3: C 0.3 (fraud) removed. G 0.9 (fraud), H 0.85 (fraud), B 0.7 (its 23:00 txn is still day 3).
#        Top 2 = G, H -> 2/2. Caught: {A, C, G, H}.
# Day 4: J 0.2 (fraud) only -> 1 card reviewed, 1 caught, divided by k: 1/2.
# Mean (0.5 + 0.5 + 1.0 + 0.5) / 4 = 0.625.
ROWS = [
    ("A", _at(1), False, 0.9),
    ("A", _at(1, 13), True, 0.2),
    ("B", _at(1), False, 0.8),
    ("C", _at(1), True, 0.7),
    ("D", _at(1), True, 0.1),
    ("A", _at(2), True, 0.95),
    ("C", _at(2), True, 0.6),
    ("E", _at(2), False, 0.5),
    ("F", _at(2), True, 0.4),
    ("C", _at(3), True, 0.3),
    ("G", _at(3), True, 0.9),
    ("H", _at(3), True, 0.85),
    ("B", _at(3, 23), False, 0.7),
    ("J", _at(4, 0), True, 0.2),
]


def _run(rows, k: int):
    cards, times, y, scores = zip(*rows, strict=True)
    return card_precision_at_k(list(cards), list(times), list(y), list(scores), k=k)


def test_card_precision_at_k_hand_worked_days() -> None:
    result = _run(ROWS, k=2)
    assert [d.day for d in result.days] == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    assert [d.card_precision for d in result.days] == [0.5, 0.5, 1.0, 0.5]
    assert [d.cards for d in result.days] == [4, 3, 3, 1]
    assert [d.compromised_cards for d in result.days] == [3, 2, 2, 1]
    assert [d.reviewed for d in result.days] == [2, 2, 2, 1]
    assert [d.caught for d in result.days] == [1, 1, 2, 1]
    assert result.mean == pytest.approx(0.625)
    assert result.to_dict()["k"] == 2


def test_card_precision_at_k_removes_cards_caught_on_earlier_days_only() -> None:
    # Day 2 without day 1: A (0.95, fraud) is not yet caught, so top 2 = A, C -> 2/2.
    day_two = [row for row in ROWS if row[1].day == 2]
    assert _run(day_two, k=2).days[0].card_precision == 1.0


def test_card_precision_at_k_breaks_score_ties_by_card_id() -> None:
    rows = [("Y", _at(1), True, 0.5), ("X", _at(1), False, 0.5)]
    assert _run(rows, k=1).days[0].caught == 0  # X comes first; it is legitimate


def test_card_precision_at_k_refuses_rows_without_a_card() -> None:
    with pytest.raises(ValueError, match="card_id has 1 nulls"):
        card_precision_at_k([None], [_at(1)], [True], [0.5], k=1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        card_precision_at_k(["A"], [_at(1)], [True], [0.5], k=0)
