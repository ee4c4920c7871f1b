"""The model registry: BentoML's model store (the models) plus the registry record (the Delta
table ``registry/model_events``, ``lib/serving/registry.py``: registrations, gate decisions,
promotions, rollbacks; the champion is a query over it)."""

import os
from pathlib import Path
from typing import Any

import dagster as dg

from fraud_platform.lib.model.baseline import load_from_store, save_to_store
from fraud_platform.lib.serving import registry
from fraud_platform.lib.storage.delta import DeltaStore


def _without_nulls(value: Any) -> Any:
    """BentoML metadata takes basic types only: drop undefined (None) entries, recursively."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value if v is not None]
    return value


class ModelStoreResource(dg.ConfigurableResource):
    """BentoML model store rooted at ``home`` (the scoring service reads the same folder) and the
    registry record in the Delta store ``delta``."""

    home: str
    delta: dg.ResourceDependency[DeltaStore]

    def _activate(self) -> None:
        import bentoml  # noqa: F401  (configures the container before we point it at `home`)
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.models import ModelStore

        Path(self.home, "models").mkdir(parents=True, exist_ok=True)
        BentoMLContainer.bentoml_home.set(self.home)
        BentoMLContainer.model_store.set(ModelStore(os.path.join(self.home, "models")))

    def save_catboost(
        self,
        name: str,
        model: Any,
        *,
        metadata: dict[str, Any],
        labels: dict[str, str],
        run_id: str | None = None,
    ) -> str:
        """Register a CatBoost model (a ``registered`` event); returns its tag (``name:version``)."""
        return self.save_model(name, model, metadata=metadata, labels=labels, run_id=run_id)

    def save_model(
        self,
        name: str,
        model: Any,
        *,
        metadata: dict[str, Any],
        labels: dict[str, str],
        run_id: str | None = None,
    ) -> str:
        """Register a model of any kind (a CatBoost model or a scikit-learn baseline,
        ``lib/model/baseline.py``) with a ``registered`` event; returns its tag."""
        self._activate()
        saved = save_to_store(name, model, metadata=_without_nulls(metadata), labels=labels)
        tag = str(saved.tag)
        registry.record(
            self.delta,
            [
                registry.ModelEvent.about(
                    tag, saved.info.metadata, registry.REGISTERED, run_id=run_id
                )
            ],
        )
        return tag

    def get(self, tag: str) -> Any:
        self._activate()
        import bentoml

        return bentoml.models.get(tag)

    def load_catboost(self, tag: str) -> Any:
        """The model ``tag``, whatever its kind (the name predates the baselines)."""
        return self.load_model(tag)

    def load_model(self, tag: str) -> Any:
        """The model ``tag`` as its kind loads it: a CatBoost model or a ``SklearnModel``."""
        return load_from_store(self.get(tag))

    def champion(self, name: str) -> str | None:
        return registry.champion(self.delta, name)

    def history(self, name: str) -> list[str]:
        """Champions of ``name`` a rollback can return to, the current one last."""
        return registry.champions(self.delta, name)

    def events(self, name: str, tag: str | None = None) -> list[dict[str, Any]]:
        """The registry rows of ``name`` (of one ``tag`` if given), oldest first."""
        return registry.events(self.delta, name, tag).to_dicts()

    def promotion_log(self, name: str) -> list[dict[str, Any]]:
        """Every promotion-gate decision for ``name``, oldest first."""
        return registry.gate_decisions(self.delta, name)

    def _event(self, tag: str, event: str, **kwargs: Any) -> registry.ModelEvent:
        """``event`` about the registered model ``tag`` (fails loudly on an unknown tag;
        resolves ``name:latest``)."""
        entry = self.get(tag)
        return registry.ModelEvent.about(str(entry.tag), entry.info.metadata, event, **kwargs)

    def promote(
        self, tag: str, *, reason: str = "promoted by hand", run_id: str | None = None
    ) -> None:
        """Make ``tag`` the champion of its model name (nothing when it already is)."""
        event = self._event(tag, registry.PROMOTED, reason=reason, run_id=run_id)
        if self.champion(event.model_name) != event.tag:
            registry.record(self.delta, [event])

    def rollback(self, name: str, *, run_id: str | None = None) -> str:
        """Make the previous champion the champion again; returns its tag."""
        history = self.history(name)
        if len(history) < 2:
            raise ValueError(
                f"{name} has no previous champion to roll back to (history: {history})"
            )
        previous = history[-2]
        reason = f"rolled back from {history[-1]}"
        registry.record(
            self.delta, [self._event(previous, registry.ROLLED_BACK, reason=reason, run_id=run_id)]
        )
        return previous

    def record_gate(
        self, decision: dict[str, Any], *, promote: bool, run_id: str | None = None
    ) -> str | None:
        """Record a promotion-gate decision about its challenger and, when ``promote``, the
        challenger's promotion, in one commit; returns the champion after it."""
        tag = decision["challenger_tag"]
        name = tag.split(":", 1)[0]
        details = {**decision, "champion_after": tag if promote else self.champion(name)}
        events = [
            self._event(
                tag,
                registry.GATE_DECISION,
                reason=decision["reason"],
                run_id=run_id,
                details=details,
            )
        ]
        if promote:
            reason = f"promotion gate: {decision['reason']}"
            events.append(self._event(tag, registry.PROMOTED, reason=reason, run_id=run_id))
        registry.record(self.delta, events)
        return self.champion(name)

    # Last in the class: annotations are evaluated at once here (no `from __future__ import
    # annotations`: Dagster must see `ResourceDependency` itself), and this name would shadow the
    # builtin `list` in every annotation below it.
    def list(self, name: str | None = None) -> list[Any]:
        """The registered models of ``name`` (all without it), newest first."""
        self._activate()
        import bentoml

        models = bentoml.models.list(name)
        return sorted(models, key=lambda m: m.info.creation_time, reverse=True)
