"""Image decoding and validation: known answers for every mode/format, and every kind of broken file."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

import bias.data.images as images
from bias.data.images import (
    IMAGE_EXTENSIONS,
    REASON_CATEGORIES,
    ImageDecodeError,
    check_image,
    check_image_with_sha1,
    file_sha1,
    is_image_path,
    load_rgb,
    reason_category,
    resize_shorter_side,
    to_rgb,
)
from tests.image_factory import (
    block_image,
    cv2_bytes,
    encode,
    exif_orientation_bytes,
    jpeg_bytes,
    png_bytes,
    textured_image,
    write_tricky_images,
)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def load_bytes(tmp_path: Path, name: str, data: bytes, **kwargs) -> np.ndarray:
    return load_rgb(write(tmp_path, name, data), **kwargs)


def grey3(values) -> np.ndarray:
    v = np.asarray(values, np.uint8)
    return np.repeat(v[..., None], 3, axis=-1)


# ---- names -------------------------------------------------------------------------------------------


def test_extensions_are_lowercase_and_matching_is_case_insensitive():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    for name in ["a.jpg", "A.JPG", "b.JpEg", "c.PNG", "d.webp", "e.BMP", "f.gif", "g.TIF", "h.tiff", "dir/x.y.png"]:
        assert is_image_path(name), name
        assert is_image_path(Path("/data") / name), name
    for name in ["a.txt", "a.jpg.txt", "jpg", ".jpg", "a.svg", "a.heic", "._IMG_0001.JPG", "a."]:
        assert not is_image_path(name), name


# ---- every tricky file ---------------------------------------------------------------------------------


def test_tricky_folder_good_files_decode_and_broken_ones_report_their_category(tmp_path):
    expected = write_tricky_images(tmp_path)
    assert {c for c in expected.values() if c is not None} >= set(REASON_CATEGORIES) - {"unreadable"}
    for name, category in expected.items():
        path = tmp_path / name
        assert is_image_path(path), name
        reason = check_image(path)
        if category is None:
            assert reason is None, (name, reason)
            arr = load_rgb(path)
            assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
            assert arr.flags.c_contiguous and arr.flags.writeable, name
        else:
            assert reason is not None and reason_category(reason) == category, (name, reason)
            with pytest.raises(ImageDecodeError) as info:
                load_rgb(path)
            assert info.value.reason == reason and info.value.category == category
            assert info.value.path == str(path) and str(path) in str(info.value)
            assert not re.search(r"0x[0-9a-f]{6,}", reason), reason  # no addresses: stable across runs


def test_reason_strings_for_named_broken_kinds(tmp_path):
    write_tricky_images(tmp_path)
    assert check_image(tmp_path / "zero_byte.jpg") == "zero-byte file"
    assert check_image(tmp_path / "text.jpg") == "not an image (text file)"
    assert check_image(tmp_path / "html_error_page.png") == "not an image (HTML page)"
    assert check_image(tmp_path / "directory.jpg") == "not an image (is a directory)"
    assert check_image(tmp_path / "random_bytes.jpg") == "not an image (cannot identify format)"
    assert check_image(tmp_path / "truncated.jpg").startswith("truncated image")
    assert check_image(tmp_path / "truncated.png").startswith("truncated image")
    assert check_image(tmp_path / "random_with_png_header.png").startswith("corrupt image (PNG signature")
    assert check_image(tmp_path / "zero_width.png").startswith("decoded size 0")
    assert check_image(tmp_path / "bomb.png").startswith("too large: 10000x10000")
    assert check_image(tmp_path / "huge_bomb.png").startswith("too large")


def test_missing_file_is_unreadable(tmp_path):
    reason = check_image(tmp_path / "nope.jpg")
    assert reason_category(reason) == "unreadable"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_permission_denied_is_unreadable(tmp_path):
    path = write(tmp_path, "locked.png", encode(Image.new("RGB", (4, 4)), "PNG"))
    path.chmod(0)
    try:
        assert check_image(path) == "unreadable (permission denied)"
    finally:
        path.chmod(0o644)


def test_os_errors_while_reading_are_unreadable(tmp_path, monkeypatch):
    path = write(tmp_path, "a.png", encode(Image.new("RGB", (4, 4)), "PNG"))
    real_open = open

    def failing_open(file, mode="r", *args, **kwargs):
        if os.fspath(file) == str(path):
            raise OSError(5, "Input/output error")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    assert check_image(path) == "unreadable (Input/output error)"


def test_reason_category_prefixes():
    cases = {
        "zero-byte file": "zero-byte",
        "not an image (text file)": "not-an-image",
        "unsupported format (HEIF/HEIC)": "not-an-image",
        "truncated image": "truncated",
        "corrupt image (OSError: broken data stream)": "corrupt",
        "too large: 1x1": "too-large",
        "unreadable (permission denied)": "unreadable",
        "decoded size 0": "empty",
        "something new": "corrupt",
    }
    for reason, category in cases.items():
        assert reason_category(reason) == category
        assert category in REASON_CATEGORIES


def test_decode_error_pickles_with_reason_and_path():
    err = pickle.loads(pickle.dumps(ImageDecodeError("truncated image", "/x/a.jpg")))
    assert (err.reason, err.path, err.category, str(err)) == ("truncated image", "/x/a.jpg", "truncated",
                                                             "/x/a.jpg: truncated image")


# ---- grey, palette, alpha ------------------------------------------------------------------------------


def test_grey_and_bilevel_replicate_to_three_channels(tmp_path):
    grey = np.array([[0, 1, 127], [128, 254, 255]], np.uint8)
    assert np.array_equal(load_bytes(tmp_path, "l.png", encode(Image.fromarray(grey), "PNG")), grey3(grey))
    bits = np.array([[True, False, True], [False, False, True]])
    out = load_bytes(tmp_path, "b.png", encode(Image.fromarray(bits), "PNG"))
    assert np.array_equal(out, grey3(bits * 255))


def test_palette_without_and_with_transparency(tmp_path):
    img = Image.new("P", (3, 2), 0)
    img.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 255] + [0] * 759)
    img.putpixel((1, 0), 1)
    img.putpixel((2, 1), 2)
    want = np.array([[[10, 20, 30], [200, 100, 50], [10, 20, 30]], [[10, 20, 30], [10, 20, 30], [0, 0, 255]]])
    assert np.array_equal(load_bytes(tmp_path, "p.png", encode(img, "PNG")), want)
    want_trns = want.copy()
    want_trns[(want == [10, 20, 30]).all(-1)] = 255  # index 0 is transparent -> white
    assert np.array_equal(load_bytes(tmp_path, "pt.png", encode(img, "PNG", transparency=0)), want_trns)
    assert np.array_equal(load_bytes(tmp_path, "pt.gif", encode(img, "GIF", transparency=0)), want_trns)


def test_palette_with_partial_alpha_in_trns(tmp_path):
    img = Image.new("P", (2, 1), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 0), 1)
    out = load_bytes(tmp_path, "pa.png", encode(img, "PNG", transparency=bytes([128, 255])))
    assert np.array_equal(out, [[[255, 127, 127], [0, 0, 255]]])


def test_rgba_composites_onto_white_with_exact_alpha_math(tmp_path):
    px = np.array([[[255, 0, 0, 128], [0, 0, 255, 0], [0, 255, 0, 255], [10, 20, 30, 1]]], np.uint8)
    out = load_bytes(tmp_path, "a.png", encode(Image.fromarray(px), "PNG"))
    assert np.array_equal(out, [[[255, 127, 127], [255, 255, 255], [0, 255, 0], [254, 254, 254]]])
    # every (colour, alpha) pair against round((c*a + 255*(255-a)) / 255)
    c, a = np.meshgrid(np.arange(256), np.arange(256))
    grid = np.stack([c, c, c, a], -1).astype(np.uint8)
    out = load_bytes(tmp_path, "grid.png", encode(Image.fromarray(grid), "PNG"))
    want = np.floor((c * a + 255 * (255 - a)) / 255 + 0.5).astype(np.uint8)
    assert np.array_equal(out[..., 0], want)


def test_la_and_colour_key_transparency(tmp_path):
    la = np.array([[[0, 128], [200, 255], [50, 0]]], np.uint8)
    out = load_bytes(tmp_path, "la.png", encode(Image.fromarray(la, "LA"), "PNG"))
    assert np.array_equal(out, grey3([[127, 200, 255]]))
    grey = np.array([[7, 8]], np.uint8)
    out = load_bytes(tmp_path, "lt.png", encode(Image.fromarray(grey), "PNG", transparency=7))
    assert np.array_equal(out, grey3([[255, 8]]))
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)
    out = load_bytes(tmp_path, "rt.png", encode(Image.fromarray(rgb), "PNG", transparency=(1, 2, 3)))
    assert np.array_equal(out, [[[255, 255, 255], [4, 5, 6]]])


def test_to_rgb_on_opened_images_of_every_mode():
    def rgb_of(img: Image.Image) -> tuple[int, int, int]:
        return to_rgb(img).getpixel((0, 0))

    assert rgb_of(Image.new("RGBA", (1, 1), (255, 0, 0, 128))) == (255, 127, 127)
    assert rgb_of(Image.new("RGBA", (1, 1), (255, 0, 0, 128)).convert("RGBa")) == (255, 127, 127)
    assert rgb_of(Image.new("LA", (1, 1), (0, 128)).convert("La")) == (127, 127, 127)
    assert rgb_of(Image.new("PA", (1, 1), (0, 0))) == (255, 255, 255)
    assert rgb_of(Image.new("HSV", (1, 1), (85, 255, 255))) == (0, 255, 0)
    assert rgb_of(Image.new("RGB", (1, 1), (255, 0, 0)).convert("YCbCr")) == pytest.approx((255, 0, 0), abs=2)
    assert rgb_of(Image.new("LAB", (1, 1), (255, 128, 128))) == pytest.approx((255, 255, 255), abs=2)
    assert rgb_of(Image.new("CMYK", (1, 1), (255, 0, 0, 0))) == (0, 255, 255)
    assert rgb_of(Image.new("RGBX", (1, 1), (1, 2, 3, 0))) == (1, 2, 3)
    assert rgb_of(Image.new("1", (1, 1), 1)) == (255, 255, 255)
    assert rgb_of(Image.new("I;16", (1, 1), 32768)) == (128, 128, 128)
    assert rgb_of(Image.new("I;16B", (1, 1), 65535)) == (255, 255, 255)
    assert rgb_of(Image.new("F", (1, 1), 0.5)) == (128, 128, 128)
    out = to_rgb(Image.new("RGB", (2, 3)))
    assert out.mode == "RGB" and out.size == (2, 3)


# ---- CMYK ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmyk, rgb", [((0, 255, 255, 0), (255, 0, 0)), ((255, 0, 0, 0), (0, 255, 255)),
                                       ((0, 0, 0, 0), (255, 255, 255)), ((0, 0, 0, 255), (0, 0, 0))])
def test_cmyk_jpeg_and_tiff_decode_to_the_known_colour(tmp_path, cmyk, rgb):
    img = Image.new("CMYK", (16, 16), cmyk)
    jpg = encode(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(jpg)).info.get("adobe") is not None  # Adobe APP14 (inverted CMYK) on disk
    out = load_bytes(tmp_path, "c.jpg", jpg)
    assert np.abs(out.astype(int) - rgb).max() <= 3
    assert np.array_equal(load_bytes(tmp_path, "c.tif", encode(img, "TIFF")), np.broadcast_to(rgb, (16, 16, 3)))


# ---- 16-bit, int, float --------------------------------------------------------------------------------


def test_16bit_grey_scales_the_full_range(tmp_path):
    values = np.array([[65535, 32768, 256, 0, 1000, 128]], np.uint16)
    want = grey3([[255, 128, 1, 0, 4, 0]])  # round(v / 257); 1000 -> 3.89 -> 4
    assert Image.open(write(tmp_path, "g.png", png_bytes(values, 0, 16))).mode == "I;16"  # pillow >= 10.4
    assert np.array_equal(load_rgb(tmp_path / "g.png"), want)
    assert np.array_equal(load_bytes(tmp_path, "g.tif", encode(Image.fromarray(values), "TIFF")), want)
    assert np.array_equal(load_bytes(tmp_path, "g2.png", cv2_bytes(values, ".png")), want)
    assert np.array_equal(load_bytes(tmp_path, "g.pgm.png", cv2_bytes(values, ".pgm")), want)  # PIL mode "I"


def test_16bit_dark_image_is_not_auto_contrasted_or_clipped(tmp_path):
    dark = np.array([[0, 300, 600, 1285]], np.uint16)
    assert np.array_equal(load_bytes(tmp_path, "d.png", png_bytes(dark, 0, 16)), grey3([[0, 1, 2, 5]]))
    bright = np.array([[40000, 50000]], np.uint16)  # clipping at 255 would give white
    assert np.array_equal(load_bytes(tmp_path, "b.png", png_bytes(bright, 0, 16)), grey3([[156, 195]]))


def test_16bit_grey_with_transparency_key(tmp_path):
    values = np.array([[100, 65535, 0]], np.uint16)
    data = png_bytes(values, 0, 16, extra_chunks=((b"tRNS", (100).to_bytes(2, "big")),))
    assert np.array_equal(load_bytes(tmp_path, "gt.png", data), grey3([[255, 255, 0]]))


def test_16bit_rgb_png_and_tiff_use_rounding_not_the_high_byte(tmp_path):
    rgb16 = np.array([[[65535, 32768, 256], [1000, 2000, 3000]], [[0, 0, 0], [129, 385, 65407]]], np.uint16)
    want = np.array([[[255, 128, 1], [4, 8, 12]], [[0, 0, 0], [1, 1, 255]]], np.uint8)  # PIL alone: 3, 7, 11
    for ext in (".png", ".tif"):
        data = cv2_bytes(rgb16[..., ::-1], ext)
        assert np.array_equal(load_bytes(tmp_path, "c" + ext, data), want), ext
    assert np.array_equal(load_bytes(tmp_path, "c2.png", png_bytes(rgb16, 2, 16)), want)


def test_16bit_rgba_and_la_composite_on_the_16bit_scale(tmp_path):
    px = np.array([[[65535, 0, 0, 32768], [0, 0, 65535, 0], [1000, 2000, 3000, 65535]]], np.uint16)
    out = load_bytes(tmp_path, "a.png", png_bytes(px, 6, 16))
    assert np.array_equal(out, [[[255, 127, 127], [255, 255, 255], [4, 8, 12]]])
    la = np.array([[[0, 32768], [65535, 0], [32768, 65535]]], np.uint16)
    assert np.array_equal(load_bytes(tmp_path, "la.png", png_bytes(la, 4, 16)), grey3([[127, 255, 128]]))


def test_16bit_rgb_png_applies_exif_orientation(tmp_path):
    rgb16 = block_image(32, 48).astype(np.uint16) * 257
    data = png_bytes(rgb16, 2, 16, extra_chunks=((b"eXIf", exif_orientation_bytes(6)[6:]),))
    out = load_bytes(tmp_path, "o.png", data)
    assert np.array_equal(out, np.rot90(block_image(32, 48), -1))


def test_float_and_int32_modes(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0, 1e-3, np.nan, -0.5]], np.float32)  # max <= 1: [0, 1] data
    out = load_bytes(tmp_path, "f.tif", encode(Image.fromarray(unit), "TIFF"))
    assert np.array_equal(out, grey3([[0, 128, 255, 0, 0, 0]]))
    wide = np.array([[0.0, 100.4, 255.0, 300.0, 1.5]], np.float32)  # max > 1: [0, 255] data, clipped
    out = load_bytes(tmp_path, "f2.tif", encode(Image.fromarray(wide), "TIFF"))
    assert np.array_equal(out, grey3([[0, 100, 255, 255, 2]]))
    small = np.array([[0, 17, 255, -4]], np.int32)  # max <= 255: 8-bit data in 32-bit ints
    assert np.array_equal(load_bytes(tmp_path, "i.tif", encode(Image.fromarray(small), "TIFF")),
                          grey3([[0, 17, 255, 0]]))
    mid = np.array([[0, 32768, 65535]], np.int32)  # max <= 65535: 16-bit data
    assert np.array_equal(load_bytes(tmp_path, "i2.tif", encode(Image.fromarray(mid), "TIFF")),
                          grey3([[0, 128, 255]]))
    big = np.array([[0, 2**30, 2**31 - 1]], np.int32)  # 32-bit data
    assert np.array_equal(load_bytes(tmp_path, "i3.tif", encode(Image.fromarray(big), "TIFF")),
                          grey3([[0, 128, 255]]))


def test_float_rgb_tiff_falls_back_to_opencv(tmp_path):
    rgb = np.array([[[1.0, 0.0, 0.5], [0.25, 0.75, 0.0]]], np.float32)
    data = cv2_bytes(rgb[..., ::-1], ".tif")
    with pytest.raises(Exception):  # noqa: B017 - PIL cannot open it
        Image.open(io.BytesIO(data)).load()
    out = load_bytes(tmp_path, "f.tif", data)
    assert np.array_equal(out, [[[255, 0, 128], [64, 191, 0]]])


# ---- orientation, frames, formats ----------------------------------------------------------------------


ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_png_all_eight(tmp_path, orientation):
    a = block_image(32, 48)
    a[0, 0] = (1, 2, 3)  # a marker pixel on top of the blocks
    data = encode(Image.fromarray(a), "PNG", exif=exif_orientation_bytes(orientation))
    assert np.array_equal(load_bytes(tmp_path, "o.png", data), ORIENTED[orientation](a))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_jpeg(tmp_path, orientation):
    a = block_image(32, 48)
    out = load_bytes(tmp_path, "o.jpg", jpeg_bytes(a, orientation))
    want = ORIENTED[orientation](a)
    assert out.shape == want.shape
    centres = (slice(4, None, 16), slice(4, None, 16))  # inside 16x16 blocks, away from JPEG edges
    assert np.abs(out[centres].astype(int) - want[centres]).max() <= 12


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_is_ignored(tmp_path):
    a = block_image(16, 16)
    data = jpeg_bytes(a, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert load_bytes(tmp_path, "e.jpg", data).shape == (16, 16, 3)


def test_animated_files_give_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    kw = {"save_all": True, "append_images": frames[1:], "duration": 40, "loop": 0}
    for name, data in [("a.gif", encode(frames[0], "GIF", **kw)), ("a.webp", encode(frames[0], "WEBP", lossless=True, **kw)),
                       ("a.png", encode(frames[0], "PNG", **kw)), ("a.tif", encode(frames[0], "TIFF", **kw))]:
        assert Image.open(io.BytesIO(data)).n_frames == 3, name
        assert np.array_equal(load_bytes(tmp_path, name, data), np.broadcast_to([255, 0, 0], (6, 8, 3))), name


def test_webp_bmp_tiff_and_misnamed_files(tmp_path):
    a = block_image(24, 40)
    for name, data in [("l.webp", encode(Image.fromarray(a), "WEBP", lossless=True)),
                       ("b.bmp", encode(Image.fromarray(a), "BMP")), ("t.tif", encode(Image.fromarray(a), "TIFF")),
                       ("z.tiff", encode(Image.fromarray(a), "TIFF", compression="tiff_deflate")),
                       ("png_as.jpg", encode(Image.fromarray(a), "PNG"))]:
        assert np.array_equal(load_bytes(tmp_path, name, data), a), name
    lossy = load_bytes(tmp_path, "q.webp", encode(Image.fromarray(a), "WEBP", quality=95))
    assert np.abs(lossy[4::8, 4::8].astype(int) - a[4::8, 4::8]).max() <= 12


# ---- resizing ------------------------------------------------------------------------------------------


def test_resize_shorter_side_sizes():
    land = np.zeros((600, 1000, 3), np.uint8)
    assert resize_shorter_side(land, 500).shape == (500, 833, 3)
    assert resize_shorter_side(np.zeros((1000, 600, 3), np.uint8), 500).shape == (833, 500, 3)
    assert resize_shorter_side(np.zeros((501, 501), np.uint8), 500).shape == (500, 500)
    assert resize_shorter_side(np.zeros((601, 1000, 3), np.uint8), 500).shape == (500, 832, 3)  # 831.95
    for small in [np.zeros((500, 900, 3), np.uint8), np.zeros((20, 10, 3), np.uint8)]:
        assert resize_shorter_side(small, 500) is small
    img = Image.new("RGB", (1000, 600))
    assert resize_shorter_side(img, 500).size == (833, 500)
    assert resize_shorter_side(Image.new("RGB", (400, 300)), 500).size == (400, 300)
    with pytest.raises(ValueError):
        resize_shorter_side(land, 0)


def test_resize_is_bicubic_on_the_array_and_image_alike():
    a = textured_image(60, 100)
    out = resize_shorter_side(a, 30)
    assert out.flags.writeable and out.flags.c_contiguous
    assert np.array_equal(out, np.asarray(Image.fromarray(a).resize((50, 30), Image.Resampling.BICUBIC)))
    assert np.array_equal(out, np.asarray(resize_shorter_side(Image.fromarray(a), 30)))


def test_load_rgb_resize_matches_decoding_then_resizing(tmp_path):
    a = textured_image(90, 150)
    path = write(tmp_path, "t.png", encode(Image.fromarray(a), "PNG"))
    assert np.array_equal(load_rgb(path, resize_shorter=40), resize_shorter_side(a, 40))
    assert np.array_equal(load_rgb(path, resize_shorter=90), a)  # not larger than the target: untouched
    assert np.array_equal(load_rgb(path, resize_shorter=500), a)
    with pytest.raises(ValueError):
        load_rgb(path, resize_shorter=0)


@pytest.mark.parametrize("orientation", [1, 3, 6])
def test_jpeg_draft_stays_within_tolerance_of_the_full_decode(tmp_path, monkeypatch, orientation):
    path = write(tmp_path, "big.jpg", jpeg_bytes(textured_image(757, 1001), orientation, quality=90))
    drafted = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = load_rgb(path, resize_shorter=100)
    assert drafted and drafted[-1][1] < 757  # decoded at reduced scale (1/2 or 1/4)
    monkeypatch.setattr(images, "JPEG_DRAFT_OVERSAMPLE", None)
    exact = load_rgb(path, resize_shorter=100)
    assert fast.shape == exact.shape == ((100, 132, 3) if orientation in (1, 3) else (132, 100, 3))
    diff = np.abs(fast.astype(int) - exact)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 6, (diff.mean(), np.percentile(diff, 99))


def test_no_draft_when_the_reduction_is_small(tmp_path, monkeypatch):
    path = write(tmp_path, "j.jpg", jpeg_bytes(textured_image(300, 400)))
    calls = []
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda self, *a: calls.append(a))
    assert load_rgb(path, resize_shorter=200).shape == (200, 267, 3)  # 300 / 200 < 2 * oversample
    assert calls == []


# ---- limits and failure policies ----------------------------------------------------------------------


def test_pixel_limit_is_configurable_and_no_bomb_warning_leaks(tmp_path, monkeypatch):
    path = write(tmp_path, "s.png", encode(Image.new("RGB", (16, 16)), "PNG"))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 255)
    assert check_image(path) == "too large: 16x16 = 256 pixels > MAX_IMAGE_PIXELS=255"
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 256)
    assert check_image(path) is None
    monkeypatch.undo()
    bomb = write(tmp_path, "bomb.png", png_bytes(None, 0, size=(10_000, 10_000), idat=zlib.compress(b"")))
    with warnings.catch_warnings(record=True) as caught:
        assert reason_category(check_image(bomb)) == "too-large"
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_raising_the_limit_above_pils_lets_pil_open_it(tmp_path, monkeypatch):
    path = write(tmp_path, "s.png", encode(Image.new("L", (64, 64)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone refuses > 2000 pixels
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 5000)
    assert check_image(path) is None


def test_file_size_limit(tmp_path, monkeypatch):
    path = write(tmp_path, "s.png", encode(Image.new("L", (8, 8)), "PNG"))
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 10)
    assert check_image(path).startswith("too large: file of")


def test_truncation_is_detected_even_if_someone_enabled_load_truncated_images(tmp_path, monkeypatch):
    data = encode(Image.fromarray(textured_image(64, 64)), "JPEG")
    path = write(tmp_path, "t.jpg", data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.warns(RuntimeWarning, match="LOAD_TRUNCATED_IMAGES"):
        assert reason_category(check_image(path)) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_jpeg_missing_only_eoi_is_truncated_png_missing_only_iend_is_fine(tmp_path):
    jpg = encode(Image.fromarray(textured_image(32, 32)), "JPEG")
    assert reason_category(check_image(write(tmp_path, "j.jpg", jpg[:-2]))) == "truncated"
    png = encode(Image.fromarray(textured_image(32, 32)), "PNG")
    assert check_image(write(tmp_path, "p.png", png[:-12])) is None


def test_corrupt_entropy_data_in_a_jpeg_is_accepted_but_decoder_errors_are_not(tmp_path):
    """Policy: libjpeg only warns about damaged entropy-coded data, PIL decodes it; such files are kept."""
    jpg = bytearray(encode(Image.fromarray(textured_image(64, 64)), "JPEG", quality=90))
    mid = len(jpg) // 2
    jpg[mid: mid + 16] = np.random.RandomState(3).randint(0, 255, 16, dtype=np.uint8).tobytes()
    out = load_bytes(tmp_path, "c.jpg", bytes(jpg))
    assert out.shape == (64, 64, 3)
    png = bytearray(encode(Image.fromarray(textured_image(64, 64)), "PNG"))
    png[len(png) // 2] ^= 0xFF  # breaks the zlib stream
    assert reason_category(check_image(write(tmp_path, "c.png", bytes(png)))) == "corrupt"


def test_truncated_16bit_colour_png_is_truncated_not_half_decoded(tmp_path):
    data = png_bytes(np.random.RandomState(0).randint(0, 65535, (32, 32, 3)).astype(np.uint16), 2, 16)
    assert reason_category(check_image(write(tmp_path, "t.png", data[: len(data) // 2]))) == "truncated"


# ---- hashing --------------------------------------------------------------------------------------------


def test_file_sha1_streams_and_matches_hashlib(tmp_path):
    data = np.random.RandomState(0).randint(0, 256, 3 * (1 << 20) + 17, dtype=np.uint8).tobytes()
    path = write(tmp_path, "x.bin", data)
    assert file_sha1(path) == hashlib.sha1(data).hexdigest()
    assert file_sha1(path, chunk_size=1000) == hashlib.sha1(data).hexdigest()
    with pytest.raises(OSError):
        file_sha1(tmp_path / "missing.jpg")


def test_check_image_with_sha1_reads_once_and_agrees(tmp_path):
    expected = write_tricky_images(tmp_path)
    for name in ["rgb.png", "truncated.jpg", "zero_byte.jpg", "directory.jpg"]:
        path = tmp_path / name
        reason, digest = check_image_with_sha1(path)
        assert reason == check_image(path)
        assert (reason is None) == (expected[name] is None)
        assert digest == (file_sha1(path) if path.is_file() else "")
