"""Run the asset graph in-process, layer by layer, with progress: what the CLI and the demo use.

It runs the same ``Definitions`` the Dagster UI loads, on the same instance (DAGSTER_HOME), so
runs started here show up in the UI's run history and asset catalog.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from fraud_platform.defs.transform.project import DBT_PROJECT_DIR, dbt_executable
from fraud_platform.tools.layers import LAYERS

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def prepare_dbt_manifest() -> None:
    """``dbt parse`` so ``@dbt_assets`` can read target/manifest.json at import."""
    subprocess.run(
        [
            dbt_executable(),
            "parse",
            "--quiet",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        check=True,
    )


def dagster_dev_command(port: int) -> list[str]:
    """``dagster dev`` on this project's workspace, bound to localhost."""
    workspace = DBT_PROJECT_DIR.parent / "workspace.yaml"
    return [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(workspace),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]


def env_with_venv_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's bin first on PATH: dagster-dbt's ``prepare_if_dev()``
    under ``dagster dev`` runs the ``dbt`` found on PATH, even without an activated venv."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def load_definitions() -> dg.Definitions:
    from fraud_platform.definitions import defs

    return defs()


@dataclass
class LayerResult:
    layer: str
    seconds: float
    assets: list[str]
    peak_rss_mb: float = 0.0
    """This process's peak resident memory during the layer (layers run in process)."""
    metadata: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Failed checks of WARN severity: reported outcomes (e.g. a refused promotion), not errors."""
    blocked: list[str] = field(default_factory=list)
    """Failed blocking checks of ERROR severity: what they gate did not run."""


_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> None:
    """Start a new peak for ``peak_rss_mb``: Linux resets VmHWM when "5" is written to
    ``/proc/self/clear_refs``. Without it every layer after the biggest one would report that
    one's peak. A no-op where the file is missing or not writable."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's peak resident set size since the last ``reset_peak_rss``, in MiB
    (VmHWM; the whole life's ``ru_maxrss`` where /proc is missing; Linux reports KiB)."""
    with contextlib.suppress(OSError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()
        }
    return out


def _check_results(
    result: dg.ExecuteInProcessResult,
) -> tuple[dict[str, bool], list[str], list[str]]:
    """Every check's outcome, the failed ones of WARN severity and the failed blocking ones."""
    checks: dict[str, bool] = {}
    warnings: list[str] = []
    blocked: list[str] = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            name = f"{data.asset_key.to_user_string()}:{data.check_name}"
            checks[name] = data.passed
            if not data.passed and data.severity == dg.AssetCheckSeverity.WARN:
                warnings.append(name)
            elif not data.passed and data.blocking:
                blocked.append(name)
    return checks, warnings, blocked


def _config_for(run_config: dict, keys: Sequence[dg.AssetKey]) -> dict:
    """Dagster rejects config for ops outside the selection: keep only the selected ones."""
    names = {key.to_python_identifier() for key in keys}
    ops = {name: value for name, value in run_config["ops"].items() if name in names}
    return (
        {**run_config, "ops": ops} if ops else {k: v for k, v in run_config.items() if k != "ops"}
    )


class LayerFailed(RuntimeError):
    """A step of a layer failed for another reason than a blocking quality gate."""


def _raise_unless_only_gated(result: dg.ExecuteInProcessResult, layer: str) -> None:
    """A failed blocking check is an outcome (the gate did its job: nothing downstream ran);
    any other step failure stops the pipeline with the step's error."""
    if result.success:
        return
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            text = error.to_string() if error else ""
            if "blocking asset check" not in text:
                raise LayerFailed(f"layer {layer}: step {event.step_key} failed:\n{text}")


@contextlib.contextmanager
def _captured_stdout(log_dir: Path | None, layer: str) -> Iterator[None]:
    if log_dir is None:
        yield
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{layer}.log").open("a") as log, contextlib.redirect_stdout(log):
        yield


def _whole_history_tags(
    layer: str, on_progress: Callable[[str], None], partitions_from: str | None = None
) -> dict[str, str]:
    """Run tags for one single-run backfill over every date partition the data covers (from
    ``partitions_from`` on, when given)."""
    from fraud_platform.defs.features.assets import history_partition_range
    from fraud_platform.defs.partitions import EventsOutsidePartitions
    from fraud_platform.resources import WarehouseResource
    from fraud_platform.settings import Settings

    warehouse = WarehouseResource(path=str(Settings.from_env().warehouse_path))
    try:
        bounds = history_partition_range(warehouse)
    except EventsOutsidePartitions as exc:
        raise LayerFailed(f"layer {layer}: {exc}") from None
    if bounds is None:
        raise LayerFailed(f"layer {layer}: the silver tables hold no events to compute from")
    if partitions_from is not None:
        bounds = (max(bounds[0], partitions_from), bounds[1])
    on_progress(f"  partitions {bounds[0]} .. {bounds[1]}")
    return {
        "dagster/asset_partition_range_start": bounds[0],
        "dagster/asset_partition_range_end": bounds[1],
    }


def run_layers(
    instance: dg.DagsterInstance,
    layers: Sequence[str] = tuple(LAYERS),
    *,
    defs: dg.Definitions | None = None,
    on_progress: Callable[[str], None] = print,
    log_dir: Path | None = None,
    asset_config: dict[str, dict] | None = None,
    partitions_from: str | None = None,
) -> list[LayerResult]:
    """Materialize each layer (a Dagster asset group) in order; raise on the first failure.

    With ``log_dir``, what tools print while a layer runs (dbt's log lines) goes to
    ``<log_dir>/<layer>.log`` instead of the terminal. Date-partitioned assets run as one
    backfill over the partitions the data covers, from ``partitions_from`` (ISO date) on if given.
    """
    defs = defs or load_definitions()
    run_config = {
        **QUIET_LOGS,
        "ops": {
            dg.AssetKey.from_user_string(key).to_python_identifier(): {"config": config}
            for key, config in (asset_config or {}).items()
        },
    }
    job = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    results: list[LayerResult] = []
    for index, layer in enumerate(layers, start=1):
        selected = [
            key
            for key in graph.get_all_asset_keys()
            if graph.get(key).group_name in LAYERS[layer] and graph.get(key).is_materializable
        ]
        keys = selected
        tags = {"fraud_platform/layer": layer}
        if any(graph.get(key).is_partitioned for key in keys):
            tags.update(_whole_history_tags(layer, on_progress, partitions_from))
        on_progress(f"[{index}/{len(layers)}] {layer}: materializing {len(keys)} assets ...")
        started = time.perf_counter()
        reset_peak_rss()
        with _captured_stdout(log_dir, layer):
            result = job.execute_in_process(
                instance=instance,
                asset_selection=keys,
                run_config=_config_for(run_config, keys),
                raise_on_error=False,
                tags=tags,
            )
        seconds = time.perf_counter() - started
        _raise_unless_only_gated(result, layer)
        layer_result = LayerResult(
            layer=layer,
            seconds=seconds,
            peak_rss_mb=peak_rss_mb(),
            assets=sorted(k.to_user_string() for k in keys),
            metadata=_materializations(result),
        )
        layer_result.checks, layer_result.warnings, layer_result.blocked = _check_results(result)
        failed = [
            name
            for name, ok in layer_result.checks.items()
            if not ok and name not in layer_result.warnings
        ]
        on_progress(
            f"[{index}/{len(layers)}] {layer}: done in {seconds:.1f}s"
            + (f" (failed checks: {', '.join(failed)})" if failed else "")
            + (f" (warnings: {', '.join(layer_result.warnings)})" if layer_result.warnings else "")
        )
        results.append(layer_result)
    return results
