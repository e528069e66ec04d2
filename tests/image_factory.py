"""Writers for every kind of tricky or broken image file, for tests of decoding, indexing and skip accounting.

``write_tricky_images(folder)`` fills a folder and returns ``{file name: expected category}`` where the
category is ``None`` for a usable file, else one of ``bias.data.images.REASON_CATEGORIES`` (compare with
``reason_category(check_image(path))``). All names have image extensions, so an index lists every one.
The lower-level writers (``png_bytes``, ``jpeg_bytes``, ...) build files with known pixel values.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_bytes(pixels: np.ndarray | None, color_type: int, bit_depth: int = 8, *, size: tuple[int, int] | None = None,
              extra_chunks: tuple[tuple[bytes, bytes], ...] = (), idat: bytes | None = None) -> bytes:
    """A PNG written by hand, for what PIL cannot write (16-bit grey+alpha, zero width, huge headers).

    `pixels` is H x W x C (uint8 or uint16, matching `bit_depth`) or None with an explicit `size` (W, H)
    and `idat` payload. `extra_chunks` go before IDAT (e.g. ``(b"tRNS", ...)``, ``(b"eXIf", ...)``).
    """
    if pixels is not None:
        arr = pixels if pixels.ndim == 3 else pixels[..., None]
        height, width = arr.shape[:2]
        dtype = ">u2" if bit_depth == 16 else np.uint8
        rows = arr.astype(dtype).reshape(height, -1).view(np.uint8)
        raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))
        idat = zlib.compress(raw)
    else:
        assert size is not None and idat is not None
        width, height = size
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr)
    for kind, payload in extra_chunks:
        body += png_chunk(kind, payload)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def exif_orientation_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg_bytes(pixels: np.ndarray, orientation: int | None = None, quality: int = 95, **kwargs) -> bytes:
    img = Image.fromarray(pixels)
    if orientation is not None:
        kwargs["exif"] = exif_orientation_bytes(orientation)
    return encode(img, "JPEG", quality=quality, **kwargs)


def cv2_bytes(pixels: np.ndarray, ext: str) -> bytes:
    """Encode with OpenCV (16-bit and float TIFF/PNG that PIL cannot write). `pixels` is BGR(A)."""
    import cv2

    ok, buf = cv2.imencode(ext, pixels)
    assert ok, ext
    return buf.tobytes()


def block_image(height: int = 32, width: int = 48, block: int = 16) -> np.ndarray:
    """Blocks of distinct, saturated colours (robust to JPEG) so any rotation or flip is visible."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
                        [255, 255, 255], [0, 0, 0], [128, 128, 128]], np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    idx = (ys // block) * ((width + block - 1) // block) + xs // block
    return colours[idx % len(colours)]


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients, edges, sinusoids and mild noise: a stand-in for a photograph."""
    rs = np.random.RandomState(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / width * 200, ys / height * 200, (xs + ys) / (width + height) * 255], -1)
    base += 40 * np.sin(xs / 7.0)[..., None] * np.cos(ys / 11.0)[..., None]
    base[(xs // 64 + ys // 48) % 2 == 0] += 30
    base += rs.normal(0, 6, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def _gif_animation(colours: list[tuple[int, int, int]]) -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in colours]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _webp_animation(colours: list[tuple[int, int, int]]) -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in colours]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, loop=0, lossless=True)


def write_tricky_images(folder: str | os.PathLike) -> dict[str, str | None]:
    """Write good and broken files into `folder`; returns ``{name: None or expected category}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = block_image(32, 48)
    rs = np.random.RandomState(0)
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, category: str | None) -> None:
        (folder / name).write_bytes(data)
        expected[name] = category

    # ---- good files -------------------------------------------------------------------------------
    jpg = jpeg_bytes(rgb)
    put("rgb.jpg", jpg, None)
    put("upper_case_ext.JPG", jpg, None)
    put("progressive.jpeg", jpeg_bytes(rgb, progressive=True), None)
    put("grey.jpg", encode(Image.fromarray(rgb[..., 0]), "JPEG"), None)
    put("cmyk.jpg", encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95), None)
    put("cmyk.tif", encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "TIFF"), None)
    put("orientation6.jpg", jpeg_bytes(rgb, orientation=6), None)
    put("trailing_garbage.jpg", jpg + b"\x00SAMSUNG-trailer" * 8, None)
    put("png_named.jpg", encode(Image.fromarray(rgb), "PNG"), None)
    put("jpeg_named.png", jpg, None)
    put("rgb.png", encode(Image.fromarray(rgb), "PNG"), None)
    put("grey_L.png", encode(Image.fromarray(rgb[..., 1]), "PNG"), None)
    put("bilevel_1.png", encode(Image.fromarray(rgb[..., 0] > 127), "PNG"), None)
    put("palette.png", encode(Image.fromarray(rgb).quantize(8), "PNG"), None)
    pal = Image.fromarray(rgb).quantize(8)
    put("palette_trns.png", encode(pal, "PNG", transparency=0), None)
    put("palette_trns.gif", encode(pal, "GIF", transparency=0), None)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    put("rgba.png", encode(Image.fromarray(rgba), "PNG"), None)
    put("la.png", encode(Image.fromarray(rgba[..., [0, 3]], "LA"), "PNG"), None)
    put("grey_trns.png", encode(Image.fromarray(rgb[..., 2]), "PNG", transparency=0), None)
    grey16 = (np.arange(48 * 32, dtype=np.uint32).reshape(32, 48) * 43).astype(np.uint16)
    put("grey16.png", png_bytes(grey16, color_type=0, bit_depth=16), None)
    put("grey16.tif", encode(Image.fromarray(grey16), "TIFF"), None)
    rgb16 = rgb.astype(np.uint16) * 257
    put("rgb16.png", cv2_bytes(rgb16[..., ::-1], ".png"), None)
    put("rgb16.tif", cv2_bytes(rgb16[..., ::-1], ".tif"), None)
    put("rgba16.png", png_bytes(np.dstack([rgb16, np.full(rgb.shape[:2], 40000, np.uint16)]), 6, 16), None)
    put("la16.png", png_bytes(np.dstack([grey16, np.full(grey16.shape, 65535, np.uint16)]), 4, 16), None)
    put("float.tif", encode(Image.fromarray(grey16.astype(np.float32) / 65535), "TIFF"), None)
    put("int32.tif", encode(Image.fromarray(grey16.astype(np.int32) * 7), "TIFF"), None)
    put("float_rgb.tif", cv2_bytes(rgb[..., ::-1].astype(np.float32) / 255, ".tif"), None)
    frames = [Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())]
    put("multipage.tif", encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]), None)
    put("apng.png", encode(frames[0], "PNG", save_all=True, append_images=frames[1:]), None)
    put("no_iend.png", encode(Image.fromarray(rgb), "PNG")[:-12], None)
    put("animated.gif", _gif_animation([(255, 0, 0), (0, 255, 0), (0, 0, 255)]), None)
    put("rgb.webp", encode(Image.fromarray(rgb), "WEBP", quality=90), None)
    put("rgba.webp", encode(Image.fromarray(rgba), "WEBP", lossless=True), None)
    put("animated.webp", _webp_animation([(255, 0, 0), (0, 255, 0)]), None)
    put("rgb.bmp", encode(Image.fromarray(rgb), "BMP"), None)
    put("rgb.tif", encode(Image.fromarray(rgb), "TIFF"), None)
    put("rgb_lzw.tiff", encode(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"), None)

    # ---- broken files ------------------------------------------------------------------------------
    noisy = encode(Image.fromarray(rs.randint(0, 256, (48, 48, 3), dtype=np.uint8)), "JPEG")
    put("zero_byte.jpg", b"", "zero-byte")
    put("text.jpg", b"this is not an image\nreally\n", "not-an-image")
    put("html_error_page.png", b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body><h1>Not Found</h1></body></html>\n", "not-an-image")
    put("s3_access_denied.jpg", b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Access Denied</Message></Error>", "not-an-image")
    put("random_bytes.jpg", rs.randint(0, 256, 2000, dtype=np.uint8).tobytes(), "not-an-image")
    put("heic_named.jpg", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200), "not-an-image")
    (folder / "directory.jpg").mkdir(exist_ok=True)
    expected["directory.jpg"] = "not-an-image"
    put("truncated.jpg", noisy[: len(noisy) // 2], "truncated")
    put("truncated_header.jpg", noisy[:40], "truncated")
    png = encode(Image.fromarray(rs.randint(0, 256, (48, 48, 3), dtype=np.uint8)), "PNG")
    put("truncated.png", png[: len(png) // 2], "truncated")
    gif = encode(Image.fromarray(rs.randint(0, 256, (48, 48), dtype=np.uint8)).convert("P"), "GIF")
    put("truncated.gif", gif[: len(gif) // 2], "truncated")
    webp = encode(Image.fromarray(rs.randint(0, 256, (48, 48, 3), dtype=np.uint8)), "WEBP")
    put("truncated.webp", webp[: len(webp) // 2], "truncated")
    tif = encode(Image.fromarray(rs.randint(0, 256, (48, 48, 3), dtype=np.uint8)), "TIFF")
    put("truncated.tif", tif[: len(tif) // 2], "truncated")
    bmp = encode(Image.fromarray(rgb), "BMP")
    put("truncated.bmp", bmp[: len(bmp) // 2], "truncated")
    put("random_with_png_header.png", b"\x89PNG\r\n\x1a\n" + rs.randint(0, 256, 500, dtype=np.uint8).tobytes(),
        "corrupt")
    put("bad_zlib_stream.png", png_bytes(None, 2, size=(16, 16), idat=b"\x78\x9c" + b"\xff" * 64), "corrupt")
    put("zero_width.png", png_bytes(None, 2, size=(0, 16), idat=zlib.compress(b"")), "empty")
    put("bomb.png", png_bytes(None, 0, size=(10_000, 10_000), idat=zlib.compress(b"")), "too-large")
    put("huge_bomb.png", png_bytes(None, 0, size=(100_000, 100_000), idat=zlib.compress(b"")), "too-large")
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root reads everything
        put("unreadable.jpg", jpg, "unreadable")
        os.chmod(folder / "unreadable.jpg", 0)
    return expected


def save_pngs(folder, arrays) -> tuple[list[str], list[str]]:
    """Write each HxWx3 uint8 array as `<folder>/<i>.png`; returns (paths, their content SHA-1s)."""
    from PIL import Image as _Image

    from bias.data.images import file_sha1

    paths = []
    for i, array in enumerate(arrays):
        path = f"{folder}/{i}.png"
        _Image.fromarray(array).save(path)
        paths.append(path)
    return paths, [file_sha1(p) for p in paths]
