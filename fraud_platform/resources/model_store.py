"""The model registry: BentoML's model store, plus a champion pointer per model name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

CHAMPION_FILE = "champions.json"
HISTORY_FILE = "champion_history.json"
PROMOTION_LOG_FILE = "promotion_log.json"


def _without_nulls(value: Any) -> Any:
    """BentoML metadata takes basic types only: drop undefined (None) entries, recursively."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value if v is not None]
    return value


class ModelStoreResource(dg.ConfigurableResource):
    """BentoML model store rooted at ``home`` (the scoring service reads the same folder)."""

    home: str

    def _activate(self) -> None:
        import bentoml  # noqa: F401  (configures the container before we point it at `home`)
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.models import ModelStore

        Path(self.home, "models").mkdir(parents=True, exist_ok=True)
        BentoMLContainer.bentoml_home.set(self.home)
        BentoMLContainer.model_store.set(ModelStore(os.path.join(self.home, "models")))

    def save_catboost(
        self, name: str, model: Any, *, metadata: dict[str, Any], labels: dict[str, str]
    ) -> str:
        """Register a CatBoost model; returns its tag (``name:version``)."""
        self._activate()
        import bentoml

        saved = bentoml.catboost.save_model(
            name,
            model,
            metadata=_without_nulls(metadata),
            labels=labels,
            signatures={"predict_proba": {"batchable": True}},
        )
        return str(saved.tag)

    def get(self, tag: str) -> Any:
        self._activate()
        import bentoml

        return bentoml.models.get(tag)

    def load_catboost(self, tag: str) -> Any:
        self._activate()
        import bentoml

        return bentoml.catboost.load_model(tag)

    def list(self, name: str | None = None) -> list[Any]:
        self._activate()
        import bentoml

        models = bentoml.models.list(name)
        return sorted(models, key=lambda m: m.info.creation_time, reverse=True)

    def _champions_path(self) -> Path:
        return Path(self.home, CHAMPION_FILE)

    def champion(self, name: str) -> str | None:
        path = self._champions_path()
        if not path.exists():
            return None
        return json.loads(path.read_text()).get(name)

    def _history_path(self) -> Path:
        return Path(self.home, HISTORY_FILE)

    def history(self, name: str) -> list[str]:
        """Champions of ``name`` in promotion order, the current one last."""
        path = self._history_path()
        return json.loads(path.read_text()).get(name, []) if path.exists() else []

    def promote(self, tag: str) -> None:
        """Point the champion of the model's name at ``tag`` (atomic file replace)."""
        tag = str(self.get(tag).tag)  # fails loudly on an unknown tag; resolves "name:latest"
        name = tag.split(":")[0]
        if self.champion(name) == tag:
            return
        self._write(self._champions_path(), name, tag)
        self._write_history(name, [*self.history(name), tag])

    def rollback(self, name: str) -> str:
        """Make the previous champion the champion again; returns its tag."""
        history = self.history(name)
        if len(history) < 2:
            raise ValueError(
                f"{name} has no previous champion to roll back to (history: {history})"
            )
        previous = history[-2]
        self.get(previous)
        self._write(self._champions_path(), name, previous)
        self._write_history(name, history[:-1])
        return previous

    def _promotion_log_path(self) -> Path:
        return Path(self.home, PROMOTION_LOG_FILE)

    def promotion_log(self, name: str) -> list[dict[str, Any]]:
        """Every promotion-gate decision for ``name``, oldest first."""
        path = self._promotion_log_path()
        return json.loads(path.read_text()).get(name, []) if path.exists() else []

    def record_decision(self, name: str, decision: dict[str, Any]) -> None:
        """Append one gate decision (promoted or not) to ``promotion_log.json``."""
        self._write(self._promotion_log_path(), name, [*self.promotion_log(name), decision])

    def _write_history(self, name: str, tags: list[str]) -> None:
        self._write(self._history_path(), name, tags)

    @staticmethod
    def _write(path: Path, name: str, value: Any) -> None:
        content = json.loads(path.read_text()) if path.exists() else {}
        content[name] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(content, indent=2))
        tmp.replace(path)
