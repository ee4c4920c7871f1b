"""How the columns of a team's own files map onto the event contracts, and the stated defaults
for contract fields a data set does not have.

A mapping names, per contract field, the source column it comes from (``columns``) or a
constant (``defaults``); fields named in neither take ``FIELD_DEFAULTS`` when the contract can do
without real values there, and are an error otherwise (``REQUIRED_FROM_DATA``). ``user_id`` and
``card_id`` of a transaction stand in for each other: a card data set without customers uses the
card as the customer, and the reverse.

A mapping file is YAML::

    columns:                  # contract field: source column
      transaction_id: TRANSACTION_ID
      event_time: TX_DATETIME
      card_id: CUSTOMER_ID
      merchant_id: TERMINAL_ID
      amount: TX_AMOUNT
    defaults:                 # contract field: constant
      currency: EUR
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    EVENT_FIELDS,
    LABELS,
    TRANSACTIONS,
    Field,
    RejectedEvent,
    _check_field,
)

# Constants for the fields a data set commonly lacks. Each is a value the features read as "one
# and the same for everybody", so it adds no signal and invents none: one device, one IP, one
# country per user never look new or foreign.
FIELD_DEFAULTS: dict[str, dict[str, Any]] = {
    TRANSACTIONS: {
        "merchant_category": "unknown",
        "currency": "XXX",  # ISO 4217 "no currency": set the real one with --default currency=EUR
        "channel": "card_present",
        "counterparty_id": None,
        "device_id": "unknown",
        "ip": "0.0.0.0",
        "country": "ZZ",  # ISO 3166 user-assigned code, "unknown"
    },
    ACCOUNT_EVENTS: {"device_id": "unknown", "ip": "0.0.0.0", "country": "ZZ"},
    LABELS: {"fraud_type": None},
}
REQUIRED_FROM_DATA: dict[str, tuple[str, ...]] = {
    contract: tuple(f.name for f in fields if f.name not in FIELD_DEFAULTS.get(contract, {}))
    for contract, fields in EVENT_FIELDS.items()
    if contract in FIELD_DEFAULTS
}
# A transaction's user_id and card_id: when one is not mapped, it takes the other's column.
STAND_INS: dict[str, dict[str, str]] = {
    TRANSACTIONS: {"user_id": "card_id", "card_id": "user_id"},
}


class MappingError(ValueError):
    """The mapping cannot produce the contract's fields; the message says which and how."""


@dataclass(frozen=True)
class ImportMapping:
    """Source column (``columns``) or constant (``defaults``) of each contract field."""

    contract: str
    columns: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, source_columns: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
        """``({field: source column}, {field: constant})`` covering every contract field, or
        ``MappingError``. Fields not mapped whose name is a source column take that column."""
        specs = {f.name: f for f in EVENT_FIELDS[self.contract]}
        columns: dict[str, str] = {}
        constants: dict[str, Any] = {}
        for name in specs:
            if name in self.columns:
                columns[name] = self.columns[name]
            elif name in self.defaults:
                constants[name] = self.defaults[name]
            elif name in source_columns:
                columns[name] = name
        for name, other in STAND_INS.get(self.contract, {}).items():
            if name not in columns and name not in constants and other in columns:
                columns[name] = columns[other]
        for name, value in FIELD_DEFAULTS.get(self.contract, {}).items():
            if name not in columns and name not in constants:
                constants[name] = value
        missing_columns = sorted(c for c in set(columns.values()) if c not in source_columns)
        if missing_columns:
            raise MappingError(
                f"{self.contract}: source column(s) {missing_columns} not in the file (it has "
                f"{source_columns})"
            )
        missing = [n for n in specs if n not in columns and n not in constants]
        if missing:
            raise MappingError(
                f"{self.contract}: no source column for {missing}; map them with "
                f"--map FIELD=COLUMN (or a mapping file) or give --default FIELD=VALUE"
            )
        for name, value in constants.items():
            constants[name] = _checked_constant(specs[name], value)
        return columns, constants


