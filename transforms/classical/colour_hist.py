"""Colour histograms: keep the colour distribution of an image and nothing about where the colours are.

If a dataset classifier still separates datasets from the distribution of pixel colours alone, that
much bias lives in colour statistics (white balance, saturation, typical scenes' palettes, JPEG
and camera pipelines) rather than in shapes, layout or semantics. ``mean_rgb`` keeps three
numbers per image; these transforms keep the whole distribution (or a binned version of it).

Two forms, one per classifier:

* ``color_hist`` (:class:`ColourHistogramImage`) is an *image*, so the ConvNeXt recipe classifies it
  unchanged. ``mode: sorted`` (default) re-sorts the image's pixels by colour and lays them out
  row-major; ``mode: rendered`` draws the three per-channel histograms as bar charts.
* ``color_hist_vector`` (:class:`ColourHistogramVector`) is a 1-D float32 *feature vector* (per-channel
  or joint RGB histogram), classified by :class:`classifiers.mlp.MLPClassifier` (``model=mlp``).

Both run online on the full decoded image, before augmentation, like ``mean_rgb``: the histogram
is that of the whole image, not of a crop.

No crops in the image form. The image form is a chart: position is the quantile (``sorted``) or the
bin (``rendered``). A crop of it keeps a *sub-range* of the sorted colours or of the bins, and the
evaluation's centre crop drops the first and last rows and columns, i.e. both tails of the
distribution. So the class declares ``view = "whole"``: the classifier sees the chart resized to the
recipe's image size, never cropped or flipped, whatever the augmentation group says (until issue 21
it went through group "c"'s crops). The vector form is not cropped either.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from transforms.base import Transform
from transforms.registry import register_transform

IMAGE_MODES = ("sorted", "rendered")
VECTOR_MODES = ("per_channel", "joint")


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
        high is not None and value > high
    ):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def _check_rgb(image: np.ndarray, who: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{who} expects a non-empty HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")


def _bin_lut(bins: int) -> np.ndarray:
    """Value -> bin for `bins` equal-width bins over 0..255: bin = floor(v * bins / 256)."""
    return (np.arange(256, dtype=np.int64) * bins // 256).astype(np.uint8)  # bins <= 256, so levels fit uint8


def channel_counts(image: np.ndarray) -> np.ndarray:
    """3x256 int64 counts of each channel's values (one `np.bincount` per channel, exact)."""
    return np.stack([np.bincount(image[..., c].ravel(), minlength=256) for c in range(3)])


def per_channel_histograms(image: np.ndarray, bins: int) -> np.ndarray:
    """3 x `bins` float64 histograms of an HxWx3 uint8 image, each normalised to sum to 1."""
    counts = channel_counts(image)
    lut = _bin_lut(bins)
    binned = np.stack([np.bincount(lut, weights=counts[c], minlength=bins) for c in range(3)])
    return binned / (image.shape[0] * image.shape[1])


def sorted_colour_keys(image: np.ndarray) -> np.ndarray:
    """The image's pixels as sortable int64 keys ``luma << 32 | hue << 24 | R << 16 | G << 8 | B``.

    The order is luminance first (OpenCV's integer Rec.601 ``COLOR_RGB2GRAY``), then hue (OpenCV's
    ``COLOR_RGB2HSV_FULL`` hue, 0..255, 0 for greys), then the packed RGB code. Every part is a
    function of the pixel's colour alone and the RGB code makes distinct colours distinct keys,
    so sorting the keys depends only on the multiset of colours (any spatial permutation of the
    input gives the same result), and the colour is recovered from the low 24 bits.
    """
    rgb = np.ascontiguousarray(image)
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.int64)
    hue = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(np.int64)
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    return ((luma << 32) | (hue << 24) | code).ravel()


def quantile_indices(n: int, m: int) -> np.ndarray:
    """`m` evenly spaced positions in a sorted list of `n`: the midpoints of `m` equal-mass slices.

    Position ``i`` is ``floor((i + 1/2) * n / m)``, in exact integers. For ``m == n`` this is the
    identity (every pixel kept); for ``m < n`` it subsamples; for ``m > n`` it repeats values.
    """
    i = np.arange(m, dtype=np.int64)
    return ((2 * i + 1) * n) // (2 * m)


