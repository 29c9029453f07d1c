"""The wire protocol: any message survives framing; bad frames and shapes are refused."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandlot.driver import codec, protocol

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _round_trip(frames: bytes, count: int) -> list[tuple[protocol.Header, bytes] | None]:
    a, b = socket.socketpair()
    with a, b:
        writer = threading.Thread(target=a.sendall, args=(frames,))
        writer.start()
        got = [protocol.read_frame(b) for _ in range(count)]
        writer.join()
        a.close()
        got.append(protocol.read_frame(b))
    return got


@settings(max_examples=60, deadline=None)
@given(fields=st.dictionaries(st.text(), json_values, max_size=6), payload=st.binary(max_size=5000))
def test_messages_round_trip(fields: dict[str, object], payload: bytes) -> None:
    header = {**fields, "t": "chunk"}
    header.pop("parts", None)
    frame = protocol.encode(header, payload)
    assert _round_trip(frame * 2, 2) == [(header, payload), (header, payload), None]


def test_a_large_payload_travels_as_frames_of_at_most_one_chunk() -> None:
    payload = bytes(range(256)) * (protocol.CHUNK // 256 * 3 + 7)  # three chunks and a bit
    frames = protocol.encode({"t": "chunk", "id": 1}, payload)
    sizes, pos = [], 0
    while pos < len(frames):
        head_len, payload_len = protocol.PREFIX.unpack_from(frames, pos)
        sizes.append(payload_len)
        pos += protocol.PREFIX.size + head_len + payload_len
    assert len(sizes) == 4 and max(sizes) == protocol.CHUNK
    assert _round_trip(frames, 1) == [({"t": "chunk", "id": 1, "parts": 4}, payload), None]


def test_malformed_frames_are_refused() -> None:
    bad = [
        (struct.pack("!II", 3, 0) + b"[1]", "not a JSON object"),
        (struct.pack("!II", 2, 0) + b"{}", "string field 't'"),
        (struct.pack("!II", protocol.MAX_HEADER + 1, 0), "outside the protocol's bounds"),
        (struct.pack("!II", 10, protocol.CHUNK + 1), "outside the protocol's bounds"),
        (struct.pack("!II", 0, 0), "outside the protocol's bounds"),
        (struct.pack("!II", 20000, 0) + b"[" * 10000 + b"]" * 10000, "not JSON"),
    ]
    for data, message in bad:
        a, b = socket.socketpair()
        with a, b:
            a.sendall(data)
            with pytest.raises(protocol.ProtocolError, match=message):
                protocol.read_frame(b)
    # A message that says it has more parts must be followed by 'more' frames only.
    head = b'{"t":"chunk","id":1,"parts":2}'
    other = protocol.encode({"t": "res", "id": 1, "ok": True})
    for data, message in [
        (struct.pack("!II", len(head), 0) + head + other, "continuation"),
        (protocol.encode({"t": "x", "parts": 10**9}), "'parts' must be"),
        (protocol.encode({"t": "x", "parts": True}), "'parts' must be"),
    ]:
        a, b = socket.socketpair()
        with a, b:
            a.sendall(data)
            with pytest.raises(protocol.ProtocolError, match=message):
                protocol.read_frame(b)


def test_the_sender_refuses_what_the_receiver_would() -> None:
    with pytest.raises(TypeError):
        protocol.encode({"t": "x", "value": object()})
    with pytest.raises(protocol.ProtocolError, match="header of"):
        protocol.encode({"t": "x", "pad": "x" * protocol.MAX_HEADER})


def test_a_value_too_big_for_a_header_travels_in_the_payload() -> None:
    value = {"numbers": list(range(300_000)), "text": "x" * 5000, "blob": b"\0" * 10}
    structure, data = codec.encode(value)
    frames = protocol.encode({"t": "call", "id": 1, "name": "f", "value": structure}, data)
    (got, end) = _round_trip(frames, 1)
    assert got is not None and end is None
    assert "vlen" in got[0] and "value" not in got[0] and got[0]["parts"] > 1
    assert codec.decode(*protocol.take_value(*got)) == value
    small = protocol.encode({"t": "ret", "value": [1, "a"]})
    assert _round_trip(small, 1)[0] == ({"t": "ret", "value": [1, "a"]}, b"")
    for vlen in (-1, 10**9, "3", True):
        with pytest.raises(protocol.ProtocolError, match="vlen"):
            protocol.take_value({"t": "ret", "vlen": vlen}, b"{}")
    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        protocol.take_value({"t": "ret", "vlen": 3}, b"{{{")


SHAPE_CASES: list[tuple[Any, Any, bool | int]] = [
    ({"t": "res", "id": 1, "ok": True}, protocol.FROM_DRIVER["res"], True),
    ({"t": "res", "id": [1], "ok": True}, protocol.FROM_DRIVER["res"], False),  # stopped the reader
    ({"t": "res", "id": True, "ok": True}, protocol.FROM_DRIVER["res"], False),
    ({"t": "res", "id": -1, "ok": True}, protocol.FROM_DRIVER["res"], False),
    ({"t": "res", "id": 2**60, "ok": True}, protocol.FROM_DRIVER["res"], False),
    ({"t": "res", "id": 1, "ok": 1}, protocol.FROM_DRIVER["res"], False),
    ({"t": "res", "id": 1, "ok": False, "error": {"name": "E"}}, protocol.FROM_DRIVER["res"], 0),
    ({"t": "chunk", "id": 1, "stream": "stdin"}, protocol.FROM_DRIVER["chunk"], False),
    ({"t": "call", "id": 1, "name": 7}, protocol.FROM_DRIVER["call"], False),
    ({"entries": [{"name": "a", "type": "file", "size": 1}]}, protocol.REPLIES["list"], True),
    ({"entries": [{"name": "a", "type": "fifo", "size": 1}]}, protocol.REPLIES["list"], True),
    ({"entries": [{"name": "a", "type": "pipe", "size": 1}]}, protocol.REPLIES["list"], False),
    ({"skipped": [{"name": "a/s", "type": "socket"}]}, protocol.REPLIES["get_tar"], True),
    ({"skipped": [{"name": "a/s", "type": "door"}]}, protocol.REPLIES["get_tar"], False),
    ({"skipped": "a/s"}, protocol.REPLIES["get_tar"], False),
    ({"entries": {"name": "a"}}, protocol.REPLIES["list"], False),
    ({"returncode": 0, "killed": None}, protocol.REPLIES["exec"], True),
    ({"returncode": 0.5}, protocol.REPLIES["exec"], False),
]


@pytest.mark.parametrize(("value", "shape", "fits"), SHAPE_CASES)
def test_shapes(value: Any, shape: Any, fits: bool | int) -> None:
    if fits:
        protocol.check(value, shape, "it")
    else:
        with pytest.raises(protocol.ProtocolError, match="does not have the protocol's shape"):
            protocol.check(value, shape, "it")


@settings(max_examples=200, deadline=None)
@given(structure=json_values, payload=st.binary(max_size=64))
def test_decoding_a_forged_value_gives_a_value_or_one_clear_error(
    structure: Any, payload: bytes
) -> None:
    with contextlib.suppress(codec.MalformedValue):
        codec.decode(structure, payload)


def test_forged_value_references_are_refused() -> None:
    for ref in ([0, 100], [-1, 2], ["0", 1], [0], 5, [True, 1]):
        with pytest.raises(codec.MalformedValue):
            codec.decode({"$b": ref}, b"abc")
        with pytest.raises(codec.MalformedValue):
            codec.decode({"$s": ref}, b"abc")
    with pytest.raises(codec.MalformedValue):
        codec.decode({"$s": [0, 2]}, b"\xff\xfe")


def test_long_strings_travel_as_payload_and_come_back_equal() -> None:
    value = ["short", "é" * 1000, "\ud800 lone surrogate " * 40, {"$s": "user's own key"}]
    structure, data = codec.encode(value)
    assert structure[0] == "short" and "$s" in structure[1] and len(data) > 2000
    assert codec.decode(structure, data) == value


def test_errors_in_headers_are_clipped() -> None:
    info = protocol.error_info(ValueError("x" * 10**6), "tb" * 10**6)
    assert len(info["value"]) < protocol.MAX_TEXT + 100
    assert len(info["traceback"]) < protocol.MAX_TEXT + 100
    assert info["value"].startswith("xxx") and "characters cut" in info["value"]
