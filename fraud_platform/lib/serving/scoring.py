"""Scoring one transaction: model score, the decision policy, reasons.

``ScoringModel.score`` is the one scoring path. The BentoML service calls it per request, a
batch or backtest job calls it (or ``score_many``) on historical rows; both build the model
input with ``model_row`` (request.py) and feed it through ``predict_proba``, exactly as
training did.

The decision is the policy's (``policy.apply_policy``: thresholds, rules, degraded mode, all
stated in ``policy.py``), the same function evaluation, the promotion gate and backtests use.

Reasons: the top SHAP contributions (``top_reasons``) and the rule hits. For a CatBoost model
of oblivious trees the one-row path reads both the score and the approximate SHAP values from
the row's leaves (``OneRowPredictor``, ``fast_eval.LeafEvaluator``: ~25 us for the SHAP values
of a 400-tree model, against ~3-5 ms for CatBoost's own call); other models and
``shap_calc_type="Regular"`` go through ``top_reasons``. By default (``explain="flagged"``)
only transactions that are not approved are explained.

The online features come from ``lookup.FeatureLookup``. No BentoML or Dagster import here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from time import perf_counter
from typing import Any, Literal

from fraud_platform.lib.contracts.events import (
    EVENT_FIELDS,
    SCHEMA_VERSION,
    TRANSACTIONS,
    format_timestamp,
)
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.request import model_row
from fraud_platform.lib.features.services import FRAUD_SCORING_V1, service_for_model
from fraud_platform.lib.model.explain import reasons_from, top_reasons
from fraud_platform.lib.model.input import OneRowPredictor, predict_proba
from fraud_platform.lib.serving.lookup import Lookup
from fraud_platform.lib.serving.policy import (
    DEFAULT_RULES,
    Decision,
    Rule,
    RuleInput,
    Thresholds,
    apply_policy,
)

Explain = Literal["always", "flagged", "never"]
TRANSACTION_FIELDS: tuple[str, ...] = tuple(f.name for f in EVENT_FIELDS[TRANSACTIONS])


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
    row: Mapping[str, Any]  # the model input: request and looked-up features
    feature_names: tuple[str, ...]  # the model's
    model_tag: str
    degraded: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)  # model, explain, policy

    @cached_property
    def features(self) -> dict[str, Any]:
        """The model's features as the decision log records them (JSON values). Made when
        first read: the service reads it after the answer is sent (~30 us of the handler
        thread's time per request when made with the answer)."""
        return {name: _json_value(self.row.get(name)) for name in self.feature_names}


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
    _predict_one: OneRowPredictor = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "_predict_one", OneRowPredictor(self.model))

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
        stage_seconds: dict[str, float] | None = None,
        explained: Any = None,
    ) -> ScoreResult:
        stage_seconds = {} if stage_seconds is None else stage_seconds
        started = perf_counter()
        verdict = apply_policy(
            score, RuleInput(txn=txn, row=row, degraded=degraded), self.thresholds, self.rules
        )
        stage_seconds["policy"] = perf_counter() - started
        reasons: list[dict[str, Any]] = []
        if explain == "always" or (explain == "flagged" and verdict.decision != "approve"):
            started = perf_counter()
            reasons = [
                {
                    "kind": "model",
                    "name": r["feature"],
                    "value": _json_value(r["value"]),
                    "contribution": r["contribution"],
                }
                for r in self._top_reasons(row, explained)
            ]
            stage_seconds["explain"] = perf_counter() - started
        reasons += [
            {"kind": "rule", "name": rule.name, "action": rule.action, "detail": rule.description}
            for rule in verdict.hits
        ]
        return ScoreResult(
            score=score,
            decision=verdict.decision,
            model_decision=verdict.model_decision,
            reasons=reasons,
            rule_hits=verdict.rule_hits,
            row=row,
            feature_names=self.features,
            model_tag=self.tag,
            degraded=degraded,
            stage_seconds=stage_seconds,
        )

    def _top_reasons(self, row: dict[str, Any], explained: Any) -> list[dict[str, Any]]:
        """From the leaves the prediction found when it can (the same approximate SHAP values,
        checked when the evaluator was built), else CatBoost's own SHAP call."""
        if explained is not None and self.shap_calc_type == "Approximate":
            contributions, values, features = self._predict_one.contributions(explained)
            return reasons_from(contributions, values, features, self.reasons_k)
        return top_reasons(
            self.model,
            row,
            k=self.reasons_k,
            allow_missing=True,
            shap_calc_type=self.shap_calc_type,
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
        started = perf_counter()
        row = self._row(txn, looked_up)
        # = predict_proba(self.model, row, allow_missing=True)[0]
        score, explained = self._predict_one.predict(row)
        stages = {"model": perf_counter() - started}
        return self._finish(score, txn, row, degraded, explain or self.explain, stages, explained)

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


def decision_event(
    *,
    request_id: str,
    scored_at: datetime,
    txn: Mapping[str, Any],
    result: ScoreResult,
    lookup: Lookup,
    feature_service: str,
) -> dict[str, Any]:
    """The ``scores`` event of one decision (contract ``EVENT_FIELDS[SCORES]``; timestamps
    stay datetimes until ``encode_event``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "request_id": request_id,
        "scored_at": scored_at,
        **{name: _json_value(txn.get(name)) for name in TRANSACTION_FIELDS},
        "score": result.score,
        "decision": result.decision,
        "model_version": result.model_tag,
        "feature_service": feature_service,
        "degraded": lookup.degraded,
        "degraded_reason": lookup.degraded_reason,
        "features": result.features,
        "feature_age_s": lookup.age_seconds,
        "reasons": result.reasons,
    }
