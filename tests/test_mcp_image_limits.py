"""Images shown to an MCP client stay within the byte and pixel limits and keep their shape."""

from __future__ import annotations

import base64
import io

from mcp.types import ImageContent
from PIL import Image

from sandlot.mcp.images import ImageLimits, image_content


def _b64(img: Image.Image, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    img.save(out, fmt)
    return base64.b64encode(out.getvalue()).decode()


def _shown(result: object) -> tuple[Image.Image, ImageContent]:
    assert isinstance(result, ImageContent), result
    img = Image.open(io.BytesIO(base64.b64decode(result.data)))
    img.load()
    return img, result


def test_small_png_keeps_its_size_and_format() -> None:
    img, content = _shown(image_content(_b64(Image.new("RGB", (40, 30), "red")), "image/png"))
    assert content.mime_type == "image/png"
    assert img.size == (40, 30)
    assert img.getpixel((5, 5)) == (255, 0, 0)


def test_wide_image_is_scaled_to_the_longest_side() -> None:
    img, _ = _shown(image_content(_b64(Image.new("RGB", (4000, 500))), "image/png"))
    assert img.size == (1568, 196)


def test_large_image_is_scaled_to_the_pixel_budget() -> None:
    img, _ = _shown(image_content(_b64(Image.new("L", (3000, 3000))), "image/png"))
    width, height = img.size
    assert width * height <= 1_200_000
    assert width == height > 1000


def test_noisy_image_falls_back_to_jpeg_within_the_byte_limit() -> None:
    noise = Image.effect_noise((1500, 1000), 100).convert("RGB")
    limits = ImageLimits(max_bytes=300_000)
    img, content = _shown(image_content(_b64(noise), "image/png", limits))
    assert content.mime_type == "image/jpeg"
    assert len(content.data) <= 300_000
    assert img.format == "JPEG"


def test_jpeg_input_is_decoded_and_reencoded() -> None:
    img, content = _shown(image_content(_b64(Image.new("RGB", (64, 48)), "JPEG"), "image/jpeg"))
    assert img.size == (64, 48)
    assert content.mime_type == "image/png"


def test_transparency_survives() -> None:
    img, _ = _shown(image_content(_b64(Image.new("RGBA", (10, 10), (0, 0, 0, 0))), "image/png"))
    assert img.mode == "RGBA"
    assert img.getpixel((0, 0))[3] == 0


def test_image_that_cannot_fit_the_byte_limit_becomes_a_note() -> None:
    noise = Image.effect_noise((800, 800), 100)
    note = image_content(
        _b64(noise), "image/png", ImageLimits(max_bytes=200), where="/tmp/nb.ipynb"
    )
    assert isinstance(note, str)
    assert "/tmp/nb.ipynb" in note


def test_other_image_types_become_a_note() -> None:
    note = image_content("PHN2Zz48L3N2Zz4=", "image/svg+xml")
    assert isinstance(note, str)
    assert "image/svg+xml" in note
