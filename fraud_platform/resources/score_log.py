"""The scoring service's log of every scored request (JSON lines, one file per process)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl


class ScoreLogResource(dg.ConfigurableResource):
    """Folder of ``*.jsonl`` files the scoring service appends to."""

    path: str

    def read(self) -> pl.DataFrame:
        from fraud_platform.lib.serving.score_log import read_score_log

        folder = Path(self.path)
        return read_score_log(folder) if folder.exists() else pl.DataFrame()
