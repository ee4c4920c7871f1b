"""Realized performance per decision day, for the served model and a challenger in shadow.

* ``monitoring/shadow_scores``: the challenger (newest registered model that is not the
  champion) scores the day's logged traffic from the features logged with each decision; its
  scores and the policy's decisions go to the Delta table of that name, never to a caller.
* ``monitoring/daily_realized_performance``: the day's decisions (served and shadow) joined with
  the labels known so far; AP, precision / recall at the review budget, frauds caught and money
  lost per decision outcome and channel; one row per day and model role. Re-materialize a day
  later and more labels are known: ``label_coverage`` marks how mature a partition is.
"""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from fraud_platform import names
from fraud_platform.defs.monitoring.daily import (
    DECISION_PARTITIONS,
    GROUP,
    SCORES_KEY,
    model_versions,
    partition_day,
)
from fraud_platform.defs.monitoring.verdicts import check_result
from fraud_platform.lib import plots
from fraud_platform.lib.contracts.events import LABELS
from fraud_platform.lib.monitoring import charts
from fraud_platform.lib.monitoring.daily_tables import (
    DATE_COLUMN,
    read_day,
    read_days,
    read_labels_since,
    write_day,
)
from fraud_platform.lib.monitoring.decisions import read_decisions
from fraud_platform.lib.monitoring.realized import (
    DECISION_COLUMNS,
    known_labels,
    label_coverage,
    performance,
    with_labels,
)
from fraud_platform.lib.monitoring.shadow import SHADOW_SCHEMA, challenger_tag, shadow_score
from fraud_platform.lib.monitoring.verdict import judge, not_judged
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import HELDOUT_STAGE, MODEL_NAME
from fraud_platform.resources import ModelStoreResource

SHADOW_KEY = dg.AssetKey(names.SHADOW_SCORES_TABLE.split("/"))
REALIZED_KEY = dg.AssetKey(names.DAILY_REALIZED_PERFORMANCE_TABLE.split("/"))
REALIZED_CHECK = "realized_ap_holds_up"
SERVED, SHADOW = "served", "shadow"


@dg.asset(
    key=SHADOW_KEY,
    group_name=GROUP,
    partitions_def=DECISION_PARTITIONS,
    deps=[SCORES_KEY, dg.AssetKey(names.CHAMPION_ASSET.split("/"))],
    kinds={"catboost", "delta"},
)
def shadow_scores(
    context: dg.AssetExecutionContext,
    delta: dg.ResourceParam[DeltaStore],
    model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """The challenger scored in shadow on one decision day's logged traffic (the features the
    service logged with each decision, the served policy with the challenger's thresholds);
    the day's partition of monitoring/shadow_scores is replaced. Never served."""
    day = partition_day(context)
    decisions = read_decisions(delta, day, day)
    champion = model_store.champion(MODEL_NAME)
    # a refit's held-out twin only defends it at the gate: never a challenger
    registered = [
        str(m.tag)
        for m in model_store.list(MODEL_NAME)
        if m.info.labels.get("stage") != HELDOUT_STAGE
    ]
    tag = challenger_tag(registered, champion)
    if tag is None or decisions.is_empty():
        write_day(delta, names.SHADOW_SCORES_TABLE, day, pl.DataFrame(schema=SHADOW_SCHEMA))
        note = "no challenger registered" if tag is None else f"no decisions on {day}"
        return dg.MaterializeResult(
            metadata={"dagster/row_count": 0, "challenger": tag or "", "note": note}
        )
    metadata = dict(model_store.get(tag).info.metadata)
    result = shadow_score(model_store.load_catboost(tag), tag, metadata, decisions)
    version = write_day(delta, names.SHADOW_SCORES_TABLE, day, result.scores)
    scores = result.scores
    agree = float((scores["decision"] == scores["served_decision"]).mean())
    counts = scores.group_by("decision").len().sort("decision")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scores.height,
            "challenger": tag,
            "champion": champion or "",
            "served_model_versions": dg.MetadataValue.json(model_versions(decisions)),
            "decisions": dg.MetadataValue.json(dict(counts.iter_rows())),
            "agreement_with_served": agree,
            "features_missing_from_log": dg.MetadataValue.json(result.features_missing_from_log),
            "table_version": version,
        }
    )


