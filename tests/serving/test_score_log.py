"""The JSON-lines score log: writing from a background thread, reading into polars."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from fraud_platform.lib.serving.score_log import ScoreLog, log_file_name, read_score_log


def record(i: int, **overrides: Any) -> dict[str, Any]:
    base = {
        "request_id": f"r-{i}",
        "scored_at": f"2026-03-01T12:00:{i % 60:02d}.000000Z",
        "model_tag": "fraud_catboost:v1",
        "transaction": {
            "transaction_id": f"t-{i}",
            "event_time": "2026-03-01T11:59:59.500000Z",
            "user_id": "u-1",
            "card_id": "c-1",
            "merchant_id": "m-1",
            "merchant_category": "grocery",
            "amount": 10.0 + i,
            "currency": "EUR",
            "channel": "ecommerce",
            "counterparty_id": None,
            "device_id": "d-1",
            "ip": "203.0.113.7",
            "country": "DE",
        },
        "features": {"amount": 10.0 + i, "channel": "ecommerce", "user_txn_count_1h": i},
        "feature_age_s": {"card_velocity_v1": 12.5, "user_device_history_v1": None},
        "score": 0.01 * i,
        "decision": "approve",
        "degraded": False,
        "degraded_reason": None,
        "reasons": [{"kind": "rule", "name": "card_testing_burst", "action": "review"}],
    }
    base.update(overrides)
    return base


def test_score_log_file_is_per_process(tmp_path: Path):
    with ScoreLog(tmp_path) as log:
        assert log.path.parent == tmp_path
        assert log.path.name.startswith(f"scores-{os.getpid()}-")
        assert log.path.suffix == ".jsonl"
    assert log_file_name(12, datetime(2026, 3, 1, tzinfo=UTC)) == (
        "scores-12-20260301T000000000000Z.jsonl"
    )


@pytest.mark.parametrize("background", [True, False])
def test_score_log_writes_every_line_without_close(tmp_path: Path, background: bool):
    log = ScoreLog(tmp_path, background=background)
    for i in range(3):
        log.append(record(i))
    deadline = time.monotonic() + 2.0
    while log.path.read_text().count("\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = log.path.read_text().splitlines()  # visible to a reader while the log is open
    assert [json.loads(line)["request_id"] for line in lines] == ["r-0", "r-1", "r-2"]
    log.close()


@pytest.mark.parametrize("background", [True, False])
def test_score_log_flush_and_close_write_everything(tmp_path: Path, background: bool):
    log = ScoreLog(tmp_path, background=background)
    for i in range(2_500):
        log.append(record(i))
    log.flush()
    assert log.written == 2_500
    log.append(record(9_999))
    log.close()
    assert len(log.path.read_text().splitlines()) == 2_501
    with pytest.raises(RuntimeError, match="closed"):
        log.append(record(1))


def test_read_score_log_flattens_records(tmp_path: Path):
    with ScoreLog(tmp_path) as log:
        for i in range(3):
            log.append(record(i))
    frame = read_score_log(tmp_path)
    assert frame.height == 3
    assert frame["request_id"].to_list() == ["r-0", "r-1", "r-2"]
    assert frame.schema["scored_at"] == pl.Datetime("us", "UTC")
    assert frame.schema["event_time"] == pl.Datetime("us", "UTC")
    assert frame.schema["amount"] == pl.Float64
    assert frame["transaction_id"].to_list() == ["t-0", "t-1", "t-2"]
    assert frame["counterparty_id"].null_count() == 3
    assert frame["f_amount"].to_list() == [10.0, 11.0, 12.0]
    assert frame.schema["f_user_txn_count_1h"] == pl.Float64
    assert frame["f_channel"].to_list() == ["ecommerce"] * 3
    assert frame["age_s_card_velocity_v1"].to_list() == [12.5] * 3
    assert frame["age_s_user_device_history_v1"].null_count() == 3
    assert frame["reasons"].to_list()[0] == ["card_testing_burst"]
    assert json.loads(frame["reasons_json"][0])[0]["action"] == "review"
    assert frame["degraded"].to_list() == [False] * 3


def test_read_score_log_skips_a_torn_last_line(tmp_path: Path):
    path = tmp_path / "scores-1-20260301T000000000000Z.jsonl"
    full = json.dumps(record(1))
    path.write_text(full + "\n" + json.dumps(record(2))[:57])  # writer killed mid-line
    (tmp_path / "scores-2-20260301T000000000000Z.jsonl").write_text(json.dumps(record(3)) + "\n")
    frame = read_score_log(tmp_path)
    assert sorted(frame["request_id"].to_list()) == ["r-1", "r-3"]


def test_read_score_log_raises_on_a_corrupt_middle_line(tmp_path: Path):
    path = tmp_path / "scores-1-20260301T000000000000Z.jsonl"
    path.write_text(json.dumps(record(1)) + "\n{garbage\n" + json.dumps(record(2)) + "\n")
    with pytest.raises(ValueError, match=r"scores-1-.*:2: malformed"):
        read_score_log(tmp_path)


def test_read_score_log_of_empty_folder_has_the_columns(tmp_path: Path):
    frame = read_score_log(tmp_path)
    assert frame.height == 0
    assert {"request_id", "scored_at", "score", "decision", "transaction_id", "amount"} <= set(
        frame.columns
    )


def test_score_log_append_cost_is_small(tmp_path: Path):
    """The request path only queues: measure it (printed) and bound it loosely."""
    with ScoreLog(tmp_path) as log:
        rec = record(1)
        n = 5_000
        started = time.perf_counter()
        for _ in range(n):
            log.append(rec)
        per_append_us = (time.perf_counter() - started) / n * 1e6
        log.flush()
    print(f"\nScoreLog.append: {per_append_us:.1f} µs per record (queue put)")
    assert per_append_us < 200