@register_transform("color_hist")
class ColourHistogramImage(Transform):
    """The colour distribution of the image, as an image a ConvNeXt can classify.

    Keeps: the (empirical) distribution of pixel colours, jointly over R, G and B in ``sorted``
    mode, per channel and binned in ``rendered`` mode. Loses: every spatial arrangement (shapes,
    edges, textures, layout, object positions); the output is identical for any permutation of
    the input's pixels.

    ``mode: sorted`` (default). The pixels are sorted by colour (luminance, then hue, then RGB code;
    see :func:`sorted_colour_keys`) and laid out row-major, darkest at the top-left, brightest at
    the bottom-right. With ``size: null`` the output has the input's size and holds exactly the
    same multiset of pixel values. With ``size: S`` (default 64) it is an SxS image of S*S evenly
    spaced quantiles of the sorted pixels (:func:`quantile_indices`), so every image, whatever its
    size and aspect, is shown in full at one resolution: the default, because a classifier
    should compare whole distributions, and the data layer would otherwise resize/crop
    different-sized sorted images differently. 64x64 = 4096 quantiles is finer than the 8-bit
    steps that matter and keeps the cost at the sort.

    ``mode: rendered``. Each output channel is the bar chart of that channel's histogram with
    ``bins`` equal-width bins over 0..255, normalised by the pixel count (fractions summing to 1):
    the red channel draws the R histogram, and so on, so the three charts overlay in colour.
    Columns map to bins left to right; a bar's height is ``sqrt(fraction)`` of the image height
    (a solid-colour image fills one bar; a uniform histogram of 32 bins reaches ~18%, where a
    linear scale would be ~3%, two pixels at 64), with the top pixel anti-aliased so heights
    are not rounded to whole pixels. Keeps only the marginal distributions, binned: less than
    ``sorted``, but a layout a convolutional network reads easily.

    The output is uint8 HxWx3, and the classifier sees it whole (``view = "whole"``): resized to the
    recipe's image size, never cropped or flipped, in training, evaluation and the probes. A crop cut
    the darkest and brightest rows and the ends of every row, i.e. the tails of the distribution; on
    real glyph images, where the ink is a few percent of the pixels, that was the signal (issue 21:
    font_glyphs at 640 + 160 per dataset, seed 0, 29.4% cropped vs 43.3% whole, against a pixels probe
    at 33.9 / 38.8%).
    """
    keeps = "the colour distribution (pixels sorted by colour, or a rendered histogram: `mode=rendered`)"
    published = "ours"

    kind = "online"
    augment_group = "c"
    family = "colour"
    view = "whole"
    output: ClassVar[str] = "image"
    has_image_stage = True
    has_tensor_stage = False

    def __init__(self, mode: str = "sorted", size: int | None = 64, bins: int = 32) -> None:
        """
        Args:
            mode: "sorted" (pixels re-sorted by colour, the distribution kept exactly or as
                quantiles) or "rendered" (per-channel histogram bar charts).
            size: side of the square output; None keeps the input's height and width (in
                ``sorted`` mode the output is then an exact permutation of the input's pixels).
            bins: number of histogram bins per channel in ``rendered`` mode (1..256; unused by
                ``sorted``). At most ``size`` so every bin gets a column.
        """
        if mode not in IMAGE_MODES:
            raise ValueError(f"mode must be one of {IMAGE_MODES}, got {mode!r}")
        if size is not None:
            _check_int("size", size, 1)
        _check_int("bins", bins, 1, 256)
        if mode == "rendered" and size is not None and bins > size:
            raise ValueError(f"bins ({bins}) must be at most size ({size}) in rendered mode: one column per bin at least")
        self.mode = mode
        self.size = None if size is None else int(size)
        self.bins = int(bins)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB in; ``size`` x ``size`` x 3 (or HxWx3 with ``size: null``) uint8 out."""
        _check_rgb(image, "color_hist")
        h, w = image.shape[:2]
        out_h, out_w = (h, w) if self.size is None else (self.size, self.size)
        if self.mode == "sorted":
            return self._sorted(image, out_h, out_w)
        return self._rendered(image, out_h, out_w)

    @staticmethod
    def _sorted(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
        keys = np.sort(sorted_colour_keys(image))
        m = out_h * out_w
        if m != keys.size:
            keys = keys[quantile_indices(keys.size, m)]
        code = keys & 0xFFFFFF
        out = np.empty((m, 3), np.uint8)
        out[:, 0] = code >> 16
        out[:, 1] = (code >> 8) & 0xFF
        out[:, 2] = code & 0xFF
        return out.reshape(out_h, out_w, 3)

    def _rendered(self, image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
        hist = per_channel_histograms(image, self.bins)  # 3 x bins, each sums to 1
        column_bin = np.arange(out_w) * self.bins // out_w  # column -> bin, left to right
        heights = np.sqrt(hist[:, column_bin]) * out_h  # 3 x out_w, in pixels
        above_bottom = (out_h - 1 - np.arange(out_h))[:, None]  # row -> pixels above the bottom row
        out = np.empty((out_h, out_w, 3), np.uint8)
        for c in range(3):
            fill = np.clip(heights[c][None, :] - above_bottom, 0.0, 1.0)
            out[..., c] = np.floor(fill * 255.0 + 0.5).astype(np.uint8)
        return out


@register_transform("color_hist_vector")
class ColourHistogramVector(Transform):
    """The colour histogram as a feature vector, classified by a small MLP (``model=mlp``).

    Keeps: the binned colour distribution of the whole image, nothing else. ``mode: per_channel``
    (default) keeps the three marginal distributions (3 x ``bins`` numbers; loses how the
    channels co-occur, e.g. "red and blue in the same pixel" vs "in different pixels");
    ``mode: joint`` keeps the joint RGB distribution at ``bins_per_channel`` levels per channel
    (``bins_per_channel ** 3`` numbers, 512 by default; coarser in each channel, but colours stay
    whole). Loses: all spatial arrangement, and any detail finer than a bin. Every histogram is
    normalised by the pixel count, so image size does not matter, and no crop or flip applies:
    there is no augmentation for vectors.

    The pipeline calls ``apply_image`` on the decoded image and feeds the float32 vector to the
    classifier (``output = "vector"``; the classifier's input width is :meth:`vector_size`).
    """
    keeps = (
        "per-channel (or `mode=joint` RGB) histogram, classified by `model=mlp` (logistic regression with "
        "`model.kwargs.hidden=[]`)"
    )
    published = "ours"

    kind = "online"
    augment_group = "c"
    family = "colour"
    output: ClassVar[str] = "vector"
    has_image_stage = True
    has_tensor_stage = False

    def __init__(self, mode: str = "per_channel", bins: int = 32, bins_per_channel: int = 8) -> None:
        """
        Args:
            mode: "per_channel" (3 concatenated histograms R, G, B of ``bins`` bins, each summing
                to 1) or "joint" (one joint RGB histogram of ``bins_per_channel ** 3`` cells,
                summing to 1, index ``(r * B + g) * B + b``). Named ``mode`` because ``kind`` is
                the transform's stage ("online") in every transform.
            bins: bins per channel in ``per_channel`` mode (1..256, equal width over 0..255).
            bins_per_channel: levels per channel in ``joint`` mode (1..64; 64 gives 262144 dims).
        """
        if mode not in VECTOR_MODES:
            raise ValueError(f"mode must be one of {VECTOR_MODES}, got {mode!r}")
        _check_int("bins", bins, 1, 256)
        _check_int("bins_per_channel", bins_per_channel, 1, 64)
        self.mode = mode
        self.bins = int(bins)
        self.bins_per_channel = int(bins_per_channel)

    def vector_size(self) -> int:
        """Length of the vector `apply_image` returns."""
        return 3 * self.bins if self.mode == "per_channel" else self.bins_per_channel**3

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB in, 1-D float32 histogram of length `vector_size()` out."""
        _check_rgb(image, "color_hist_vector")
        if self.mode == "per_channel":
            return per_channel_histograms(image, self.bins).astype(np.float32).ravel()
        b = self.bins_per_channel
        q = cv2.LUT(np.ascontiguousarray(image), _bin_lut(b))  # per-channel level, uint8
        cell = (q[..., 0].astype(np.int32) * b + q[..., 1]) * b + q[..., 2]
        counts = np.bincount(cell.ravel(), minlength=b**3)
        return (counts / cell.size).astype(np.float32)
