"""Parser for pgoutput protocol version 1 messages (PostgreSQL "Logical Replication
Message Formats"), as returned one per row by pg_logical_slot_peek_binary_changes.

psycopg has no replication-protocol API, so we decode the bytes ourselves. Only
key columns are kept (see indexer.events); other column values are skipped
without being decoded.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from indexer.events import KEY_COLUMNS, TABLES, Change, Keys

_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()


class ProtocolError(ValueError):
    """Bytes that do not follow the pgoutput format."""


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _pg_time(micros: int) -> float:
    return _PG_EPOCH + micros / 1_000_000


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_ts: float
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # where the slot may advance once this transaction is written
    commit_ts: float


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    columns: tuple[str, ...]


Message = Begin | Commit | Relation | Change


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProtocolError("message truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def byte(self) -> str:
        return chr(self.take("!B"))

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolError("unterminated string")
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def raw(self, length: int) -> bytes:
        if self.pos + length > len(self.data):
            raise ProtocolError("column value truncated")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value


class Decoder:
    """Stateful: Relation messages map relation OIDs to table and column names."""

    def __init__(self, schema: str = "public") -> None:
        self.schema = schema
        self.relations: dict[int, Relation] = {}
        self._commit_ts: float | None = None

    def decode(self, data: bytes, position: str = "") -> list[Message]:
        """One pgoutput message -> zero or more items (a Truncate names several tables)."""
        r = _Reader(bytes(data))
        kind = r.byte()
        if kind == "B":
            begin = Begin(r.take("!Q"), _pg_time(r.take("!q")), r.take("!I"))
            self._commit_ts = begin.commit_ts
            return [begin]
        if kind == "C":
            r.take("!B")
            commit = Commit(r.take("!Q"), r.take("!Q"), _pg_time(r.take("!q")))
            self._commit_ts = None
            return [commit]
        if kind == "R":
            return [self._relation(r)]
        if kind in "IUD":
            change = self._row(kind, r, position)
            return [change] if change else []
        if kind == "T":
            return self._truncate(r, position)
        if kind in "OYM":  # origin, type, logical message: nothing for us
            return []
        raise ProtocolError(f"unknown message type {kind!r}")

    def _relation(self, r: _Reader) -> Relation:
        oid = r.take("!I")
        namespace, name = r.string(), r.string()
        r.take("!B")  # replica identity
        columns = []
        for _ in range(r.take("!H")):
            r.take("!B")  # flags
            columns.append(r.string())
            r.take("!I")  # type oid
            r.take("!i")  # type modifier
        rel = Relation(oid, namespace, name, tuple(columns))
        self.relations[oid] = rel
        return rel

    def _table(self, oid: int) -> str | None:
        rel = self.relations.get(oid)
        if rel is None:
            raise ProtocolError(f"change for relation {oid} before its Relation message")
        return rel.name if rel.namespace == self.schema and rel.name in TABLES else None

    def _tuple(self, r: _Reader, oid: int) -> Keys:
        columns = self.relations[oid].columns
        out: dict[str, str | None] = {}
        for i in range(r.take("!H")):
            kind = r.byte()
            if kind in "tb":
                value = r.raw(r.take("!I"))
                if kind == "t" and i < len(columns) and columns[i] in KEY_COLUMNS:
                    out[columns[i]] = value.decode()
            elif kind not in "nu":  # null, unchanged TOAST
                raise ProtocolError(f"unknown tuple column kind {kind!r}")
        return out

    def _row(self, kind: str, r: _Reader, position: str) -> Change | None:
        oid = r.take("!I")
        table = self._table(oid)
        new: Keys | None = None
        old: Keys | None = None
        marker = r.byte()
        if marker in "KO":
            old = self._tuple(r, oid)
            if kind == "U":
                marker = r.byte()
        if marker == "N":
            new = self._tuple(r, oid)
        elif kind != "D":
            raise ProtocolError(f"unexpected tuple marker {marker!r}")
        if table is None:
            return None
        op = {"I": "insert", "U": "update", "D": "delete"}[kind]
        return Change(table, op, new, old, position, self._commit_ts)  # type: ignore[arg-type]

    def _truncate(self, r: _Reader, position: str) -> list[Message]:
        count = r.take("!I")
        r.take("!B")  # options: cascade / restart identity
        out: list[Message] = []
        for _ in range(count):
            table = self._table(r.take("!I"))
            if table is not None:
                out.append(Change(table, "truncate", position=position, commit_ts=self._commit_ts))
        return out
