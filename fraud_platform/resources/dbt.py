"""dbt: dagster-dbt's CLI resource without the set-up it pays before every dbt command.

Not exported from ``fraud_platform.resources``: importing ``dagster_dbt`` pulls dbt-core's
classes in (~2 s), which only the code location needs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliResource
from packaging.version import Version


class DbtResource(DbtCliResource):
    """``DbtCliResource`` for the dbt-core installed beside this interpreter.

    Before each ``dbt build`` dagster-dbt runs ``dbt --version`` in a subprocess (a whole dbt
    start-up) and builds a dbt adapter in the run's own process (profile, project and every
    macro parsed): 5-7 s per ingestion run on 2 busy cores. The adapter serves only
    ``fetch_row_counts`` / ``fetch_column_metadata``, which the platform does not call, and the
    version is that of the dbt-core package when the executable is the one beside this
    interpreter. Any other executable gets dagster-dbt's own checks.
    """

    def _is_local_dbt(self) -> bool:
        return Path(self.dbt_executable) == Path(sys.executable).parent / "dbt"

    @cached_property
    def _cli_version(self) -> Version:
        if self._is_local_dbt():
            return Version(installed_version("dbt-core"))
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        if self._is_local_dbt():
            return None
        return super()._initialize_dbt_core_adapter(args)
