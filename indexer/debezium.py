"""Pure decoding of Debezium PostgreSQL connector records (JSON converter) into changes.

Handles values with or without the `schema`/`payload` wrapper, ops c/u/d/r/t,
tombstones (null value, key only), primary-key changes (a delete for the old
key then a create for the new one), the connector's placeholder for unchanged
TOAST columns, heartbeat topics and tables we do not index. Anything that
cannot be read becomes a dead letter instead of stopping the stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from indexer.events import TABLES, Change, DeadLetter, Keys, Op, key_values

UNAVAILABLE = "__debezium_unavailable_value"
HEARTBEAT_PREFIX = "__debezium-heartbeat"
_OPS: dict[str, Op] = {"c": "insert", "r": "read", "u": "update", "d": "delete", "t": "truncate"}
_MAX_RECORD_BYTES = 1_000_000  # larger records are not parsed (dead letter)
# Commit timestamps outside 1970 .. 2100 are ignored (lag and state stay computable).
_TS_MS_RANGE = (0, 4_102_444_800_000)


@dataclass
class Decoded:
    change: Change | None = None
    dead: DeadLetter | None = None
    ignored: str | None = None  # why the record was skipped on purpose (heartbeat, other table)
    extra: list[Change] = field(default_factory=list)


def position(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def _json(raw: bytes | str | None) -> Any:
    """Parse one key or value; ValueError for anything that is not a plausible event."""
    if raw is None:
        return None
    if len(raw) > _MAX_RECORD_BYTES:
        raise ValueError("record too large")
    text = raw.decode() if isinstance(raw, bytes | bytearray) else raw
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # the C parser's guard against deep nesting
        raise ValueError("JSON nested too deep") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unwrap(value: Any) -> Any:
    """JSON converter with schemas.enable=true wraps everything in schema + payload."""
    if isinstance(value, dict) and "payload" in value and set(value) <= {"schema", "payload"}:
        return value["payload"]
    return value


def _dead(pos: str, reason: str, *raw: Any) -> Decoded:
    """The event stays in Kafka at `pos`; the dead letter holds where and why, no data."""
    return Decoded(dead=DeadLetter("kafka", pos, reason))


def _table_of(topic: str, source: Any) -> tuple[str | None, str]:
    if isinstance(source, dict) and isinstance(source.get("table"), str):
        schema = source.get("schema")
        return (schema if isinstance(schema, str) else None), source["table"]
    parts = topic.split(".")
    return (parts[-2] if len(parts) >= 3 else None), parts[-1]


def decode_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    schema: str = "public",
) -> Decoded:
    """One Kafka record -> a change, a dead letter, or a deliberate skip."""
    pos = position(topic, partition, offset)
    if topic.startswith(HEARTBEAT_PREFIX):
        return Decoded(ignored="heartbeat")
    try:
        key_obj = _unwrap(_json(key))
        value_obj = _unwrap(_json(value))
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError too
        reason = str(exc) if type(exc) is ValueError else "invalid JSON"
        return _dead(pos, reason, key, value)
    if key_obj is not None and not isinstance(key_obj, dict):
        return _dead(pos, "key is not a JSON object", key, value)
    if value_obj is None:
        return _tombstone(topic, pos, key_obj, key)
    if not isinstance(value_obj, dict):
        return _dead(pos, "value is not a JSON object", key, value)
    return _envelope(topic, pos, key_obj, value_obj, schema=schema, raw=(key, value))


def _tombstone(topic: str, pos: str, key_obj: dict[str, Any] | None, raw: bytes | None) -> Decoded:
    """Null value after a delete: the key alone says which row is gone."""
    _, table = _table_of(topic, None)
    if table not in TABLES:
        return Decoded(ignored="table")
    keys = key_values(key_obj, placeholder=UNAVAILABLE)
    if not keys or "id" not in keys:
        return _dead(pos, "tombstone without a usable key", raw, None)
    return Decoded(change=Change(table, "delete", old=keys, position=pos))


def _envelope(
    topic: str,
    pos: str,
    key_obj: dict[str, Any] | None,
    payload: dict[str, Any],
    *,
    schema: str,
    raw: tuple[bytes | None, bytes | None],
) -> Decoded:
    op_code = payload.get("op")
    if not isinstance(op_code, str | None):
        return _dead(pos, "op is not a string", *raw)
    if op_code == "m":  # logical decoding message: not a row change
        return Decoded(ignored="message")
    if op_code not in _OPS:
        if "op" not in payload and set(payload) <= {"ts_ms", "serverName"}:
            return Decoded(ignored="heartbeat")
        return _dead(pos, "missing or unknown op", *raw)
    op = _OPS[str(op_code)]
    source = payload.get("source")
    source_schema, table = _table_of(topic, source)
    if table not in TABLES or (source_schema is not None and source_schema != schema):
        return Decoded(ignored="table")
    commit_ts = _commit_ts(source.get("ts_ms") if isinstance(source, dict) else None)
    if commit_ts is None:
        commit_ts = _commit_ts(payload.get("ts_ms"))
    if op == "truncate":
        return Decoded(change=Change(table, op, position=pos, commit_ts=commit_ts))
    before, after = payload.get("before"), payload.get("after")
    if (before is not None and not isinstance(before, dict)) or (
        after is not None and not isinstance(after, dict)
    ):
        return _dead(pos, "before/after is not an object", *raw)
    old = key_values(before, placeholder=UNAVAILABLE)
    new = key_values(after, placeholder=UNAVAILABLE)
    if op == "delete" and not old:
        old = key_values(key_obj, placeholder=UNAVAILABLE)
    elif op != "delete" and not new:
        return _dead(pos, f"{op} without after", *raw)
    if not _has_identity(table, new, old, key_obj):
        return _dead(pos, "no row key in event", *raw)
    return Decoded(change=Change(table, op, new, old, pos, commit_ts))


def _commit_ts(ts_ms: Any) -> float | None:
    """Epoch seconds from a plausible ts_ms; anything else is no timestamp at all."""
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int | float):
        return None
    if not _TS_MS_RANGE[0] <= ts_ms <= _TS_MS_RANGE[1]:  # also false for NaN
        return None
    return float(ts_ms) / 1000


def _has_identity(
    table: str, new: Keys | None, old: Keys | None, key_obj: dict[str, Any] | None
) -> bool:
    wanted = ("id",) if table == "patients" else ("id", "patient_id")
    return any(k and any(k.get(c) for c in wanted) for k in (new, old))
