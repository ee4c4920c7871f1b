"""Scoring one transaction: model score, business rules, decision, reasons.

``ScoringModel.score`` is the one scoring path. The BentoML service calls it per request, a
batch or backtest job calls it (or ``score_many``) on historical rows; both build the model
input with ``model_row`` (request.py) and feed it through ``predict_proba``, exactly as
training did.

Decision = the most severe of
* the model's decision: ``score >= decline`` -> decline, ``score >= review`` -> review;
* every rule that fires (a rule is named, has an action and a description; its name appears in
  the reasons).

Reasons: the top SHAP contributions (``top_reasons``) and the rule hits. SHAP for one
row costs ~1 ms (Approximate) to ~5 ms (Regular) on a 400-tree model, against ~0.1 ms for the
prediction itself, so by default (``explain="flagged"``) only transactions that are not
approved are explained.

``FeatureLookup`` fetches the online features of one transaction and never raises: when Redis
fails or times out the answer is a degraded one (no looked-up features) and says why.

No BentoML or Dagster import here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from fraud_platform.lib.contracts.events import EVENT_FIELDS, TRANSACTIONS, format_timestamp
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.online.reader import OnlineFeatureReader
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.request import model_row
from fraud_platform.lib.features.services import FRAUD_SCORING_V1, service_for_model
from fraud_platform.lib.model.explain import top_reasons
from fraud_platform.lib.model.input import predict_proba

log = logging.getLogger(__name__)

Decision = Literal["approve", "review", "decline"]
Explain = Literal["always", "flagged", "never"]
DECISIONS: tuple[Decision, ...] = ("approve", "review", "decline")  # by increasing severity
_SEVERITY = {name: rank for rank, name in enumerate(DECISIONS)}
TRANSACTION_FIELDS: tuple[str, ...] = tuple(f.name for f in EVENT_FIELDS[TRANSACTIONS])

# Groups whose absence is information, not an outage: no row means "the user never paid from
# this device", "no fraud known at this merchant" (see catalog). Missing any other group makes
# the answer degraded.
ABSENCE_IS_SIGNAL: frozenset[str] = frozenset(
    g.versioned_name for g in FEATURE_GROUPS if g.absence_is_signal
)


# ---------------------------------------------------------------------------------------------
# thresholds and decision


@dataclass(frozen=True)
class Thresholds:
    """``score >= decline`` declines, ``score >= review`` sends to review."""

    review: float
    decline: float

    def __post_init__(self) -> None:
        for name in ("review", "decline"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {name!r} must be a number in [0, 1], got {value!r}")
        if self.decline < self.review:
            raise ValueError(
                f"decline threshold {self.decline} is below review threshold {self.review}"
            )

    @classmethod
    def of(cls, value: Thresholds | Mapping[str, Any]) -> Thresholds:
        if isinstance(value, Thresholds):
            return value
        missing = {"review", "decline"} - set(value)
        if missing:
            raise ValueError(f"thresholds need 'review' and 'decline'; missing {sorted(missing)}")
        return cls(review=float(value["review"]), decline=float(value["decline"]))

    def to_dict(self) -> dict[str, float]:
        return {"review": self.review, "decline": self.decline}


def decide(score: float, thresholds: Thresholds | Mapping[str, Any]) -> Decision:
    """The model's decision for ``score``: decline, review or approve."""
    limits = Thresholds.of(thresholds)
    if score >= limits.decline:
        return "decline"
    if score >= limits.review:
        return "review"
    return "approve"


def most_severe(*decisions: Decision) -> Decision:
    return max(decisions, key=_SEVERITY.__getitem__)


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class RuleInput:
    """What a rule sees: the transaction, the model row (request + looked-up features)."""

    txn: Mapping[str, Any]
    row: Mapping[str, Any]
    degraded: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    action: Literal["review", "decline"]
    description: str
    predicate: Callable[[RuleInput], bool]

    def fires(self, facts: RuleInput) -> bool:
        return bool(self.predicate(facts))


@dataclass(frozen=True)
class RuleConfig:
    """The limits the default rules use (amounts are in the transaction's currency)."""

    hard_limit_amount: float = 1_000.0
    recent_password_change_minutes: float = 60.0
    card_testing_small_txn_count_1h: int = 5
    recent_twofa_disabled_minutes: float = 60.0
    degraded_review_amount: float = 500.0


def _within(value: Any, minutes: float) -> bool:
    return value is not None and 0.0 <= value < minutes


