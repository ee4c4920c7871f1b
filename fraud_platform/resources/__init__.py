"""Dagster resources: one ConfigurableResource per external system."""

from fraud_platform.resources.delta import DeltaResource
from fraud_platform.resources.files import AlertResource, FilesResource
from fraud_platform.resources.kafka import KafkaResource
from fraud_platform.resources.model_store import ModelStoreResource
from fraud_platform.resources.notifier import NotifierResource
from fraud_platform.resources.postgres import ProfilesSourceResource
from fraud_platform.resources.redis import RedisResource
from fraud_platform.resources.warehouse import WarehouseResource

__all__ = [
    "AlertResource",
    "FilesResource",
    "DeltaResource",
    "KafkaResource",
    "ModelStoreResource",
    "NotifierResource",
    "ProfilesSourceResource",
    "RedisResource",
    "WarehouseResource",
]
