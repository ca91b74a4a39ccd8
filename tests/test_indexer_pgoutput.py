"""pgoutput parser on hand-built messages: key columns only, truncates, bad bytes."""

from __future__ import annotations

import struct

import pytest

from indexer.events import Change
from indexer.pgoutput import Begin, Commit, Decoder, ProtocolError, format_lsn


def _s(text: str) -> bytes:
    return text.encode() + b"\0"


def relation(oid: int, table: str, columns: list[str]) -> bytes:
    body = b"R" + struct.pack("!I", oid) + _s("public") + _s(table) + b"d"
    body += struct.pack("!H", len(columns))
    for name in columns:
        body += b"\1" + _s(name) + struct.pack("!Ii", 25, -1)
    return body


def tuple_data(values: list[str | None]) -> bytes:
    out = struct.pack("!H", len(values))
    for v in values:
        out += b"n" if v is None else b"t" + struct.pack("!I", len(v.encode())) + v.encode()
    return out


def test_row_messages_keep_only_keys() -> None:
    d = Decoder()
    d.decode(relation(7, "patient_contacts", ["id", "patient_id", "kind", "value"]))
    ins = b"I" + struct.pack("!I", 7) + b"N" + tuple_data(["k1", "p1", "phone", "555"])
    (change,) = d.decode(ins, "0/10")
    assert isinstance(change, Change)
    assert change.new == {"id": "k1", "patient_id": "p1"} and change.position == "0/10"
    upd = b"U" + struct.pack("!I", 7) + b"K" + tuple_data(["k1", None, None, None])
    upd += b"N" + tuple_data(["k2", "p2", "email", "x"])
    (change,) = d.decode(upd)
    assert isinstance(change, Change) and change.old == {"id": "k1"}
    assert change.patient_ids == {"p2"} and change.contact_ids == {"k1", "k2"}
    dele = b"D" + struct.pack("!I", 7) + b"K" + tuple_data(["k2", None, None, None])
    (change,) = d.decode(dele)
    assert isinstance(change, Change) and change.op == "delete" and change.patient_ids == set()


def test_begin_commit_truncate_and_other_tables() -> None:
    d = Decoder()
    (begin,) = d.decode(b"B" + struct.pack("!QqI", 100, 0, 42))
    assert isinstance(begin, Begin) and begin.xid == 42 and begin.commit_ts == 946684800.0
    d.decode(relation(1, "patients", ["id", "clinic_id"]))
    d.decode(relation(2, "visits", ["id"]))
    assert d.decode(b"I" + struct.pack("!I", 2) + b"N" + tuple_data(["v1"])) == []
    trunc = d.decode(b"T" + struct.pack("!IB", 2, 1) + struct.pack("!II", 1, 2))
    assert [(c.table, c.op) for c in trunc if isinstance(c, Change)] == [("patients", "truncate")]
    (commit,) = d.decode(b"C\0" + struct.pack("!QQq", 100, 0x1_0000_0010, 0))
    assert isinstance(commit, Commit) and format_lsn(commit.end_lsn) == "1/10"


def test_bad_bytes_raise_protocol_error() -> None:
    d = Decoder()
    with pytest.raises(ProtocolError):
        d.decode(b"I" + struct.pack("!I", 99) + b"N")  # relation never announced
    with pytest.raises(ProtocolError):
        d.decode(b"Z")
    with pytest.raises(ProtocolError):
        d.decode(b"B\0\0")
