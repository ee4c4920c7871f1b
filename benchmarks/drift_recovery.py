"""Drift → detection → retraining → recovery, in simulated time, through the platform's own jobs.

    .venv/bin/python benchmarks/drift_recovery.py [--quick] [--seed N]

Simulates ``days`` days (full: 45 days, 1,200 users, switch at day 30; quick: 43 days, 500
users, switch at day 36; both serve the 7 days before the switch, the history the daily drift
check compares a day with) with
``fraud-platform simulate --drift-at``'s drift, on a private broker, data directory, Dagster
instance and Redis database. The simulation ends at today's UTC midnight, as the demo's does.

How the platform is driven (in process, on one Dagster instance, in simulated time; a "step"
is one day around the switch, a few days later on: ``Plan.steps``):
* the step's events are published to Kafka; ``ingest_job`` (bronze + dbt) runs; then
  ``feature_refresh_job`` over the partitions its events made stale (the range
  ``stale_feature_partitions_sensor`` would request, computed with its own functions);
* the champion scores the step's transactions with ``ScoringModel`` (the service's scoring
  class) on the point-in-time lookups (each group's raw values known before the transaction,
  what the online store serves; the service computes the request features from them); the
  decisions go through ``DecisionLog`` to the ``scores`` topic and ``decision_log_job`` ingests
  them; ``daily_monitoring_job`` runs on each of the step's days, in order (what
  ``daily_monitoring_schedule`` runs each night);
* ``retrain_on_drift_sensor`` is evaluated (``dg.build_sensor_context``) and its run request,
  with its run config, runs ``retrain_job``; ``retrain_schedule``'s ``retrain_job`` (daily
  defaults) runs after every step in full mode (once per step, not per day: the machine is
  small); quick mode runs only the sensor's retrains; full mode's first training (day 22) uses
  the drift retrain's split (22 days hold too little history for the daily split), quick's
  (day 28) the daily defaults;
* ``run_records_sensor`` is evaluated after every run.

``--control``: the same simulation and steps without the switch (no drift check may fail).

Figures: detect_days (days of drifted traffic up to and including the first day a daily drift
check FAILed; WARN is reported, not counted), per_day (each monitored day's checks), AP on the
post-switch test window (the last ``test_days``, ground-truth labels) of the pre-drift champion
(stale), of the champion at the start of the window (retrained) and of a model trained with
the ground truth of every transaction before the window (ceiling); recovery_ratio =
retrained / ceiling.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from _common import BENCH_REDIS_URL, PG_SERVER, REPO_ROOT, admin_pg, emit, free_port, redis_client

# the daily drift checks; "flagged" = FAIL (ERROR severity: what retrain_on_drift_sensor acts on)
DRIFT_CHECKS = ("daily_features_have_not_drifted", "daily_scores_have_not_drifted")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class Plan:
    days: int
    drift_at: int
    users: int
    steps: tuple[tuple[int, int], ...]  # [first, end) day ranges published and served together
    schedule_retrain: bool  # retrain_schedule's run after every step
    initial_recovery_split: bool  # first training on the recovery split: history too short

    @property
    def window(self) -> int:
        """First day of the post-switch test window (the days after the last step)."""
        return self.steps[-1][1]


FULL = Plan(days=45, drift_at=30, users=1200,
            steps=((23, 30), (30, 31), (31, 34), (34, 37), (37, 42)),
            schedule_retrain=True, initial_recovery_split=True)  # fmt: skip
# quick's first training waits for 29 days of history and uses the daily split (7-day maturity,
# 5 test days): on 22 days and the recovery split its test part held 7 frauds, and the gate's
# verdict flipped with the date the world ends on (2026-12-06: AP 0.159 on one code, 0.032 on
# the next; 3-5 test days on the same data gave 0.004-0.24 by split)
QUICK = Plan(days=43, drift_at=36, users=500, steps=((29, 36), (36, 37), (37, 40)),
             schedule_retrain=False, initial_recovery_split=False)  # fmt: skip


def flagged(checks: dict[str, dict]) -> bool:
    return any(c["status"] == "FAIL" for c in checks.values())


def say(message: str) -> None:
    print(message, flush=True)


def finite(value: float) -> float | None:
    return None if value != value else value


def promotion_decision(result) -> dict | None:
    """The promotion gate's decision in a retrain run (promoted, or kept with both models'
    metric on the same rows), or None when the run stopped before it."""
    from fraud_platform.defs.serving.assets import GATE_CHECK

    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == GATE_CHECK:
            found = {k: v.value for k, v in evaluation.metadata.items()}
            metric = found["metric"]
            return {
                "decision": found["decision"],
                "reason": found["reason"],
                "metric": metric,
                "margin": found["margin"],
                "challenger": finite(found[f"challenger_{metric}"]),
                "champion": finite(found[f"champion_{metric}"]),  # None: no champion yet
                "rows": found["rows"],
                "positives": found["positives"],
            }
    return None


class Platform:
    """The platform's jobs and sensors on one instance, driven day by day."""

    def __init__(self, instance, bootstrap: str, start: datetime) -> None:
        import dagster as dg

        from fraud_platform.tools.pipeline import load_definitions

        self.dg = dg
        self.instance = instance
        self.bootstrap = bootstrap
        self.start = start
        self.defs = load_definitions()
        self.drift_cursor: str | None = None
        self.records_cursor: str | None = None
        self.retrains: list[dict] = []
        self.run_records = 0

    def day_start(self, day: int) -> datetime:
        return self.start + timedelta(days=day)

    def _run(self, job_name: str, **kwargs):
        job = self.defs.resolve_job_def(job_name)
        kwargs["run_config"] = {**QUIET, **kwargs.get("run_config", {})}
        result = job.execute_in_process(instance=self.instance, raise_on_error=False, **kwargs)
        failures = [e for e in result.all_events if e.is_step_failure]
        for event in failures:
            text = (
                event.step_failure_data.error.to_string() if event.step_failure_data.error else ""
            )
            if "blocking asset check" not in text:
                raise RuntimeError(f"{job_name}: step {event.step_key} failed:\n{text}")
        self.tick_run_records()
        return result

    def ingest(self, simulation, since: datetime, until: datetime) -> None:
        from fraud_platform.defs.features.jobs import first_new_event_date, stale_partition_range
        from fraud_platform.lib.simulation import publish

        publish(simulation, self.bootstrap, since=since, until=until)
        ingested = self._run("ingest_job")
        last_day = (until - timedelta(days=1)).date().isoformat()
        first, end = stale_partition_range(
            first_new_event_date(self.instance, ingested.run_id), last_day
        )
        self._run(
            "feature_refresh_job",
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": end,
            },
        )

    def serve(self, simulation, since: datetime, until: datetime) -> int:
        """The champion's decisions on the transactions of [since, until), into bronze/scores:
        each request is the transaction event as published, its looked-up features the
        point-in-time row of the feature tables."""
        from fraud_platform import names
        from fraud_platform.lib.features.pit import point_in_time_join
        from fraud_platform.lib.features.services import FRAUD_SCORING_V1 as SERVICE
        from fraud_platform.lib.serving.decision_log import DecisionLog
        from fraud_platform.lib.serving.lookup import Lookup
        from fraud_platform.lib.serving.scoring import (
            TRANSACTION_FIELDS,
            ScoringModel,
            decision_event,
        )
        from fraud_platform.lib.training.backtest import in_range

        store, delta, warehouse = self.resources()
        tag = store.champion(names.MODEL_NAME)
        if tag is None:
            raise RuntimeError("no champion to serve: the first training did not pass its gates")
        model = ScoringModel.from_metadata(
            store.load_catboost(tag), store.get(tag).info.metadata, tag, explain="never"
        )
        groups = {g.versioned_name: delta.read(names.feature_table(g.versioned_name))
                  for g in SERVICE.groups}  # fmt: skip
        # what the online store serves: each group's values known before the transaction
        # (raw: last-seen times, profile fields), from which the service computes the request
        # features itself
        selected = in_range(warehouse.table("fct_transactions"), since, until)
        lookups = point_in_time_join(selected, SERVICE.groups, groups).to_dicts()
        published = {t["transaction_id"]: t for t in simulation.transactions
                     if since <= t["event_time"] < until}  # fmt: skip
        txns = [{k: published[row["transaction_id"]].get(k) for k in TRANSACTION_FIELDS}
                for row in lookups]  # fmt: skip
        results = model.score_many(txns, lookups)
        with DecisionLog(self.bootstrap) as log:
            for txn, result in zip(txns, results, strict=True):
                log.append(
                    decision_event(
                        request_id=f"bench-{txn['transaction_id']}",
                        scored_at=txn["event_time"],
                        txn=txn,
                        result=result,
                        lookup=Lookup(values={}, age_seconds={}),
                        feature_service=SERVICE.name,
                    )
                )
        self._run("decision_log_job")
        return len(txns)

    def monitor(self, served_date: date) -> dict[str, dict]:
        """``daily_monitoring_job`` on the partition ``served_date`` (what
        ``daily_monitoring_schedule`` runs the next night): each check's status and figure."""
        result = self._run(
            "daily_monitoring_job", partition_key=served_date.isoformat(), run_config={}
        )
        outcomes = {}
        for event in result.get_asset_check_evaluations():
            meta = {k: v.value for k, v in event.metadata.items()}
            outcomes[event.check_name] = {
                "status": meta.get("status"),
                "value": meta.get("value"),
                "threshold": meta.get("threshold"),
                "drifted_columns": meta.get("drifted_columns"),
                "reference": meta.get("reference"),
            }
        return outcomes

    def tick_drift_sensor(self, label: str) -> bool:
        from fraud_platform.defs.serving.retraining import retrain_on_drift_sensor

        context = self.dg.build_sensor_context(instance=self.instance, cursor=self.drift_cursor)
        result = retrain_on_drift_sensor(context)
        self.drift_cursor = result.cursor
        for request in result.run_requests:
            self.retrain(label, trigger="drift", tags=request.tags, run_config=request.run_config)
        return bool(result.run_requests)

    def retrain(self, label: str, trigger: str, **kwargs) -> None:
        from fraud_platform import names
        from fraud_platform.defs.training.assets import QUALITY_CHECK

        started = time.perf_counter()
        before = self.resources()[0].champion(names.MODEL_NAME)
        result = self._run("retrain_job", **kwargs)
        after = self.resources()[0].champion(names.MODEL_NAME)
        # the promotion gate's verdict and figures: a retrain it stops is the platform refusing
        # a model below the minimum quality (e.g. trained a day after the switch), not an error
        gate = next(
            (
                {"passed": e.passed, **{k: v.value for k, v in e.metadata.items()}}
                for e in result.get_asset_check_evaluations()
                if e.check_name == QUALITY_CHECK
            ),
            None,
        )
        self.retrains.append(
            {
                "day": label,
                "trigger": trigger,
                "completed": result.success,
                "promoted": after != before,
                "champion": after,
                "gate": gate,
                "promotion": promotion_decision(result),
                "seconds": round(time.perf_counter() - started, 1),
            }  # fmt: skip
        )
        verdict = (
            ""
            if gate is None
            else (
                f" (gate {'passed' if gate['passed'] else 'FAILED'}: test AUC "
                f"{gate['test_auc_roc']:.3f}, AP {gate['test_average_precision']:.3f})"
            )
        )
        say(f"  retrain ({trigger}) day {label}: champion {before} -> {after}{verdict}")

    def tick_run_records(self) -> None:
        from fraud_platform.defs.notifications.run_records import run_records_sensor

        _, delta, _ = self.resources()
        context = self.dg.build_sensor_context(
            instance=self.instance, cursor=self.records_cursor, resources={"delta": delta}
        )
        result = run_records_sensor(context)
        if isinstance(result, self.dg.SensorResult):
            self.records_cursor = result.cursor
            self.run_records += len(result.asset_events)

    def resources(self):
        from fraud_platform.lib.storage.delta import DeltaStore
        from fraud_platform.resources import ModelStoreResource, WarehouseResource
        from fraud_platform.settings import Settings

        settings = Settings.from_env()
        delta = DeltaStore(settings.delta_uri)
        store = ModelStoreResource(home=str(settings.bentoml_home), delta=delta)
        return store, delta, WarehouseResource(path=str(settings.warehouse_path))


