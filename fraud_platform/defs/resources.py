"""Resource wiring only. The settings are read here, at load time, never at import time.

A value that can carry a password (the Redis and PostgreSQL URLs, the webhook, the object
store's options) is passed as ``dg.EnvVar`` whenever it came from the environment: Dagster then
resolves it when the resource is built and its UI shows the variable's name, not the value."""

import dagster as dg

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
from fraud_platform.resources.dbt import DbtResource
from fraud_platform.settings import Settings


def _secret(settings: Settings, variable: str, value: str | None) -> str | dg.EnvVar | None:
    """``dg.EnvVar(variable)`` when the variable is set, else the (password-free) default."""
    return dg.EnvVar(variable) if variable in settings.secrets_in_env else value


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    delta = DeltaResource(
        root=settings.delta_uri,
        storage_options={
            option: dg.EnvVar(variable) if variable else settings.delta_storage_options[option]
            for option in settings.delta_storage_options
            for variable in [settings.delta_option_variables.get(option)]
        },
    )
    webhook = _secret(settings, "FRAUD_PLATFORM_ALERT_WEBHOOK", None)
    return {
        "kafka": KafkaResource(bootstrap_servers=settings.kafka_bootstrap),
        "redis": RedisResource(
            url=_secret(settings, "REDIS_URL", settings.redis_url),
            ca_cert=settings.redis_ca_cert,
        ),
        "delta": delta,
        "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
        "model_store": ModelStoreResource(home=str(settings.bentoml_home), delta=delta),
        "files": FilesResource(root=str(settings.data_dir)),
        "alerts": AlertResource(
            log_path=str(settings.data_dir / "alerts.jsonl"), webhook_url=webhook
        ),
        "notifier": NotifierResource(
            log_path=str(settings.data_dir / "alerts.jsonl"),
            ui_url=settings.ui_base_url,
            webhook_url=webhook,
        ),
        "profiles_pg": ProfilesSourceResource(
            url=_secret(settings, "FRAUD_PLATFORM_PROFILES_PG_URL", settings.profiles_pg_url)
        ),
        "dbt": DbtResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
