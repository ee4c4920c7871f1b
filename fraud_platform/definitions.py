"""The one Definitions object: everything under ``defs/`` is loaded, nothing is wired by hand."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
