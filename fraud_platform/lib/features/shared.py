"""Groups whose rows another group holds: a group whose stored columns are all among another
group's (version 1 of a group beside version 2, which adds a feature).

The rows are the same values: a declared feature is shared only when its declaration is equal,
hidden totals only for the same (column, filter), profiles only for the same (function, column,
filter, window), and only between groups of one entity, source, event time and lifetime gap (the
gap restarts lifetime aggregates and prefix totals). Two uses:

* ``served_groups``: in one stream view the stream worker computes such a group's rows from the
  other's query, its columns renamed, instead of evaluating the same windows and profiles twice
  (the stream's mismatch checks compare every group's rows with ``compute_feature_group`` of
  that group itself);
* ``storage_host``: online, a version of a group is served from the rows of a later version of
  it in the catalog with the same TTL (``online/layout.py``): one key per entity written instead
  of two (the version 1 rows were 2 of ~8 row keys per transaction, ~17% of the write script's
  Redis time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import lifetime_gap
from fraud_platform.lib.features.registry import FeatureGroup
from fraud_platform.lib.features.windows import SPAN_START, LookupPlan, Totals, lookup_plan


@dataclass(frozen=True)
class ServedGroup:
    """``group``'s rows come from the rows computed for ``computed``: its stored column
    ``columns[c]`` is ``computed``'s column ``c`` (identity when ``computed is group``)."""

    group: FeatureGroup
    computed: FeatureGroup
    columns: dict[str, str]


def served_groups(groups: tuple[FeatureGroup, ...]) -> list[ServedGroup]:
    """Per group of ``groups`` (in order), the group whose rows it takes: the group with the
    most stored columns that holds all of its own (earliest first on a tie, so two groups of
    equal definitions are both served from the first)."""
    stored = [lookup_plan(g).stored.features for g in groups]
    served: list[ServedGroup] = []
    for group in groups:
        best: ServedGroup | None = None
        best_width = -1
        for candidate, features in zip(groups, stored, strict=True):
            columns = _columns_from(group, candidate)
            if columns is not None and len(features) > best_width:
                best, best_width = ServedGroup(group, candidate, columns), len(features)
        assert best is not None  # a group always holds its own columns
        served.append(best)
    return served


def storage_host(group: FeatureGroup) -> FeatureGroup:
    """The group whose online rows serve ``group``: the catalog's latest version of the same
    group, with the same TTL, whose rows hold all of ``group``'s stored columns (so its keys'
    history keeps every row a lookup of ``group`` reads); ``group`` itself if none does or
    ``group`` is not the catalog's."""
    found = _catalog_hosts().get(group.versioned_name)
    if found is None or (found[0] is not group and found[0] != group):  # `is`: no field walk
        return group
    return found[1]


def hosts_of(groups: Iterable[FeatureGroup]) -> list[FeatureGroup]:
    """The groups whose online rows serve ``groups`` (``storage_host``), each once, in order:
    what a writer writes so that every one of ``groups`` can be read."""
    found: dict[str, FeatureGroup] = {}
    for group in groups:
        host = storage_host(group)
        found.setdefault(host.versioned_name, host)
    return list(found.values())


@cache
def _catalog_hosts() -> dict[str, tuple[FeatureGroup, FeatureGroup]]:
    return hosts_in(FEATURE_GROUPS)


def hosts_in(groups: Sequence[FeatureGroup]) -> dict[str, tuple[FeatureGroup, FeatureGroup]]:
    """Per group of ``groups`` stored in another's rows (versioned name): the group and its
    host, the latest later version of it with the same TTL that holds its columns."""
    hosts: dict[str, tuple[FeatureGroup, FeatureGroup]] = {}
    for group in groups:
        candidates = [
            other
            for other in groups
            if other.name == group.name
            and other.version > group.version
            and other.ttl == group.ttl
            and _columns_from(group, other) is not None
        ]
        if candidates:
            hosts[group.versioned_name] = (group, max(candidates, key=lambda g: g.version))
    return hosts


def hosted(group: FeatureGroup) -> bool:
    """Whether ``group``'s online rows are another group's (``storage_host``)."""
    return storage_host(group) is not group


def _columns_from(group: FeatureGroup, computed: FeatureGroup) -> dict[str, str] | None:
    """``computed``'s stored column -> ``group``'s, for every stored column of ``group``; None
    unless ``computed``'s rows hold them all with the same values."""
    same_rows = (
        group.entity.join_keys == computed.entity.join_keys
        and group.source == computed.source
        and group.event_time_column == computed.event_time_column
        and lifetime_gap(group) == lifetime_gap(computed)
    )
    if not same_rows:
        return None
    plan, other = lookup_plan(group), lookup_plan(computed)
    theirs = set(other.stored.features)
    columns: dict[str, str] = {}
    for feature in group.features:  # declared: the same declaration
        if feature not in theirs:
            return None
        columns[feature.name] = feature.name
    their_totals = _totals_by_key(computed, other)
    for key, totals in _totals_by_key(group, plan).items():
        found = their_totals.get(key)
        if found is None:
            return None
        for mine, their in zip(
            (totals.count, totals.fixed_sum, totals.fixed_sumsq),
            (found.count, found.fixed_sum, found.fixed_sumsq),
            strict=True,
        ):
            if mine is not None:
                if their is None:
                    return None
                columns[their] = mine
    profiles = {(p.function, p.column, p.where, p.window): p for p in other.profiles}
    for profile in plan.profiles:
        found_profile = profiles.get(
            (profile.function, profile.column, profile.where, profile.window)
        )
        if found_profile is None:
            return None
        columns[found_profile.granules] = profile.granules
        columns[found_profile.values] = profile.values
    names = {f.name for f in plan.stored.features}
    if SPAN_START in names:
        if SPAN_START not in {f.name for f in other.stored.features}:
            return None
        columns[SPAN_START] = SPAN_START
    if set(columns.values()) != names:  # a hidden column this does not know how to share
        return None
    dtypes = {f.name: f.dtype for f in other.stored.features}
    if any(dtypes[c] != plan.stored.feature(mine).dtype for c, mine in columns.items()):
        return None
    return columns


def _totals_by_key(group: FeatureGroup, plan: LookupPlan) -> dict[tuple, Totals]:
    """The group's prefix totals by (column, filter) of the features they serve."""
    declared = {f.name: f for f in group.features}
    return {
        (declared[f.name].column, declared[f.name].where): f.totals
        for f in plan.features
        if f.totals is not None
    }
