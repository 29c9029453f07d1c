"""Attacks through image outputs: a sandbox's image text never costs the host much.

Every image a cell shows is base64 text written by sandboxed code. The MCP
server turns it into image content for the client, so a forged image must come
back as a short note, quickly, with the host's peak memory barely moving:
decompression bombs (PNG and JPEG), truncated and corrupt files, text posing as
an image, and payloads far larger than any image the host decodes.
"""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp.types import ImageContent
from PIL import Image

from sandlot.mcp.images import ImageLimits, image_content


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, idat: bytes, extra: bytes = b"") -> bytes:
    """A PNG with an 8-bit RGB header of the given size and the given (compressed) IDAT body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _bounded(call: Callable[[], object], seconds: float = 2.0, mib: int = 64) -> object:
    """Run ``call``; fail if it takes over ``seconds`` or raises peak RSS by over ``mib`` MiB."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status("VmRSS")
    started = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - started
    grown = _status("VmHWM") - before
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert grown < mib, f"peak memory grew by {grown} MiB"
    return result


def _note(result: object) -> str:
    assert isinstance(result, str), f"expected a note, got {type(result).__name__}"
    assert len(result) < 300
    assert "the full output is in" in result
    return result


def test_png_decompression_bomb_is_refused_from_its_header() -> None:
    # 100,000 x 100,000 RGB is 30 GB of pixels; the file is a few dozen bytes.
    bomb = _png(100_000, 100_000, zlib.compress(b"\0" * 1000, 9))
    note = _note(_bounded(lambda: image_content(_b64(bomb), "image/png")))
    assert "100000x100000" in note


def test_png_bomb_with_real_pixel_stream_is_refused() -> None:
    # A 6000 x 6000 RGB image of zeros: 108 MB of pixels from ~100 KB of zlib.
    row = b"\0" + b"\0" * 6000 * 3
    bomb = _png(6000, 6000, zlib.compress(row * 6000, 9))
    assert len(bomb) < 200_000
    note = _note(_bounded(lambda: image_content(_b64(bomb), "image/png")))
    assert "6000x6000" in note


def test_jpeg_decompression_bomb_is_refused_from_its_header() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    real = out.getvalue()
    # Rewrite the start-of-frame's height and width to 65535 x 65535.
    sof = real.index(b"\xff\xc0")
    forged = real[: sof + 5] + struct.pack(">HH", 65535, 65535) + real[sof + 9 :]
    note = _note(_bounded(lambda: image_content(_b64(forged), "image/jpeg")))
    assert "65535x65535" in note


def test_compressed_text_chunks_never_expand() -> None:
    # Fifty zTXt chunks that each inflate to 8 MB: ancillary chunks are dropped unread.
    ztxt = _chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * (8 << 20), 9))
    row = b"\0" + b"\x80" * 30
    png = _png(10, 10, zlib.compress(row * 10), extra=ztxt * 50)
    result = _bounded(lambda: image_content(_b64(png), "image/png"), mib=32)
    assert isinstance(result, ImageContent)


def test_truncated_png_gives_a_note() -> None:
    out = io.BytesIO()
    Image.effect_noise((200, 200), 64).save(out, "PNG")
    whole = out.getvalue()
    note = _note(_bounded(lambda: image_content(_b64(whole[: len(whole) // 2]), "image/png")))
    assert "truncated" in note


def test_png_with_a_cut_pixel_stream_gives_a_note() -> None:
    # Chunk structure intact (CRCs right), but the zlib stream stops halfway.
    row = b"\0" + bytes(range(256)) * 3
    stream = zlib.compress(row * 256)
    png = _png(256, 256, stream[: len(stream) // 2])
    note = _note(_bounded(lambda: image_content(_b64(png), "image/png")))
    assert "does not decode" in note


def test_bad_checksum_gives_a_note() -> None:
    png = bytearray(_png(4, 4, zlib.compress((b"\0" + b"\0" * 12) * 4)))
    png[-20] ^= 0xFF  # inside the IDAT body
    note = _note(image_content(_b64(bytes(png)), "image/png"))
    assert "corrupt" in note


@pytest.mark.parametrize(
    "payload",
    [
        _b64(b"<html><body>not a picture</body></html>"),
        _b64(b"GIF89a" + b"\0" * 20),
        "%%% not base64 at all %%%",
        "",
    ],
)
def test_non_image_in_image_png_gives_a_note(payload: str) -> None:
    _note(_bounded(lambda: image_content(payload, "image/png")))


@pytest.mark.parametrize("payload", [None, 12, ["iVBOR"], {"a": 1}])
def test_non_text_payload_gives_a_note(payload: object) -> None:
    _note(image_content(payload, "image/png"))


def test_forty_megabytes_of_base64_is_refused_unread() -> None:
    huge = "A" * (40 << 20)
    note = _note(_bounded(lambda: image_content(huge, "image/png"), seconds=0.5, mib=8))
    assert "40.0 MiB" in note


def test_decode_limit_is_the_callers() -> None:
    limits = ImageLimits(max_decode_pixels=100)
    png = _png(11, 10, zlib.compress((b"\0" + b"\0" * 33) * 10))
    note = _note(image_content(_b64(png), "image/png", limits))
    assert "11x10" in note
