"""Resource wiring only. The settings are read here, at load time, never at import time."""

import dagster as dg
from dagster_dbt import DbtCliResource

from fraud_platform.defs.transform.project import dbt_executable, dbt_project
from fraud_platform.resources import (
    AlertResource,
    DeltaResource,
    FilesResource,
    KafkaResource,
    ModelStoreResource,
    NotifierResource,
    ProfilesSourceResource,
    RedisResource,
    WarehouseResource,
)
from fraud_platform.settings import Settings


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    delta = DeltaResource(root=settings.delta_uri, storage_options=settings.delta_storage_options)
    return {
        "kafka": KafkaResource(bootstrap_servers=settings.kafka_bootstrap),
        "redis": RedisResource(url=settings.redis_url),
        "delta": delta,
        "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
        "model_store": ModelStoreResource(home=str(settings.bentoml_home), delta=delta),
        "files": FilesResource(root=str(settings.data_dir)),
        "alerts": AlertResource(
            log_path=str(settings.data_dir / "alerts.jsonl"),
            webhook_url=dg.EnvVar("FRAUD_PLATFORM_ALERT_WEBHOOK")
            if settings.alert_webhook
            else None,
        ),
        "notifier": NotifierResource(
            log_path=str(settings.data_dir / "alerts.jsonl"),
            ui_url=settings.ui_base_url,
            webhook_url=dg.EnvVar("FRAUD_PLATFORM_ALERT_WEBHOOK")
            if settings.alert_webhook
            else None,
        ),
        "profiles_pg": ProfilesSourceResource(url=settings.profiles_pg_url),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
