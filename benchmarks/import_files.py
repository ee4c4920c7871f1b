"""Import of a team's own history: Parquet files into bronze (``fraud-platform import``).

Writes a thin card data set (transaction id, time, card, terminal, amount, fraud flag; 180 days)
as Parquet, imports it into a fresh bronze table, then imports it again. Prints events/s of the
import, of a plain read of the same files (polars) and of a deltalake write of the resulting rows
alone with the import's Parquet settings (the floor: the import cannot be faster than
writing its output), same run, the dead letters (0.1% of the
rows are made invalid on purpose) and what the re-import added (must be 0).

    python benchmarks/import_files.py [--quick]      # 1.2M rows; --quick: 200k
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import write_deltalake

from fraud_platform.lib.contracts.events import EVENT_DATE_COLUMN, TRANSACTIONS
from fraud_platform.lib.ingestion.import_mapping import load_mapping
from fraud_platform.lib.ingestion.importer import bronze_writer_properties, import_files
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import DEAD_LETTER_TABLE, bronze_table

MAPPING = {
    "transaction_id": "TRANSACTION_ID",
    "event_time": "TX_DATETIME",
    "card_id": "CUSTOMER_ID",
    "merchant_id": "TERMINAL_ID",
    "amount": "TX_AMOUNT",
}
START = datetime(2025, 4, 1, tzinfo=UTC)


def thin_dataset(rows: int, seed: int = 1) -> pl.DataFrame:
    """A card data set with only card, terminal, amount and time (like the issue's)."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 180 * 86_400, rows))
    amounts = np.round(rng.gamma(2.0, 30.0, rows) + 0.01, 2)
    amounts[rng.random(rows) < 0.001] = -5.0  # invalid on purpose: dead letters
    return pl.DataFrame(
        {
            "TRANSACTION_ID": np.arange(rows, dtype=np.int64),
            "TX_DATETIME": pl.Series(seconds * 1_000_000).cast(pl.Datetime("us"))
            + (START.replace(tzinfo=None) - datetime(1970, 1, 1)),
            "CUSTOMER_ID": rng.integers(0, 50_000, rows),
            "TERMINAL_ID": rng.integers(0, 10_000, rows),
            "TX_AMOUNT": amounts,
            "TX_FRAUD": (rng.random(rows) < 0.01).astype(np.int8),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = 200_000 if args.quick else 1_200_000
    files = 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "history"
        folder.mkdir()
        frame = thin_dataset(rows)
        per_file = rows // files
        for index in range(files):
            frame.slice(index * per_file, per_file).write_parquet(folder / f"part-{index}.parquet")
        store = DeltaStore(str(Path(tmp) / "delta"))
        mapping = load_mapping(TRANSACTIONS, columns=MAPPING, defaults={"currency": "EUR"})
        # Warm-up on 1,000 rows elsewhere: lazy imports of the process (this machine sets
        # PYTHONDONTWRITEBYTECODE, so they compile from source, ~5 s) are not per-event work.
        warm = Path(tmp) / "warm.parquet"
        thin_dataset(1_000, seed=9).write_parquet(warm)
        import_files(TRANSACTIONS, warm, mapping, DeltaStore(str(Path(tmp) / "warm")))
        started = time.perf_counter()
        read_rows = pl.concat([pl.read_parquet(f) for f in sorted(folder.iterdir())]).height
        read_s = time.perf_counter() - started
        result = import_files(TRANSACTIONS, folder, mapping, store, progress=print)
        again = import_files(TRANSACTIONS, folder, mapping, store, progress=print)
        bronze_rows = store.row_count(bronze_table(TRANSACTIONS))
        dead = store.row_count(DEAD_LETTER_TABLE)
        # The floor: the same bronze rows written by deltalake alone (partitioned the same way,
        # the same Parquet settings), after a warm-up write (deltalake's first write in a
        # process starts its runtime).
        rows_arrow = store.open(bronze_table(TRANSACTIONS)).to_pyarrow_table()
        properties = bronze_writer_properties(TRANSACTIONS)
        write_deltalake(str(Path(tmp) / "floor_warm"), rows_arrow.slice(0, 1000))
        started = time.perf_counter()
        write_deltalake(
            str(Path(tmp) / "floor"),
            rows_arrow,
            partition_by=[EVENT_DATE_COLUMN],
            writer_properties=properties,
        )
        write_s = time.perf_counter() - started
    figures = {
        "events": result.rows,
        "import_s": round(result.elapsed_s, 3),
        "import_events_per_s": round(result.rows / result.elapsed_s),
        "read_only_events_per_s": round(read_rows / read_s),
        "delta_write_only_events_per_s": round(result.rows / write_s),
        "ratio_to_delta_write": round(write_s / result.elapsed_s, 3),
        "accepted": result.accepted,
        "dead_letters": result.rejected,
        "bronze_rows": bronze_rows,
        "dead_letter_rows": dead,
        "reimport_added": again.accepted + again.rejected,
        "reimport_s": round(again.elapsed_s, 3),
    }
    print(
        f"imported {result.rows:,} rows in {result.elapsed_s:.2f}s "
        f"({figures['import_events_per_s']:,} events/s; a plain read of the same files: "
        f"{figures['read_only_events_per_s']:,}/s, a deltalake write of the rows alone: "
        f"{figures['delta_write_only_events_per_s']:,}/s); re-import added {figures['reimport_added']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