class RealizedConfig(dg.Config):
    ap_margin: float = 0.1
    """Fail when the served model's realized AP is below its test AP minus this margin."""
    warn_ap_margin: float = 0.05
    """Warn when it is below test AP minus this (smaller) margin."""
    min_fraud_labels: int = 20
    """Judge AP only with at least this many known frauds among the day's decisions."""
    review_budget_per_day: int = 50
    maturity_days: float = 7.0
    """Label maturity (as training uses it): a day is fully labelled this long after it."""


def _markdown(by_role: dict[str, dict]) -> str:
    header = "| model | rows | fraud labels | AP | precision@budget | recall@budget | caught | money lost |"
    lines = [header, "|" + "---|" * 8]
    for role, perf in by_role.items():
        lines.append(
            f"| {role} | {perf['rows']:,} | {perf['fraud_labels']} | {_fmt(perf['average_precision'])} "
            f"| {_fmt(perf['precision_at_budget'])} | {_fmt(perf['recall_at_budget'])} "
            f"| {perf['frauds_caught']} ({perf['fraud_amount_caught']:,.2f}) "
            f"| {perf['frauds_approved']} ({perf['money_lost']:,.2f}) |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@dg.asset(
    key=REALIZED_KEY,
    group_name=GROUP,
    partitions_def=DECISION_PARTITIONS,
    deps=[SCORES_KEY, SHADOW_KEY, dg.AssetKey(names.BRONZE_TABLES[LABELS].split("/"))],
    kinds={"delta"},
    check_specs=[
        dg.AssetCheckSpec(
            REALIZED_CHECK,
            asset=REALIZED_KEY,
            description=(
                "The served model's realized AP on the day (labels known so far) holds up "
                "against its test AP: FAIL below test AP - ap_margin, WARN below test AP - "
                "warn_ap_margin; not judged with fewer than min_fraud_labels known frauds."
            ),
        )
    ],
)
def daily_realized_performance(
    context: dg.AssetExecutionContext,
    config: RealizedConfig,
    delta: dg.ResourceParam[DeltaStore],
    model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """How one decision day's decisions turned out with the labels known now, for the served
    model and the challenger in shadow: AP, precision/recall at the review budget, frauds
    caught and money lost (fraud amount approved) per decision outcome and channel. Labels
    mature: re-materialize the day later for more; label_coverage marks how mature it is."""
    day = partition_day(context)
    as_of = datetime.now(UTC)
    decisions = read_decisions(delta, day, day)
    labels = known_labels(read_labels_since(delta, day), as_of)
    coverage = label_coverage(day, as_of, config.maturity_days)
    frames = {SERVED: decisions.select(DECISION_COLUMNS) if decisions.height else None}
    shadow = read_day(delta, names.SHADOW_SCORES_TABLE, day)
    shadow_tag = shadow["model_tag"][0] if shadow.height else None
    frames[SHADOW] = shadow.select(DECISION_COLUMNS) if shadow.height else None
    by_role = {
        role: performance(with_labels(frame, labels), config.review_budget_per_day)
        for role, frame in frames.items()
        if frame is not None
    }
    versions = model_versions(decisions)
    served_tag = next(iter(versions), None)
    test_ap = None
    if served_tag:
        test_ap = (
            model_store.get(served_tag).info.metadata.get("metrics", {}).get("average_precision")
        )
    served = by_role.get(SERVED)
    floor = test_ap - config.ap_margin if test_ap is not None else float("nan")
    warn_floor = test_ap - config.warn_ap_margin if test_ap is not None else None
    if served is None or test_ap is None:
        why = (
            "no decisions on this day"
            if served is None
            else f"no test AP registered for {served_tag}"
        )
        verdict = not_judged(
            "realized_average_precision", why, floor, warn_floor, higher_is_worse=False
        )
    elif served["fraud_labels"] < config.min_fraud_labels or served["average_precision"] is None:
        why = (
            f"{served['fraud_labels']} known frauds among {served['rows']} decisions, fewer than "
            f"min_fraud_labels={config.min_fraud_labels} (label coverage {coverage:.0%})"
        )
        verdict = not_judged(
            "realized_average_precision", why, floor, warn_floor, higher_is_worse=False
        )
    else:
        verdict = judge(
            "realized_average_precision",
            served["average_precision"],
            floor,
            warn_floor,
            higher_is_worse=False,
        )
    rows = pl.DataFrame(
        [
            {
                DATE_COLUMN: day,
                "model_role": role,
                "model_tag": (served_tag if role == SERVED else shadow_tag) or "",
                "rows": perf["rows"],
                "fraud_labels": perf["fraud_labels"],
                "legit_labels": perf["legit_labels"],
                "unlabelled": perf["unlabelled"],
                "average_precision": perf["average_precision"],
                "precision_at_budget": perf["precision_at_budget"],
                "recall_at_budget": perf["recall_at_budget"],
                "frauds_caught": perf["frauds_caught"],
                "fraud_amount_caught": perf["fraud_amount_caught"],
                "money_lost": perf["money_lost"],
                "label_coverage": coverage,
                "labels_as_of": as_of,
                "status": verdict.status if role == SERVED else "",
            }
            for role, perf in by_role.items()
        ],
        schema_overrides={
            "average_precision": pl.Float64,
            "precision_at_budget": pl.Float64,
            "recall_at_budget": pl.Float64,
            "labels_as_of": pl.Datetime("us", "UTC"),
        },
    )
    version = (
        write_day(delta, names.DAILY_REALIZED_PERFORMANCE_TABLE, day, rows) if rows.height else None
    )
    history = read_days(delta, names.DAILY_REALIZED_PERFORMANCE_TABLE)
    plot = charts.realized_png(
        by_role, test_ap, None if test_ap is None else floor, f"{day}: {verdict.summary}"
    )
    over_time = None
    if history.height:
        days = sorted({d.isoformat() for d in history[DATE_COLUMN].to_list()})
        series = {}
        for role in (SERVED, SHADOW):
            part = {
                r[DATE_COLUMN].isoformat(): r["average_precision"]
                for r in history.filter(pl.col("model_role") == role).iter_rows(named=True)
            }
            series[f"{role} AP"] = [part.get(d) for d in days]
        coverage_by_day = {
            r[DATE_COLUMN].isoformat(): r["label_coverage"] for r in history.iter_rows(named=True)
        }
        series["label coverage"] = [coverage_by_day.get(d) for d in days]
        over_time = charts.over_time_png(
            days,
            series,
            thresholds={"fail": None if test_ap is None else floor, "reference": test_ap},
            title=f"Realized AP over time (labels as of {as_of:%Y-%m-%d %H:%M} UTC); {day}: {verdict.summary}",
            ylabel="AP / label coverage",
        )
    figures = {
        "label_coverage": coverage,
        "labels_matured": coverage >= 1.0,
        "labels_as_of": as_of.isoformat(),
        "served_model": served_tag or "",
        "shadow_model": shadow_tag or "",
        "test_average_precision": test_ap,
        "fraud_labels": served["fraud_labels"] if served else 0,
    }
    check = check_result(
        verdict,
        check_name=REALIZED_CHECK,
        asset_key=REALIZED_KEY,
        metadata={**figures, "served": dg.MetadataValue.json(served or {})},
        plot=plot,
    )
    metadata = {
        **verdict.metadata(),
        **figures,
        "dagster/row_count": decisions.height,
        "table": dg.MetadataValue.md(_markdown(by_role)) if by_role else "no decisions",
        "performance": dg.MetadataValue.json(by_role),
        "table_version": version if version is not None else -1,
        "performance_plot": dg.MetadataValue.md(plots.png_markdown(plot, verdict.summary)),
    }
    if over_time is not None:
        metadata["realized_over_time"] = dg.MetadataValue.md(
            plots.png_markdown(over_time, "Realized AP over time")
        )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])