def window_ap(platform: Platform, simulation, since: datetime, until: datetime, tags: list[str],
              ceiling) -> dict[str, float]:  # fmt: skip
    """AP with ground-truth labels on the transactions of [since, until) for each model."""
    import polars as pl

    from fraud_platform import names
    from fraud_platform.lib.features.services import FRAUD_SCORING_V1 as SERVICE
    from fraud_platform.lib.model.input import predict_proba
    from fraud_platform.lib.training.backtest import pit_rows
    from fraud_platform.lib.training.metrics import average_precision

    store, delta, warehouse = platform.resources()
    groups = {g.versioned_name: delta.read(names.feature_table(g.versioned_name))
              for g in SERVICE.groups}  # fmt: skip
    rows = pit_rows(warehouse.table("fct_transactions"), groups, SERVICE, since, until)
    truth = simulation.fraud_type_by_transaction
    y = [t in truth for t in rows["transaction_id"].to_list()]
    from fraud_platform.lib.features.training_frame import model_frame

    frame = pl.concat([rows.select("transaction_id"), model_frame(rows, SERVICE)], how="horizontal")
    out = {tag: average_precision(y, predict_proba(store.load_catboost(tag), frame))
           for tag in tags}  # fmt: skip
    out["ceiling"] = average_precision(y, predict_proba(ceiling, frame))
    out["rows"], out["frauds"] = len(y), sum(y)
    return out


