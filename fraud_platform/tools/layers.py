"""The layers ``fraud-platform materialize --layer`` runs: free of heavy imports, so the CLI
refuses an unknown name before importing Dagster."""

from __future__ import annotations

# Layer name -> asset groups run together. Training and serving share a run so the blocking
# quality check on the model gates the promotion in the same run; monitoring first ingests the
# service's decisions (bronze/scores) it profiles.
LAYERS: dict[str, tuple[str, ...]] = {
    "ingestion": ("ingestion",),
    "transform": ("transform",),
    "features": ("features",),
    "training": ("training", "serving"),
    "monitoring": ("decision_log", "monitoring"),
}
