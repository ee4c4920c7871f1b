"""The feature registry: feature groups declared once, as data.

A ``FeatureGroup`` names its entity, its source table, and features that are windowed
aggregations over the source's events. The same declaration drives the offline computation
(``compute.py``), the point-in-time join (``pit.py``), the online key layout and the
serving-side reader (``online/``).

A ``FeatureService`` (services.py) names the group versions and request features one model
consumes. Versioned names are unique in the catalog, so ``user_txn_velocity_v2`` sits beside
``user_txn_velocity_v1`` (its own table, asset and online keys); feature names are unique
within a service, so a model's input columns are unambiguous.

Semantics (stated once, tested in tests/unit/features/):
- A group emits one row per (entity, source event time). The row's ``feature_time`` is that
  event time: the moment the values became known. A row's window aggregates cover source
  events with time in ``(feature_time - window, feature_time]`` (all events sharing the
  timestamp included).
- A lookup at time ``t`` sees the latest row with ``feature_time < t`` (strictly before; an
  event never sees itself or anything at its own timestamp) and ``t - feature_time <= ttl``;
  otherwise every feature of the group is null. Windowed counts, sums, means and deviations
  are served as of ``t`` itself: over the events in ``(b, t)``, ``b`` being ``t - window``
  rounded up to 1/60 of the window (``windows.py``); max, min and distinct counts over a
  window, and lifetime aggregates, are the row's.
- Source events whose join keys are null (e.g. a card payment has no p2p counterparty) belong
  to no entity: they emit no row, and a lookup with a null join key finds nothing.
- A row's window aggregates depend only on its window's events: sums and means are taken in
  fixed point (8 decimal places, exact), deviations over the window's values in event order.
  Lifetime aggregates are count, sum, max, min, last and mean; count, max, min and last
  continue from the previous row's value (incremental partitions, ``incremental.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, TypeVar

AggFunction = Literal[
    "count", "sum", "mean", "std", "max", "min", "n_unique", "last", "fixed_sum", "fixed_sumsq"
]
Dtype = Literal["float", "int", "str", "ts", "fixed"]
WhereOp = Literal["==", "<", ">"]

FEATURE_TIME = "feature_time"
ENTITY_KEY = "entity_key"


@dataclass(frozen=True)
class Entity:
    """What a feature describes; ``join_keys`` name the columns that identify one instance."""

    name: str
    join_keys: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Feature:
    """One value per entity and time: ``function`` of ``column`` over ``window``.

    ``window=None`` means the entity's whole history (a lifetime aggregate). ``where`` keeps
    only source events matching ``(column, op, value)`` with op one of ``==``, ``<``, ``>``
    (e.g. ``("event_type", "==", "login_failed")``).
    ``column=None`` with ``count`` counts events.
    """

    name: str
    function: AggFunction
    column: str | None = None
    window: timedelta | None = None
    where: tuple[str, WhereOp, str | float] | None = None
    dtype: Dtype = "float"
    description: str = ""


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    version: int
    entity: Entity
    source: str  # silver table the events come from
    event_time_column: str
    features: tuple[Feature, ...]
    ttl: timedelta
    owner: str
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    absence_is_signal: bool = False
    """True when most entities have no row and that absence means something (a first-time
    device, a merchant with no known fraud): a missing row online is then an answer, not a
    degraded lookup."""
    stream: bool = True
    """True when the stream worker (``lib/streaming``) maintains the group online from its
    source topic, event by event; False for groups whose source needs batch-only inputs (a
    PostgreSQL table, a join built by dbt): those are refreshed by the batch snapshot only."""

    @property
    def versioned_name(self) -> str:
        return f"{self.name}_v{self.version}"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"feature {name!r} is not in group {self.versioned_name}")


@dataclass(frozen=True)
class RequestFeature:
    """A feature computed at request time from the transaction and looked-up features.

    Most are computed by ``request.request_features``. A feature may instead declare how it is
    derived, and ``request.model_row`` computes it generically (offline and online alike):

    * ``ratio=(numerator, denominator)``: ``numerator / denominator``, each the name of a
      transaction field, a looked-up feature or another request feature; null when the
      denominator is null or zero, and when the numerator is null unless
      ``null_numerator_is_zero`` (a group whose absence means zero, e.g. no fraud label known);
    * ``elapsed_since=name``: seconds from the timestamp ``name`` to the event (null without it).
    """

    name: str
    dtype: Dtype
    description: str
    categorical: bool = False
    ratio: tuple[str, str] | None = None
    null_numerator_is_zero: bool = False
    elapsed_since: str | None = None

    def __post_init__(self) -> None:
        if self.ratio is not None and self.elapsed_since is not None:
            raise ValueError(f"{self.name}: declare a ratio or an elapsed time, not both")

    @property
    def declared(self) -> bool:
        return self.ratio is not None or self.elapsed_since is not None


@dataclass(frozen=True)
class FeatureService:
    """The versioned set of features a model consumes: it pins groups and their versions.

    ``model_features`` are the model's input columns (request features first, then the pinned
    groups' numeric features); ``request_features`` the ones derived at scoring time.
    """

    name: str
    groups: tuple[FeatureGroup, ...]
    model_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    request_features: tuple[RequestFeature, ...] = ()

    def __post_init__(self) -> None:
        validate_service(self)

    @property
    def numeric_features(self) -> list[str]:
        return [f for f in self.model_features if f not in self.categorical_features]

    @property
    def group_names(self) -> list[str]:
        return [group.versioned_name for group in self.groups]


def validate_service(service: FeatureService) -> None:
    """One version per group; every feature name (group or request) once; the model's
    features are features of the service."""
    versions: dict[str, str] = {}
    for group in service.groups:
        if group.name in versions:
            raise ValueError(
                f"feature service {service.name}: pins {versions[group.name]} and "
                f"{group.versioned_name}; a service consumes one version of a group"
            )
        versions[group.name] = group.versioned_name
    seen: dict[str, str] = {}
    declared = [(g.versioned_name, f.name) for g in service.groups for f in g.features]
    declared += [("request features", f.name) for f in service.request_features]
    for origin, name in declared:
        if name in seen:
            raise ValueError(
                f"feature service {service.name}: feature {name!r} declared twice: in "
                f"{seen[name]} and {origin}"
            )
        seen[name] = origin
    unknown = [f for f in (*service.model_features, *service.categorical_features) if f not in seen]
    if unknown:
        raise ValueError(f"feature service {service.name}: unknown model features {unknown}")


def validate_registry(groups: tuple[FeatureGroup, ...]) -> None:
    """Versioned group names are unique; feature names unique within a group; windows and
    TTLs positive. (Feature names need only be unique within a service: validate_service.)"""
    versioned: set[str] = set()
    for group in groups:
        if group.versioned_name in versioned:
            raise ValueError(f"feature group {group.versioned_name} declared twice")
        versioned.add(group.versioned_name)
        if group.ttl <= timedelta(0):
            raise ValueError(f"{group.versioned_name}: ttl must be positive")
        names = group.feature_names
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{group.versioned_name}: features {twice} declared twice")
        for feature in group.features:
            if feature.window is not None and feature.window <= timedelta(0):
                raise ValueError(f"{feature.name}: window must be positive")
            if feature.column is None and feature.function != "count":
                raise ValueError(f"{feature.name}: {feature.function} needs a column")


T = TypeVar("T")


def per_group(cache: dict, group: FeatureGroup, variant: Hashable, build: Callable[[], T]) -> T:
    """``build()`` once per group object (and ``variant``), kept in ``cache``: expressions the
    stream worker would otherwise rebuild at every checkpoint. Keyed by identity, checked
    against the object (an id can be reused); bounded for groups made on the fly (tests)."""
    hit = cache.get((id(group), variant))
    if hit is not None and hit[0] is group:
        return hit[1]
    if len(cache) >= 1_000:
        cache.clear()
    value = build()
    cache[(id(group), variant)] = (group, value)
    return value
