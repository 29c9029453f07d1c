"""Images from a sandbox, made safe and small enough for an MCP client to show a model.

A cell's image output is base64 text that sandboxed code wrote, so it may be
anything: a decompression bomb (a tiny file declaring a gigapixel canvas), a
truncated or corrupt file, something that is not an image at all, or tens of
megabytes of text. Clients also choke on big images (a single matplotlib PNG
can add 100,000 characters to a reply), and a model gains nothing from more
pixels than it looks at.

So every image is checked before it is decoded: the payload's length first,
then the size its header declares (read by hand, without Pillow), then the size
Pillow reports after ``Image.open`` and before ``load()``. Only then are pixels
decoded, scaled down to the pixel limits and re-encoded from the decoded
pixels (never passed through as sent), as PNG or, when PNG stays over the byte
limit, as JPEG. Anything that fails a check becomes a one-line note saying what
was dropped and where the full output is; nothing here raises on bad input.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import zlib
from dataclasses import dataclass

from mcp.types import ImageContent
from PIL import Image, UnidentifiedImageError

IMAGE_MIME_TYPES = ("image/png", "image/jpeg")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The PNG chunks needed to draw the picture. Ancillary chunks (text, ICC profiles,
# EXIF) are dropped before Pillow sees the file: compressed text chunks are a
# second way to make a small file expand in memory, and a model needs none of them.
PNG_KEPT_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})
# JPEG start-of-frame markers (which carry the size); C4, C8 and CC are other segments.
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_QUALITIES = (85, 70, 50)


@dataclass(frozen=True)
class ImageLimits:
    """How big an image may be when it arrives, and when it is handed to the client.

    ``max_bytes`` bounds the base64 text of one image as sent to the client (that
    is what counts against a client's reply limits); ``max_side`` and
    ``max_pixels`` bound what the model is shown (1568 px and about 1.2 MP is what
    Claude looks at before it scales down itself). ``max_input_chars`` and
    ``max_decode_pixels`` bound what the host agrees to decode at all.
    """

    max_bytes: int = 1 << 20
    max_side: int = 1568
    max_pixels: int = 1_200_000
    max_input_chars: int = 16 << 20
    max_decode_pixels: int = 25_000_000


class Dropped(Exception):
    """An image that will not be shown; the message says why, in a few words."""


def image_content(
    payload: object,
    mime_type: str,
    limits: ImageLimits | None = None,
    where: str = "the notebook file",
) -> ImageContent | str:
    """``payload`` (base64 text of a ``mime_type`` image) as bounded image content.

    Returns a short note instead (a ``str``) when the image cannot be shown:
    the note names the MIME type, the reason, and ``where`` the full output is.
    """
    limits = limits or ImageLimits()
    try:
        return _convert(payload, mime_type, limits)
    except Dropped as exc:
        return f"[{mime_type} output not shown: {exc}; the full output is in {where}]"


def _convert(payload: object, mime_type: str, limits: ImageLimits) -> ImageContent:
    if mime_type not in IMAGE_MIME_TYPES:
        raise Dropped("only PNG and JPEG images are shown")
    if not isinstance(payload, str):
        raise Dropped("the output is not base64 text")
    if len(payload) > limits.max_input_chars:
        raise Dropped(
            f"{len(payload) / 2**20:.1f} MiB of base64 is over the "
            f"{limits.max_input_chars / 2**20:.0f} MiB the host decodes"
        )
    try:
        raw = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise Dropped("the base64 text does not decode") from None
    if raw.startswith(PNG_SIGNATURE):
        raw, (width, height) = _png_essentials(raw)
        fmt = "PNG"
    elif raw.startswith(b"\xff\xd8"):
        width, height = _jpeg_size(raw)
        fmt = "JPEG"
    else:
        raise Dropped("the data is not a PNG or JPEG file")
    _check_decodable(width, height, limits)
    return _reencode(_decode(raw, fmt, (width, height), limits), limits)


def _check_decodable(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise Dropped(f"it declares an empty size ({width}x{height})")
    if width * height > limits.max_decode_pixels:
        raise Dropped(
            f"it declares {width}x{height} px, over the "
            f"{limits.max_decode_pixels / 1e6:.0f} MP the host decodes"
        )


def _png_essentials(raw: bytes) -> tuple[bytes, tuple[int, int]]:
    """The PNG rebuilt from its critical chunks only, and the size its IHDR declares.

    Walking the chunks also proves the file is well formed up to IEND (lengths
    in bounds, CRCs right) before Pillow is asked to decode anything.
    """
    kept = [PNG_SIGNATURE]
    size: tuple[int, int] | None = None
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(raw):
            raise Dropped("the PNG file is truncated")
        length, kind = struct.unpack(">I4s", raw[pos : pos + 8])
        end = pos + 12 + length
        if end > len(raw):
            raise Dropped("the PNG file is truncated")
        body = raw[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[end - 4 : end])
        if zlib.crc32(kind + body) != crc:
            raise Dropped("the PNG file is corrupt (a chunk's checksum is wrong)")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise Dropped("the PNG file has no valid header")
            size = struct.unpack(">II", body[:8])
        if kind in PNG_KEPT_CHUNKS:
            kept.append(raw[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(kept), size


def _jpeg_size(raw: bytes) -> tuple[int, int]:
    """The size a JPEG's start-of-frame segment declares, found by walking its segments."""
    pos = 2
    while pos + 4 <= len(raw):
        if raw[pos] != 0xFF:
            raise Dropped("the JPEG file is corrupt")
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # segments without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", raw[pos + 2 : pos + 4])
        if marker in JPEG_SOF:
            if length < 7 or pos + 9 > len(raw):
                break
            height, width = struct.unpack(">HH", raw[pos + 5 : pos + 9])
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or scan data before any frame
            break
        pos += 2 + length
    raise Dropped("the JPEG file has no frame header")


def _target_size(width: int, height: int, limits: ImageLimits) -> tuple[int, int]:
    """The largest size within the side and pixel limits, with the same aspect ratio."""
    scale = min(
        1.0,
        limits.max_side / max(width, height),
        math.sqrt(limits.max_pixels / (width * height)),
    )
    return max(1, int(width * scale)), max(1, int(height * scale))


def _decode(raw: bytes, fmt: str, declared: tuple[int, int], limits: ImageLimits) -> Image.Image:
    """Decode the pixels (after one more size check) and scale them to the limits."""
    try:
        with Image.open(io.BytesIO(raw), formats=[fmt]) as img:
            if img.size != declared:
                raise Dropped(f"Pillow reads its size as {img.size}, not the declared {declared}")
            target = _target_size(*img.size, limits)
            if fmt == "JPEG":
                img.draft("RGB", target)  # let libjpeg decode at a reduced scale
            img.load()
            picture = img.convert("RGBA" if _has_alpha(img) else "RGB")
    except Dropped:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, UnidentifiedImageError):
        raise Dropped("the image does not decode (truncated or corrupt)") from None
    except Image.DecompressionBombError:
        raise Dropped("Pillow refused it as a decompression bomb") from None
    if picture.size != target:
        picture = picture.resize(target, Image.Resampling.LANCZOS)
    return picture


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def _encoded_len(data: bytes) -> int:
    """The length of ``data`` as base64 text."""
    return 4 * math.ceil(len(data) / 3)


def _reencode(picture: Image.Image, limits: ImageLimits) -> ImageContent:
    """PNG if it fits the byte limit, else JPEG at falling quality, else half the size."""
    for _ in range(4):
        data = _save(picture, "PNG")
        if _encoded_len(data) <= limits.max_bytes:
            return _content(data, "image/png")
        flat = picture.convert("RGB")
        for quality in JPEG_QUALITIES:
            data = _save(flat, "JPEG", quality=quality)
            if _encoded_len(data) <= limits.max_bytes:
                return _content(data, "image/jpeg")
        width, height = picture.size
        if width < 64 or height < 64:
            break
        picture = picture.resize((width // 2, height // 2), Image.Resampling.LANCZOS)
    raise Dropped(f"it stays over {limits.max_bytes / 2**20:.1f} MiB even as a small JPEG")


def _save(picture: Image.Image, fmt: str, **options: int) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def _content(data: bytes, mime_type: str) -> ImageContent:
    return ImageContent(
        type="image", data=base64.b64encode(data).decode("ascii"), mime_type=mime_type
    )
