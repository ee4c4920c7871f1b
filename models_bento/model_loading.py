"""The served model: where it comes from (``choose_source``: the model bundled in the bento, or
the model registry's champion), loading it, warming it up, and the immutable ``ServedModel``
that FraudScorer swaps as a whole.

The bundled model is a bento argument (``BentoArgs``, set by ``fraud-platform bento build``):
the service declares it as a ``bentoml.models.BentoModel`` class attribute, so ``bentoml build``
packs it into the bento and ``bentoml serve`` of the bento reads it from there.

No BentoML service here: ``models_bento.service`` builds on these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import bentoml
from pydantic import BaseModel, Field

from fraud_platform import names
from fraud_platform.lib.model.baseline import load_from_store
from fraud_platform.lib.serving import registry
from fraud_platform.lib.serving.scoring import ScoringModel
from fraud_platform.lib.storage.delta import DeltaStore
from models_bento.schemas import EXAMPLE_TRANSACTION, ModelInfo, TransactionRequest

log = logging.getLogger("bentoml.fraud_scorer")

BUNDLED = "bundled"
REGISTRY = "registry"


class BentoArgs(BaseModel):
    """The service's bento arguments (``bentoml build --arg model_tag=...``; recorded in the
    bento and set again whenever the bento is served)."""

    model_tag: str | None = Field(
        default=None, description="The model packed into the bento (name:version)."
    )
    model_was_champion: bool = Field(
        default=False, description="Whether it was the registry's champion at build time."
    )


def choose_source(setting: str | None, bundled_tag: str | None) -> str:
    """``bundled`` or ``registry``: the setting (FRAUD_PLATFORM_MODEL_SOURCE) when given, else
    the bundled model when there is one."""
    if setting == BUNDLED and bundled_tag is None:
        raise RuntimeError(
            "FRAUD_PLATFORM_MODEL_SOURCE=bundled but this service carries no model: serve a bento "
            "built with `fraud-platform bento build`, or unset it to serve the registry's champion"
        )
    if setting is not None:
        return setting
    return BUNDLED if bundled_tag is not None else REGISTRY


def resolve_model_tag(
    bentoml_home: Path, registry_store: DeltaStore, name: str = names.MODEL_NAME
) -> tuple[str, bool]:
    """(tag, is_champion): the registry's champion, else the newest model ``name``."""
    from bentoml._internal.models import ModelStore

    registry_table = registry_store.uri(registry.TABLE)
    tag = registry.champion(registry_store, name)
    if tag:
        return tag, True
    store = ModelStore(bentoml_home / "models")
    try:
        models = store.list(name)
    except bentoml.exceptions.NotFound:
        models = []
    if not models:
        raise RuntimeError(
            f"no model {name!r} in the model store {bentoml_home / 'models'} and no champion in "
            f"{registry_table}: train and register one first (or set FRAUD_PLATFORM_DATA_DIR)"
        )
    newest = max(models, key=lambda m: m.info.creation_time)
    log.warning(
        "no champion for %s in %s; using the newest model %s", name, registry_table, newest.tag
    )
    return str(newest.tag), False


def load_scoring_model(
    bentoml_home: Path,
    registry_store: DeltaStore,
    name: str = names.MODEL_NAME,
    tag: str | None = None,
) -> tuple[ScoringModel, Any]:
    """The champion (or ``tag``, a champion) as a ScoringModel, plus its bentoml.Model entry
    (for /model)."""
    from bentoml._internal.models import ModelStore

    if tag is None:
        tag, is_champion = resolve_model_tag(bentoml_home, registry_store, name)
    else:
        is_champion = True
    entry = ModelStore(bentoml_home / "models").get(tag)
    return scoring_model(entry), {"entry": entry, "champion": is_champion}


def scoring_model(entry: Any) -> ScoringModel:
    """The model-store entry ``entry`` (a ``bentoml.Model``) as a ScoringModel."""
    return ScoringModel.from_metadata(model_of(entry), entry.info.metadata, str(entry.tag))


def model_of(entry: Any) -> Any:
    """The entry's model as its recorded kind loads it: CatBoost, or a scikit-learn baseline
    (``lib/model/baseline.py``)."""
    return load_from_store(entry)


def warm_up(scoring: ScoringModel) -> None:
    """First CatBoost calls allocate; pay that before /readyz says ready (or before a new
    champion is swapped in)."""
    example = {k: v for k, v in EXAMPLE_TRANSACTION.items() if k != "event_time"}  # now
    txn = TransactionRequest.model_validate(example)
    txn = txn.model_dump()
    scoring.score(txn, {}, explain="always")


@dataclass(frozen=True)
class ServedModel:
    """The model in service; swapped as a whole, never mutated."""

    scoring: ScoringModel
    entry: Any  # bentoml.Model
    champion: bool
    loaded_at: datetime


class ServedModelInfo(ModelInfo):
    model_source: Literal["bundled", "registry"] = Field(
        description="bundled: the model packed into the bento (no hot reload); registry: the "
        "model registry's champion, swapped in when it changes."
    )
    loaded_at: str = Field(description="When this process loaded the model (UTC).")
    reload_error: str | None = Field(
        description="Why the latest champion could not be loaded (the model above is still "
        "served); null when the champion is the model in service."
    )
