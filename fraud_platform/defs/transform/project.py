"""The dbt project's location, set in one place."""

import os
import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_project"
# Folders of the project that dbt writes, not sources of the manifest.
_GENERATED = {"target", "logs", "dbt_packages"}
PARTIAL_PARSE = "partial_parse.msgpack"


def dbt_executable() -> str:
    """The dbt next to this interpreter (works without an activated virtualenv)."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


def manifest_is_stale(project: DbtProject) -> bool:
    """True when ``manifest.json`` is missing or older than a file of the project."""
    if not project.manifest_path.exists():
        return True
    built = project.manifest_path.stat().st_mtime
    root = Path(project.project_dir)
    for folder, subfolders, files in os.walk(root):
        if Path(folder) == root:  # never walk what dbt writes (a target folder per dbt run)
            subfolders[:] = [name for name in subfolders if name not in _GENERATED]
        if any((Path(folder) / name).stat().st_mtime > built for name in files):
            return True
    return False


def keep_partial_parse(run_target: Path, project: DbtProject) -> None:
    """Make the partial-parse state of a finished dbt run the project's.

    dagster-dbt runs dbt in a fresh target folder seeded with the project's
    ``partial_parse.msgpack``; dbt reparses everything when that file was written under another
    profile (the warehouse path is part of it: ``dbt parse`` at set-up runs with the defaults).
    Kept here, the next run in the same environment parses only what changed."""
    source = Path(run_target) / PARTIAL_PARSE
    if not source.exists():
        return
    destination = Path(project.project_dir) / project.target_path / PARTIAL_PARSE
    staged = destination.with_name(f"{PARTIAL_PARSE}.{os.getpid()}")
    shutil.copyfile(source, staged)
    os.replace(staged, destination)  # atomic: a concurrent run copies the old or the new file


def remove_run_target(run_target: Path, project: DbtProject) -> None:
    """Delete the target folder of a finished dbt run (its manifest, compiled SQL, logs: ~5 MB).

    dagster-dbt leaves one per dbt command, so every ingestion run added one and the project
    folder grew without end; the results are in Dagster's event log. A failed run never gets
    here: its folder stays for a look at dbt's own log."""
    run_target = Path(run_target).resolve()
    if run_target.parent != (Path(project.project_dir) / project.target_path).resolve():
        raise ValueError(f"{run_target} is not a dbt run's folder under the project's target/")
    shutil.rmtree(run_target)


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under ``dagster dev`` every process that loads the code location (the code server, and every
# run worker) would run ``dbt parse`` (several seconds): only when the models changed.
if manifest_is_stale(dbt_project):
    dbt_project.prepare_if_dev()