def _checked_constant(spec: Field, value: Any) -> Any:
    """A constant converted to the field's kind and checked like any event value."""
    if value is None:
        if spec.required:
            raise MappingError(f"--default {spec.name}: the field is required, it cannot be null")
        return None
    if spec.kind == "float" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise MappingError(f"--default {spec.name}={value!r}: not a number") from None
    if spec.kind == "bool" and isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise MappingError(f"--default {spec.name}={value!r}: expected true or false")
        value = value.lower() == "true"
    if spec.kind == "ts":
        raise MappingError(f"--default {spec.name}: a time must come from the data")
    try:
        return _check_field(spec, value)
    except RejectedEvent as exc:
        raise MappingError(f"--default {spec.name}={value!r}: {exc}") from None


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    """``["a=b", ...]`` (``--map``/``--default`` values) to a dict; a malformed pair raises."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise MappingError(f"{option} {pair!r}: expected FIELD=VALUE")
        out[name.strip()] = value.strip()
    return out


def load_mapping(
    contract: str,
    path: Path | None = None,
    columns: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> ImportMapping:
    """The mapping file's entries (if any), overridden by ``columns``/``defaults`` (flags)."""
    if contract not in FIELD_DEFAULTS:
        raise MappingError(f"unknown event type {contract!r}; one of {sorted(FIELD_DEFAULTS)}")
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise MappingError(f"mapping file {path}: {exc}") from None
        unknown_keys = set(data) - {"columns", "defaults"}
        if not isinstance(data, dict) or unknown_keys:
            raise MappingError(f"mapping file {path}: only 'columns' and 'defaults' are allowed")
    merged_columns = {**(data.get("columns") or {}), **(columns or {})}
    merged_defaults = {**(data.get("defaults") or {}), **(defaults or {})}
    known = {f.name for f in EVENT_FIELDS[contract]}
    unknown = sorted((set(merged_columns) | set(merged_defaults)) - known)
    if unknown:
        raise MappingError(
            f"{contract}: {unknown} are not fields of the contract ({sorted(known)})"
        )
    both = sorted(set(merged_columns) & set(merged_defaults))
    if both:
        raise MappingError(f"{contract}: {both} given both a column and a default")
    return ImportMapping(contract, {k: str(v) for k, v in merged_columns.items()}, merged_defaults)


# --------------------------------------------------------------------------------------------
# Converting source columns to the contract's types (columnar)


def _as_utc(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A source time column as UTC microseconds: datetimes (naive = UTC), dates, ISO strings
    (with or without offset; without = UTC), integers (Unix epoch seconds)."""
    if isinstance(dtype, pl.Datetime):
        aware = column if dtype.time_zone else column.dt.replace_time_zone("UTC")
        return aware.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if dtype == pl.Date:
        return column.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype.is_integer():
        return pl.from_epoch(column, time_unit="s").dt.replace_time_zone("UTC")
    text = column.cast(pl.Utf8).str.strip_chars().str.replace(r"Z$", "+00:00")
    with_offset = text.str.contains(r"[+-][0-9]{2}:?[0-9]{2}$")
    parsed_aware = text.str.to_datetime(
        format="%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    ).fill_null(
        text.str.to_datetime(
            format="%Y-%m-%d %H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
        )
    )
    naive = (
        text.str.replace("T", " ")
        .str.to_datetime(format="%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us")
        .fill_null(text.str.to_datetime(format="%Y-%m-%d", strict=False, time_unit="us"))
    )
    return pl.when(with_offset).then(parsed_aware).otherwise(naive.dt.replace_time_zone("UTC"))


def mapped_frame(
    frame: pl.DataFrame, contract: str, columns: dict[str, str], constants: dict[str, Any]
) -> pl.DataFrame:
    """The contract's fields in bronze types (a value that does not convert becomes null)."""
    exprs: list[pl.Expr] = []
    for spec in EVENT_FIELDS[contract]:
        if spec.name in constants:
            exprs.append(pl.lit(constants[spec.name], polars_type(spec.kind)).alias(spec.name))
            continue
        source = pl.col(columns[spec.name])
        dtype = frame.schema[columns[spec.name]]
        if spec.kind == "ts":
            expr = _as_utc(source, dtype)
        elif spec.kind == "bool" and dtype != pl.Boolean:
            text = source.cast(pl.Utf8).str.to_lowercase().str.strip_chars()
            expr = (
                pl.when(text.is_in(["1", "true", "t", "yes"]))
                .then(True)
                .when(text.is_in(["0", "false", "f", "no"]))
                .then(False)
            )
        elif spec.kind == "float" and dtype == pl.Utf8:
            expr = source.str.strip_chars().cast(pl.Float64, strict=False)
        else:
            expr = source.cast(polars_type(spec.kind), strict=False)
        exprs.append(expr.alias(spec.name))
    return frame.select(exprs)


def polars_type(kind: str) -> pl.DataType:
    kinds = {"str": pl.Utf8(), "float": pl.Float64(), "bool": pl.Boolean()}
    return kinds.get(kind, pl.Datetime("us", "UTC"))
