"""``benchmarks/pit_join.py --quick``: our point-in-time join equals a brute-force reference.

Speed is not asserted (the machine is shared and noisy); the row-by-row equality is.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_pit_join_quick_matches_the_brute_force_reference() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/pit_join.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["identical"] is True and figures["reference_identical"] is True
    assert figures["rows"] == 20_000 and figures["reference_rows"] == 20_000
    assert figures["features"] >= 30
    # the data must exercise the semantics: equal timestamps, TTL edges, nulls
    assert figures["equal_ts_rows"] > 0 and figures["ttl_edge_rows"] > 0
    assert 0 < figures["null_share"] < 1
    assert figures["ours_s"] > 0 and figures["ours_peak_mb"] > 0
    assert figures["feast_s"] is None and figures["speedup"] is None
