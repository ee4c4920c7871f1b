#!/usr/bin/env bash
# Create/refresh the virtualenv from uv.lock and prepare the dbt manifest. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  python3 -m pip install --quiet uv
fi
UV="uv"; command -v uv >/dev/null 2>&1 || UV="python3 -m uv"
# Bytecode compiled once here: every Dagster run worker imports the code location (~2,000
# modules), and with PYTHONDONTWRITEBYTECODE set (or a read-only venv) each would compile them
# all from source again.
$UV sync --frozen --extra dev --quiet --compile-bytecode
.venv/bin/python -m compileall -q fraud_platform >/dev/null
.venv/bin/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project