def train_ceiling(platform: Platform, simulation, until: datetime):
    """A model that knows the truth of every transaction before ``until`` (no label delay,
    no maturity): same features, same trainer, a 1-day validation split at the end."""
    import polars as pl

    from fraud_platform import names
    from fraud_platform.lib.features.services import FRAUD_SCORING_V1 as SERVICE
    from fraud_platform.lib.features.training_frame import build_training_frame
    from fraud_platform.lib.training.fit import TrainConfig, time_split, train_model

    _, delta, warehouse = platform.resources()
    truth = simulation.fraud_type_by_transaction
    txns = warehouse.table("fct_transactions").filter(pl.col("event_time") < until)
    labelled = txns.with_columns(
        pl.col("transaction_id").is_in(list(truth)).alias("is_fraud"),
        pl.col("transaction_id").replace_strict(truth, default=None).alias("fraud_type"),
    ).sort("event_time", "transaction_id")
    groups = {g.versioned_name: delta.read(names.feature_table(g.versioned_name))
              for g in SERVICE.groups}  # fmt: skip
    frame = build_training_frame(labelled, groups, SERVICE)
    config = replace(TrainConfig(), test_days=1.0, validation_days=1.0, gap_days=0.0)
    split = time_split(frame, config)
    split = replace(split, train=pl.concat([split.train, split.test]))
    return train_model(split, SERVICE.numeric_features, list(SERVICE.categorical_features), config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--control", action="store_true", help="the same simulation without the drift switch"
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    wall = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="drift_recovery_"))
    os.environ.update({
        "FRAUD_PLATFORM_DATA_DIR": str(tmp / "data"),
        "REDIS_URL": BENCH_REDIS_URL,
    })  # fmt: skip
    database = f"drift_bench_{os.getpid()}"  # a private profiles source on the shared server
    admin_pg(f"CREATE DATABASE {database}")
    os.environ["FRAUD_PLATFORM_PROFILES_PG_URL"] = f"{PG_SERVER}/{database}"
    from fraud_platform.defs.serving.retraining import RECOVERY_RUN_CONFIG
    from fraud_platform.lib.contracts.events import ALL_TOPICS
    from fraud_platform.lib.kafka.admin import ensure_topics
    from fraud_platform.lib.simulation import SimulationConfig, simulate
    from fraud_platform.settings import Settings
    from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
    from fraud_platform.tools.instance import prepare_dagster_home

    redis = redis_client()
    redis.flushdb()
    spec = BrokerSpec("noida", free_port(), tmp / "broker")
    start_broker(spec)
    bootstrap = f"127.0.0.1:{spec.port}"
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    try:
        ensure_topics(bootstrap, list(ALL_TOPICS))
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=plan.days)
        config = SimulationConfig(days=plan.days, users=plan.users, seed=args.seed,
                                  drift_at=None if args.control else plan.drift_at,
                                  start=start)  # fmt: skip
        simulation = simulate(config)
        from fraud_platform.tools.demo import seed_simulated_profiles

        if not seed_simulated_profiles(Settings.from_env(), args.seed, plan.users, start, say):
            raise SystemExit("the benchmark needs PostgreSQL at " + PG_SERVER)
        say(f"simulated {len(simulation.transactions):,} transactions, "
            f"{len(simulation.fraud_type_by_transaction):,} frauds; switch at day {plan.drift_at}")  # fmt: skip
        import dagster as dg

        prepare_dagster_home(Settings.from_env())
        instance = dg.DagsterInstance.get()
        platform = Platform(instance, bootstrap, start)

        first_step = plan.steps[0][0]
        say(f"days 0..{first_step - 1}: ingest, features, first training")
        platform.ingest(simulation, start, platform.day_start(first_step))
        initial = {"run_config": RECOVERY_RUN_CONFIG} if plan.initial_recovery_split else {}
        platform.retrain(str(first_step - 1), trigger="initial", **initial)
        detect_day, per_day, stale = None, {}, None
        for day, last in plan.steps:
            since, until = platform.day_start(day), platform.day_start(last)
            step = time.perf_counter()
            if day == plan.drift_at:
                stale = platform.resources()[0].champion("fraud_catboost")
            platform.ingest(simulation, since, until)
            served = platform.serve(simulation, since, until)
            for d in range(day, last):
                checks = platform.monitor(platform.day_start(d).date())
                per_day[d] = {n: c for n, c in checks.items() if n in DRIFT_CHECKS}
                if flagged(per_day[d]) and d >= plan.drift_at and detect_day is None:
                    detect_day = d
                say(f"day {d}: " + "; ".join(
                    f"{n} {c['status']} {c['value']} (threshold {c['threshold']}, "
                    f"{c.get('reference') or 'validation period'})"
                    for n, c in per_day[d].items()))  # fmt: skip
            label = f"{day}" if last == day + 1 else f"{day}..{last - 1}"
            say(f"days {label}: served {served} ({time.perf_counter() - step:.0f}s)")
            platform.tick_drift_sensor(label)
            if plan.schedule_retrain:
                platform.retrain(label, trigger="schedule",
                                 tags={"dagster/schedule_name": "retrain_schedule"})  # fmt: skip
        window = plan.window
        retrained = platform.resources()[0].champion("fraud_catboost")
        say(f"test window: days {window}..{plan.days - 1}")
        platform.ingest(simulation, platform.day_start(window), platform.day_start(plan.days))
        ceiling = train_ceiling(platform, simulation, platform.day_start(window))
        aps = window_ap(platform, simulation, platform.day_start(window),
                        platform.day_start(plan.days), [stale, retrained], ceiling)  # fmt: skip
        switch = plan.days if args.control else plan.drift_at
        pre_switch_alarm = [d for d, c in per_day.items() if d < switch and flagged(c)]
        results = {
            "quick": args.quick,
            "users": plan.users,
            "days": plan.days,
            "drift_at": plan.drift_at,
            "window_days": plan.days - plan.window,
            "control": args.control,
            # days of drifted traffic up to and including the first day a drift check failed
            "detect_days": (detect_day - plan.drift_at + 1) if detect_day is not None else None,
            "false_alarm_before_switch": bool(pre_switch_alarm),
            "false_alarm_days": pre_switch_alarm,
            "monitored_days": len(per_day),
            "stale_champion": stale,
            "retrained_champion": retrained,
            "stale_ap": round(aps[stale], 4),
            "retrained_ap": round(aps[retrained], 4),
            "ceiling_ap": round(aps["ceiling"], 4),
            "recovery_ratio": round(aps[retrained] / aps["ceiling"], 4) if aps["ceiling"] else None,
            "stale_ratio": round(aps[stale] / aps["ceiling"], 4) if aps["ceiling"] else None,
            "window_rows": aps["rows"],
            "window_frauds": aps["frauds"],
            "retrains": platform.retrains,
            "per_day": {
                str(d): {
                    n: {k: c[k] for k in ("status", "value", "threshold", "reference")}
                    | ({"drifted": c["drifted_columns"]} if c.get("drifted_columns") else {})
                    for n, c in checks.items()
                }
                for d, checks in sorted(per_day.items())
            },
            "run_records": platform.run_records,
            "seconds": round(time.perf_counter() - wall, 1),
        }
        kind = ("quick" if args.quick else "full") + (", control" if args.control else "")
        emit(results, [f"drift recovery benchmark ({kind})"])
        return 0
    finally:
        stop_broker(spec)
        redis.flushdb()
        admin_pg(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if os.environ.get("DRIFT_RECOVERY_KEEP") != "1":  # 1.4 GB after a full run
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp} (its Dagster instance can be browsed)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
