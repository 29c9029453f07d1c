"""The wire protocol: any header and payload survive framing; bad frames are refused."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandlot.driver import protocol

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(header=st.dictionaries(st.text(), json_values, max_size=6), payload=st.binary(max_size=5000))
def test_frames_round_trip(header: dict[str, object], payload: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        frame = protocol.encode(header, payload)
        writer = threading.Thread(target=a.sendall, args=(frame * 2,))
        writer.start()
        assert protocol.read_frame(b) == (header, payload)
        assert protocol.read_frame(b) == (header, payload)
        writer.join()
        a.close()
        assert protocol.read_frame(b) is None


def test_malformed_frames_are_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack("!II", 3, 0) + b"[1]")
        with pytest.raises(protocol.ProtocolError, match="not a JSON object"):
            protocol.read_frame(b)
        a.sendall(struct.pack("!II", protocol.MAX_HEADER + 1, 0))
        with pytest.raises(protocol.ProtocolError, match="too large"):
            protocol.read_frame(b)
    with pytest.raises(TypeError):
        protocol.encode({"value": object()})
