"""Card precision@k per day: how many of the k cards a review team looks at each day are
compromised.

The definition of the Fraud Detection Handbook (Le Borgne, Siblini, Lebichot, Bontempi,
"Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook", section
"Card precision top-k"), for each UTC day in order:

1. the cards already caught (a compromised card among an earlier day's top k) are removed;
2. each remaining card gets the day's maximum score of its transactions, and is compromised
   that day when any of its transactions that day is a fraud;
3. the k cards with the highest scores are reviewed; card precision@k = compromised cards among
   them / k (divided by k even on a day with fewer than k cards, as in the Handbook);
4. the compromised cards among them are added to the caught cards.

The mean over the days is the headline figure. Ties in score are broken by card id, so the
result is deterministic (the Handbook leaves the order of ties to pandas' sort).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.training.metrics import day_index, day_iso, json_safe, labels_scores

DEFAULT_K = 100


@dataclass(frozen=True)
class CardPrecisionDay:
    day: str  # ISO date (UTC)
    cards: int  # cards with a transaction that day, caught ones removed
    compromised_cards: int  # of those, cards with a fraud that day
    reviewed: int  # min(k, cards)
    caught: int  # compromised cards among the reviewed
    card_precision: float  # caught / k


@dataclass(frozen=True)
class CardPrecision:
    k: int
    mean: float  # mean of the daily card precision (nan without days)
    days: list[CardPrecisionDay] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def card_precision_at_k(
    card_id: Any, event_time: Any, y_true: Any, scores: Any, k: int = DEFAULT_K
) -> CardPrecision:
    """Card precision@k per UTC day of ``event_time`` (aligned card ids, labels, scores)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    y, s = labels_scores(y_true, scores)
    cards = pl.Series("card_id", card_id, dtype=pl.String)
    if cards.len() != y.size:
        raise ValueError(f"card_id has {cards.len()} values, expected {y.size}")
    if cards.null_count():
        raise ValueError(f"card_id has {cards.null_count()} nulls: every row needs a card")
    per_card_day = (
        pl.DataFrame(
            {"card_id": cards, "day": day_index(event_time, y.size), "is_fraud": y, "score": s}
        )
        .group_by("day", "card_id")
        .agg(pl.col("score").max(), pl.col("is_fraud").any())
        .sort("day", pl.col("score"), "card_id", descending=[False, True, False])
    )
    caught: set[str] = set()
    days: list[CardPrecisionDay] = []
    for (day,), group in per_card_day.group_by("day", maintain_order=True):
        remaining = group.filter(~pl.col("card_id").is_in(list(caught)))
        top = remaining.head(k)
        found = top.filter(pl.col("is_fraud"))["card_id"].to_list()
        caught.update(found)
        days.append(
            CardPrecisionDay(
                day=day_iso(int(day)),  # type: ignore[arg-type]
                cards=remaining.height,
                compromised_cards=int(remaining["is_fraud"].sum()),
                reviewed=top.height,
                caught=len(found),
                card_precision=len(found) / k,
            )
        )
    mean = float(np.mean([d.card_precision for d in days])) if days else float("nan")
    return CardPrecision(k=k, mean=mean, days=days)


__all__ = ["DEFAULT_K", "CardPrecision", "CardPrecisionDay", "card_precision_at_k"]