def default_rules(config: RuleConfig | None = None) -> tuple[Rule, ...]:
    """Hard rules on top of the model. Each needs only the model row, so offline == online."""
    c = config or RuleConfig()
    return (
        Rule(
            name="large_amount_new_device_after_password_change",
            action="decline",
            description=(
                f"amount > {c.hard_limit_amount:g} from a device new to the user, less than "
                f"{c.recent_password_change_minutes:g} min after a password change"
            ),
            predicate=lambda f: (
                f.row["amount"] > c.hard_limit_amount
                and f.row.get("is_new_device_for_user") == 1
                and _within(
                    f.row.get("minutes_since_password_change"), c.recent_password_change_minutes
                )
            ),
        ),
        Rule(
            name="card_testing_burst",
            action="review",
            description=(
                f"{c.card_testing_small_txn_count_1h} or more small transactions on the card in "
                "the last hour"
            ),
            predicate=lambda f: (
                (f.row.get("card_small_txn_count_1h") or 0) >= c.card_testing_small_txn_count_1h
            ),
        ),
        Rule(
            name="withdrawal_after_twofa_disabled",
            action="review",
            description=(
                f"withdrawal less than {c.recent_twofa_disabled_minutes:g} min after 2FA was "
                "disabled"
            ),
            predicate=lambda f: (
                f.txn.get("channel") == "withdrawal"
                and _within(
                    f.row.get("minutes_since_twofa_disabled"), c.recent_twofa_disabled_minutes
                )
            ),
        ),
        Rule(
            name="degraded_large_amount",
            action="review",
            description=f"amount > {c.degraded_review_amount:g} scored without online features",
            predicate=lambda f: f.degraded and f.row["amount"] > c.degraded_review_amount,
        ),
    )


DEFAULT_RULES: tuple[Rule, ...] = default_rules()


# ---------------------------------------------------------------------------------------------
# the scoring model


@dataclass(frozen=True)
class ScoreResult:
    """One scored transaction."""

    score: float
    decision: Decision
    model_decision: Decision
    reasons: list[dict[str, Any]]
    rule_hits: list[str]
    features: dict[str, Any]
    model_tag: str
    degraded: bool = False


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value


