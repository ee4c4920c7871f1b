"""Delta Lake storage: local folder or object store, one root for every table."""

from __future__ import annotations

import dagster as dg

from fraud_platform.lib.storage.delta import DeltaStore


class DeltaResource(dg.ConfigurableResource):
    """Where the Delta tables live. ``root`` is a path or an s3:// / gs:// / az:// URI.

    Assets receive the ``DeltaStore`` it builds: ``delta: dg.ResourceParam[DeltaStore]``."""

    root: str
    storage_options: dict[str, str] = {}

    def create_resource(self, context: dg.InitResourceContext) -> DeltaStore:
        return DeltaStore(self.root, dict(self.storage_options))
