"""Pure code (no Dagster imports): contracts, simulator, features, training, scoring."""