@dataclass(frozen=True)
class ScoringModel:
    """A CatBoost model plus everything needed to turn a transaction into a decision."""

    model: Any  # catboost.CatBoostClassifier (or CatBoost) as loaded from the model store
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    thresholds: Thresholds
    tag: str
    rules: tuple[Rule, ...] = DEFAULT_RULES
    explain: Explain = "flagged"
    reasons_k: int = 3
    shap_calc_type: str = "Approximate"
    service: FeatureService = FRAUD_SCORING_V1
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", Thresholds.of(self.thresholds))
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "categorical", tuple(self.categorical))
        unknown = [f for f in self.features if f not in self.service.model_features]
        if unknown:
            raise ValueError(
                f"model {self.tag} uses features {unknown} that feature service "
                f"{self.service.name} does not provide"
            )
        model_features = list(getattr(self.model, "feature_names_", None) or [])
        if model_features and sorted(model_features) != sorted(self.features):
            raise ValueError(
                f"model {self.tag}: metadata features {list(self.features)} differ from the "
                f"features the CatBoost model was trained on {model_features}"
            )
        if self.explain not in ("always", "flagged", "never"):
            raise ValueError(f"explain must be always|flagged|never, got {self.explain!r}")

    @classmethod
    def from_metadata(
        cls, model: Any, metadata: Mapping[str, Any], tag: str, **options: Any
    ) -> ScoringModel:
        """Build from a model-store entry: metadata holds features, categorical_features,
        thresholds {review, decline} and the feature service it was trained on (v1 if none)."""
        required = ("features", "categorical_features", "thresholds")
        missing = [key for key in required if key not in metadata]
        if missing:
            raise ValueError(f"model {tag}: metadata lacks {missing}")
        return cls(
            model=model,
            features=tuple(metadata["features"]),
            categorical=tuple(metadata["categorical_features"]),
            thresholds=Thresholds.of(metadata["thresholds"]),
            tag=tag,
            metadata=dict(metadata),
            **{"service": service_for_model(metadata), **options},
        )

    # -- scoring ------------------------------------------------------------------------------

    def _row(self, txn: Mapping[str, Any], looked_up: Mapping[str, Any]) -> dict[str, Any]:
        return model_row(txn, looked_up, self.service)

    def _finish(
        self,
        score: float,
        txn: Mapping[str, Any],
        row: dict[str, Any],
        degraded: bool,
        explain: Explain,
    ) -> ScoreResult:
        model_decision = decide(score, self.thresholds)
        facts = RuleInput(txn=txn, row=row, degraded=degraded)
        hits = [rule for rule in self.rules if rule.fires(facts)]
        decision = most_severe(model_decision, *(rule.action for rule in hits))
        reasons: list[dict[str, Any]] = []
        if explain == "always" or (explain == "flagged" and decision != "approve"):
            reasons = [
                {
                    "kind": "model",
                    "name": r["feature"],
                    "value": _json_value(r["value"]),
                    "contribution": r["contribution"],
                }
                for r in top_reasons(
                    self.model,
                    row,
                    k=self.reasons_k,
                    allow_missing=True,
                    shap_calc_type=self.shap_calc_type,
                )
            ]
        reasons += [
            {"kind": "rule", "name": rule.name, "action": rule.action, "detail": rule.description}
            for rule in hits
        ]
        return ScoreResult(
            score=score,
            decision=decision,
            model_decision=model_decision,
            reasons=reasons,
            rule_hits=[rule.name for rule in hits],
            features={name: _json_value(row.get(name)) for name in self.features},
            model_tag=self.tag,
            degraded=degraded,
        )

    def score(
        self,
        txn: Mapping[str, Any],
        looked_up: Mapping[str, Any],
        *,
        degraded: bool = False,
        explain: Explain | None = None,
    ) -> ScoreResult:
        """Score one transaction (a validated contract record, ``event_time`` a datetime) given
        the features looked up for it (``{}`` when none could be)."""
        row = self._row(txn, looked_up)
        score = float(predict_proba(self.model, row, allow_missing=True)[0])
        return self._finish(score, txn, row, degraded, explain or self.explain)

    def score_many(
        self,
        txns: Sequence[Mapping[str, Any]],
        looked_ups: Sequence[Mapping[str, Any]],
        *,
        explain: Explain | None = None,
    ) -> list[ScoreResult]:
        """Batch/backtest scoring: one vectorised prediction, then rules and reasons per row."""
        if len(txns) != len(looked_ups):
            raise ValueError(f"{len(txns)} transactions but {len(looked_ups)} lookups")
        if not txns:
            return []
        rows = [self._row(t, lk) for t, lk in zip(txns, looked_ups, strict=True)]
        scores = predict_proba(self.model, rows, allow_missing=True)
        return [
            self._finish(float(s), t, r, False, explain or self.explain)
            for s, t, r in zip(scores, txns, rows, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "model_tag": self.tag,
            "features": list(self.features),
            "categorical_features": list(self.categorical),
            "thresholds": self.thresholds.to_dict(),
            "rules": [
                {"name": r.name, "action": r.action, "description": r.description}
                for r in self.rules
            ],
            "explain": self.explain,
        }


# ---------------------------------------------------------------------------------------------
# online lookup with degradation


@dataclass(frozen=True)
class Lookup:
    """Features found for one transaction and how fresh each group is."""

    values: dict[str, Any]
    age_seconds: dict[str, float | None]
    degraded_reason: str | None = None

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


class FeatureLookup:
    """Reads a feature service's groups for one transaction (one Redis round trip): the
    scoring model's service (``lookup(txn, scoring.service)``), else the one given here.

    Never raises on Redis trouble: the lookup comes back empty with a ``degraded_reason``. After
    a failure Redis is not tried again for ``retry_after_s``, so an outage costs one timeout per
    interval rather than one per request.
    """

    def __init__(
        self,
        client: Any,  # redis.Redis, built with a short socket timeout
        service: FeatureService = FRAUD_SCORING_V1,
        *,
        retry_after_s: float = 1.0,
        absence_is_signal: frozenset[str] = ABSENCE_IS_SIGNAL,
    ) -> None:
        self._client = client
        self._service = service
        self._reader = OnlineFeatureReader(client, service)
        self._retry_after_s = retry_after_s
        self._absence_is_signal = absence_is_signal
        self._skip_until = 0.0
        self._last_error = ""

    def _reader_for(self, service: FeatureService) -> OnlineFeatureReader:
        reader = self._reader  # one read: another thread may swap it meanwhile
        if reader.service is not service:  # a model pinned to another service was swapped in
            reader = self._reader = OnlineFeatureReader(self._client, service)
        return reader

    @staticmethod
    def _unavailable(reason: str, service: FeatureService) -> Lookup:
        groups = [g.versioned_name for g in service.groups]
        return Lookup(values={}, age_seconds=dict.fromkeys(groups), degraded_reason=reason)

    def lookup(self, txn: Mapping[str, Any], service: FeatureService | None = None) -> Lookup:
        """Features of ``service`` (default: this lookup's) known strictly before
        ``txn["event_time"]`` (point-in-time, as offline)."""
        service = service or self._service
        if time.monotonic() < self._skip_until:
            return self._unavailable(f"online store unavailable: {self._last_error}", service)
        try:
            online = self._reader_for(service).get_online_features(txn, now=txn["event_time"])
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades, loudly (logged)
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._skip_until = time.monotonic() + self._retry_after_s
            log.error("online feature lookup failed, scoring degraded: %s", self._last_error)
            return self._unavailable(f"online store unavailable: {self._last_error}", service)
        missing = [g for g in online.missing_groups if g not in self._absence_is_signal]
        reason = f"no online features for groups: {', '.join(missing)}" if missing else None
        return Lookup(values=online.values, age_seconds=online.age_seconds, degraded_reason=reason)


def log_record(
    *,
    request_id: str,
    scored_at: datetime,
    txn: Mapping[str, Any],
    result: ScoreResult,
    lookup: Lookup,
) -> dict[str, Any]:
    """The score-log record of one scored transaction (JSON-ready)."""
    return {
        "request_id": request_id,
        "scored_at": format_timestamp(scored_at),
        "model_tag": result.model_tag,
        "transaction": {name: _json_value(txn.get(name)) for name in TRANSACTION_FIELDS},
        "features": result.features,
        "feature_age_s": lookup.age_seconds,
        "score": result.score,
        "decision": result.decision,
        "degraded": lookup.degraded,
        "degraded_reason": lookup.degraded_reason,
        "reasons": result.reasons,
    }
