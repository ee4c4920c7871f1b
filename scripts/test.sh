#!/usr/bin/env bash
# Set up, then run every test: unit, dbt, integration (real Kafka-protocol brokers, Redis,
# PostgreSQL), serving (a real bentoml server) and UI (Dagster UI in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/pytest -p no:cacheprovider "$@"
