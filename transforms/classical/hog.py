"""HOG: keep only the local gradient-orientation structure, drawn as scikit-image's HOG visualisation.

Published pipeline (the study's ``hog`` script): the image is resized to shorter side 500 (done by
our data layer), converted to grayscale with ``cv2.cvtColor(..., COLOR_RGB2GRAY)``, passed to
``skimage.feature.hog(gray, visualize=True, transform_sqrt=True)`` with the remaining defaults
(9 orientations, 8x8 pixels per cell, 3x3 cells per block, L2-Hys), and the visualisation image is
scaled with ``cv2.normalize(hog_image, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)``. The
output is one uint8 channel. ``channels: rgb`` instead runs HOG on the colour image
(``channel_axis=-1``: per pixel the channel with the largest gradient magnitude is used).

Why our own implementation. scikit-image draws the visualisation with one ``skimage.draw.line``
call per cell and orientation in Python (about 26k calls on a 500x375 image) and then block-
normalises the descriptor in another Python loop we do not need: about 3 images per second, far
too slow for millions of images. Here the same numbers come from whole-array NumPy operations:

1. ``sqrt`` via a 256-entry lookup table (``cv2.LUT``; identical to ``np.sqrt`` of the float64 image);
2. central differences ``f[i+1] - f[i-1]`` per axis, zero on the first and last row/column
   (scikit-image's ``_hog_channel_gradient``); for colour, per pixel the channel with the largest
   ``hypot`` (the first on ties), decided on squared magnitudes and, for near ties, with ``hypot``;
3. magnitude ``hypot(g_col, g_row)`` and unsigned orientation ``rad2deg(arctan2(g_row, g_col)) % 180``;
4. hard assignment to bins ``[e_i, e_{i+1})`` with ``e_i = float32(180/n) * i`` in float32 (as in
   scikit-image's Cython kernel; an orientation that rounds to exactly 180 falls in no bin there
   and here), and the cell histogram = sum of magnitudes / cell area. The Cython kernel sums in
   a C ``float`` (float32) in row-major pixel order; we reproduce that rounding exactly by adding
   the in-cell positions one after another, each step vectorised over all cells (a loop of
   ``c_row * c_col`` = 64 array operations, not a loop over cells or image pixels);
5. visualisation: for orientation ``o`` a Bresenham line (same pixels as ``skimage.draw.line``)
   through the cell centre, perpendicular to the bin's mid-angle, of half-length
   ``min(pixels_per_cell) // 2 - 1``, carries the cell's (un-normalised, i.e. before block
   normalisation) histogram value, summed over orientations in order ``o = 0 .. n-1``. The lines
   of all cells are the same stamp shifted by whole cells, so each (orientation, stamp pixel) is
   one strided add over all cells. Only full cells are drawn; the rest stays 0, as in scikit-image.

Exactness: the float64 visualisation equals ``skimage.feature.hog(..., visualize=True)[1]``
bit for bit on every image we tested (gray and colour, gray stored as RGB, sizes that are not
multiples of 8, other orientation counts and cell sizes, with and without sqrt); the tests allow a
relative difference of 1e-9 of the maximum and require identical uint8 output. Speed on one thread
of a busy 2-core machine, 500x375 image: ~20-26x scikit-image in gray mode (~70 vs ~3 images/s),
~14-16x in colour mode (``benchmarks/bench_hog_sift.py``). Unlike scikit-image we do not refuse
images smaller than one block (3x3 cells): the block normalisation is not part of the
visualisation, so any image with a full cell is drawn (and a smaller one is all zeros).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from transforms.base import Transform
from transforms.registry import register_transform

CHANNEL_MODES = ("gray", "rgb")
_SQRT_LUT = np.sqrt(np.arange(256, dtype=np.float64))


def bresenham_line(r0: int, c0: int, r1: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the integer line from (r0, c0) to (r1, c1), both ends included.

    The same pixel set and order as ``skimage.draw.line``: step along the longer axis, move on the
    shorter axis while the error term ``d`` is non-negative, and finish exactly on the end point.
    Only used on a handful of short lines per image size (then cached), so a Python loop is fine.
    """
    r, c = r0, c0
    dr, dc = abs(r1 - r0), abs(c1 - c0)
    step_c = 1 if c1 - c0 > 0 else -1
    step_r = 1 if r1 - r0 > 0 else -1
    steep = dr > dc
    if steep:
        r, c, dr, dc, step_r, step_c = c, r, dc, dr, step_c, step_r
    d = 2 * dr - dc
    rows, cols = [], []
    for _ in range(dc):
        rows.append(c if steep else r)
        cols.append(r if steep else c)
        while d >= 0:
            r += step_r
            d -= 2 * dc
        c += step_c
        d += 2 * dr
    rows.append(r1)
    cols.append(c1)
    return np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)


@lru_cache(maxsize=512)
def _line_stamps(
    orientations: int, cell: tuple[int, int], n_cells: tuple[int, int]
) -> tuple[tuple[tuple[np.ndarray | None, np.ndarray | None, np.ndarray], ...], ...]:
    """Per orientation: groups ``(cell rows or None = all, cell cols or None = all, flat in-cell pixel ids)``.

    scikit-image draws, for cell (r, c) and orientation o, ``line(int(cr - dc), int(cc + dr),
    int(cr + dc), int(cc - dr))`` with centre ``(cr, cc) = (r*c_row + c_row//2, c*c_col + c_col//2)``
    and ``(dr, dc) = radius * (sin, cos)(pi * (o + 0.5) / n)``. The end points are evaluated here for
    every cell row and column with the same float64 arithmetic. Relative to the cell's corner they
    are normally the same in every cell (one group); should float rounding ever make them differ,
    the cells are split into groups so that each cell still gets exactly its own line.
    """
    c_row, c_col = cell
    n_rows, n_cols = n_cells
    radius = min(c_row, c_col) // 2 - 1
    mid = np.pi * (np.arange(orientations) + 0.5) / orientations
    dr_arr = radius * np.sin(mid)
    dc_arr = radius * np.cos(mid)
    centre_r = (np.arange(n_rows) * c_row + c_row // 2).astype(np.float64)
    centre_c = (np.arange(n_cols) * c_col + c_col // 2).astype(np.float64)
    corner_r = np.arange(n_rows) * c_row
    corner_c = np.arange(n_cols) * c_col
    stamps = []
    for dr, dc in zip(dr_arr, dc_arr):
        # int() truncates; all end points are positive (radius < c//2 <= centre), so trunc == int().
        rows = np.stack([np.trunc(centre_r - dc), np.trunc(centre_r + dc)], 1).astype(np.intp) - corner_r[:, None]
        cols = np.stack([np.trunc(centre_c + dr), np.trunc(centre_c - dr)], 1).astype(np.intp) - corner_c[:, None]
        row_pairs, row_group = np.unique(rows, axis=0, return_inverse=True)
        col_pairs, col_group = np.unique(cols, axis=0, return_inverse=True)
        groups = []
        for i, (r0, r1) in enumerate(row_pairs.tolist()):
            for j, (c0, c1) in enumerate(col_pairs.tolist()):
                rr, cc = bresenham_line(r0, c0, r1, c1)
                sel_r = None if len(row_pairs) == 1 else np.flatnonzero(row_group.ravel() == i)
                sel_c = None if len(col_pairs) == 1 else np.flatnonzero(col_group.ravel() == j)
                groups.append((sel_r, sel_c, rr * c_col + cc))
        stamps.append(tuple(groups))
    return tuple(stamps)


#: Two channels whose squared gradient magnitudes are this close (relatively) are compared with the
#: exact ``hypot`` instead, so that the channel choice equals scikit-image's ``argmax`` of hypot
#: (first channel on ties) even where rounding could reorder them. Far above hypot's error (~1 ulp).
_NEAR_TIE = 1e-9
#: Scratch buffers above this size are not kept between calls (a 500x2000 float64 plane is 8 MB).
_MAX_CACHED_BYTES = 8 << 20


class _Workspace(threading.local):
    """Scratch arrays reused between calls: one flat buffer per role, grown on demand, per thread.

    Why: a 500x375 float64 temporary is 1.5 MB; NumPy gets such blocks from the OS, which zero-fills
    them page by page on first touch. With a dozen or more temporaries per image those page faults
    cost about as much as the arithmetic (2x on the colour path on a busy machine). Images differ in
    size, so the buffers are flat, sized to the largest image seen, and viewed with the needed shape.
    Nothing returned to a caller of this module lives in a workspace buffer.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes > _MAX_CACHED_BYTES:
            return np.empty(shape, dtype)
        buf = self.buffers.get(role)
        if buf is None or buf.nbytes < nbytes:
            buf = self.buffers[role] = np.empty(nbytes, np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)


_WORK = _Workspace()


def _channel_gradients(f: np.ndarray, h: int, w: int, role: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's ``_hog_channel_gradient`` restricted to the top-left h x w pixels (contiguous).

    Central differences ``f[i+1] - f[i-1]`` along each axis, zero on the image's first and last
    row (column). `f` holds the area plus, where the image has it, one more row and column.
    """
    g_row = _WORK.get(role + "_row", (h, w))
    g_col = _WORK.get(role + "_col", (h, w))
    g_row[0] = 0
    g_col[:, 0] = 0
    r = min(h, f.shape[0] - 1)  # rows 1 .. r-1 have both neighbours; a row h-1 that is the image's last stays 0
    c = min(w, f.shape[1] - 1)
    np.subtract(f[2 : r + 1, :w], f[: r - 1, :w], out=g_row[1:r])
    np.subtract(f[:h, 2 : c + 1], f[:h, : c - 1], out=g_col[:, 1:c])
    g_row[r:] = 0
    g_col[:, c:] = 0
    return g_row, g_col


def _select(mask: np.ndarray, a: np.ndarray, b: np.ndarray, role: str) -> np.ndarray:
    """``np.where(mask, a, b)`` for contiguous float64 arrays, bit-exact, via integer bit operations.

    ``b ^ ((a ^ b) & -mask)`` takes the bits of ``a`` where mask is set: branch-free, several times
    faster than ``np.where`` / ``np.copyto(where=)`` on the irregular masks of natural images. The
    result may be written over `b`.
    """
    a_bits, b_bits = a.view(np.int64), b.view(np.int64)
    bits = _WORK.get(role + "_bits", a.shape, np.int64)
    np.negative(mask, out=bits, dtype=np.int64)  # 0 or -1 (all ones)
    picked = _WORK.get(role + "_picked", a.shape, np.int64)
    np.bitwise_xor(a_bits, b_bits, out=picked)
    picked &= bits
    np.bitwise_xor(picked, b_bits, out=b_bits)
    return b


def _gradients(image: np.ndarray, transform_sqrt: bool, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column gradients (float64) of the top-left h x w pixels, as scikit-image computes them.

    Only the covered area (plus one row/column of neighbours) is processed; the zero rows/columns
    of scikit-image are at the image borders, so they appear here only where the area touches them.
    Colour is reduced to, per pixel, the channel of largest gradient magnitude. The returned arrays
    are workspace buffers (valid until the next call).
    """
    image = np.ascontiguousarray(image[: h + 1, : w + 1])
    if transform_sqrt:  # cv2.LUT: the same table lookup as _SQRT_LUT[image], several times faster
        f = cv2.LUT(image, _SQRT_LUT, dst=_WORK.get("plane", image.shape))
    else:
        f = _WORK.get("plane", image.shape)
        np.copyto(f, image, casting="unsafe")
    if image.ndim == 2:
        return _channel_gradients(f, h, w, "g0")
    if all(np.array_equal(image[:, :, 0], image[:, :, ch]) for ch in range(1, image.shape[2])):
        # A gray image stored as colour (common for B&W photos): every channel has the same
        # gradient, the hypot argmax picks the first, so this is exactly the colour result.
        return _channel_gradients(f[:, :, 0], h, w, "g0")
    grads = [_channel_gradients(f[:, :, ch], h, w, f"g{ch}") for ch in range(image.shape[2])]
    squares = []
    tmp = _WORK.get("tmp", (h, w))
    for ch, (g_r, g_c) in enumerate(grads):
        sq = _WORK.get(f"sq{ch}", (h, w))
        np.multiply(g_r, g_r, out=sq)
        np.multiply(g_c, g_c, out=tmp)
        sq += tmp
        squares.append(sq)
    # scikit-image: argmax over channels of hypot(g_row, g_col), the first channel on ties. The
    # squared magnitudes give the same choice except near ties between channels with different
    # gradients, where rounding could reorder them; those few pixels are re-decided with hypot.
    # (Channels with identical gradients, e.g. gray areas of a colour photo, tie exactly in both.)
    top, sel_row, sel_col = _WORK.get("top", (h, w)), _WORK.get("sel_row", (h, w)), _WORK.get("sel_col", (h, w))
    np.copyto(top, squares[0])
    np.copyto(sel_row, grads[0][0])
    np.copyto(sel_col, grads[0][1])
    wins = _WORK.get("wins", (h, w), np.bool_)
    for sq, (g_r, g_c) in zip(squares[1:], grads[1:]):
        np.greater(sq, top, out=wins)  # strictly: an earlier channel keeps a tie
        _select(wins, sq, top, "select")
        _select(wins, g_r, sel_row, "select")
        _select(wins, g_c, sel_col, "select")
    threshold = np.multiply(top, 1 - _NEAR_TIE, out=tmp)
    near = _WORK.get("near", (h, w), np.bool_)
    near[...] = False
    differs = _WORK.get("differs", (h, w), np.bool_)
    for sq, (g_r, g_c) in zip(squares, grads):
        np.not_equal(g_r, sel_row, out=differs)
        differs |= g_c != sel_col
        differs &= sq >= threshold
        near |= differs
    if near.any():
        rows, cols = np.nonzero(near)
        cand_row = np.stack([g_r[rows, cols] for g_r, _ in grads])
        cand_col = np.stack([g_c[rows, cols] for _, g_c in grads])
        exact = np.hypot(cand_row, cand_col).argmax(axis=0)
        picked = np.arange(len(rows))
        sel_row[rows, cols] = cand_row[exact, picked]
        sel_col[rows, cols] = cand_col[exact, picked]
    return sel_row, sel_col


def _orientation_bins(g_row: np.ndarray, g_col: np.ndarray, orientations: int) -> np.ndarray:
    """Bin of ``rad2deg(arctan2(g_row, g_col)) % 180`` as scikit-image's kernel assigns it (workspace array).

    Bin i holds e[i] <= o < e[i+1] with e[i] = float32(180/n) * i in float32 arithmetic, as in the
    Cython kernel; o >= e[n] (a tiny negative angle + 180 rounds to exactly 180) gets the extra bin
    n, which no histogram reads. NumPy's float ``% 180`` on x in [-180, 180] is x, or x + 180 for
    x < 0, and +0 for x = +-180; computed here directly (the generic divmod is slow). A first
    guess by division is then corrected against the exact edges (division can round across one).
    """
    shape = g_row.shape
    o = np.arctan2(g_row, g_col, out=_WORK.get("orientation", shape))
    np.rad2deg(o, out=o)
    o[o == 180] = 0.0  # before the shift below: an angle that *becomes* 180 must stay 180
    np.add(o, 180.0, out=o, where=o < 0)
    step = np.float32(180.0 / orientations)
    edges = np.append((step * np.arange(orientations + 1, dtype=np.float32)).astype(np.float64), np.inf)
    tmp = np.multiply(o, 1.0 / float(step), out=_WORK.get("tmp", shape))
    bins = _WORK.get("bins", shape, np.intp)
    np.copyto(bins, tmp, casting="unsafe")  # truncation; o >= 0
    np.minimum(bins, orientations, out=bins)
    edge = np.take(edges, bins, out=tmp, mode="clip")
    bins -= o < edge
    np.take(edges, bins + 1, out=edge, mode="clip")
    bins += o >= edge
    return bins


def hog_cell_histograms(
    g_row: np.ndarray, g_col: np.ndarray, orientations: int, cell: tuple[int, int]
) -> np.ndarray:
    """(n_cells_row, n_cells_col, orientations) float64 histograms, equal to scikit-image's.

    Only full cells are counted. scikit-image's kernel sums the magnitudes of a cell in a C float,
    row by row; here the in-cell positions are visited in that order, each step one vectorised
    gather-add-scatter over all cells (every cell gets exactly one pixel per step), and the float64
    sum is rounded to float32 after every addition, as in C.
    """
    c_row, c_col = cell
    n_rows, n_cols = g_row.shape[0] // c_row, g_row.shape[1] // c_col
    h, w = n_rows * c_row, n_cols * c_col
    g_row, g_col = g_row[:h, :w], g_col[:h, :w]
    magnitude = np.hypot(g_col, g_row, out=_WORK.get("magnitude", (h, w)))
    bins = _orientation_bins(g_row, g_col, orientations)
    # In-cell position (pr, pc) of every cell is a strided (n_rows, n_cols) view; cell k's bin b
    # accumulates in slot k * (orientations + 1) + b of a flat float32 array.
    bins = bins.reshape(n_rows, c_row, n_cols, c_col)
    values = magnitude.reshape(n_rows, c_row, n_cols, c_col)
    first_slot = np.arange(n_rows * n_cols).reshape(n_rows, n_cols) * (orientations + 1)
    total = np.zeros(n_rows * n_cols * (orientations + 1), dtype=np.float32)
    for pr in range(c_row):
        for pc in range(c_col):
            slot = bins[:, pr, :, pc] + first_slot
            # C: float total += double value, i.e. add in double, round to float.
            total[slot] = total[slot] + values[:, pr, :, pc]
    total = total.reshape(n_rows, n_cols, orientations + 1)[..., :orientations]
    return (total / np.float32(c_row * c_col)).astype(np.float64)


def hog_visualisation(
    image: np.ndarray,
    orientations: int = 9,
    pixels_per_cell: tuple[int, int] = (8, 8),
    transform_sqrt: bool = True,
) -> np.ndarray:
    """HxW float64: ``skimage.feature.hog(image, ..., visualize=True)[1]`` for uint8 HxW or HxWxC input."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"hog expects an HxW or HxWxC uint8 image, got {image.dtype} {image.shape}")
    c_row, c_col = int(pixels_per_cell[0]), int(pixels_per_cell[1])
    out = np.zeros(image.shape[:2], dtype=np.float64)
    n_rows, n_cols = image.shape[0] // c_row, image.shape[1] // c_col
    if n_rows == 0 or n_cols == 0:
        return out
    h, w = n_rows * c_row, n_cols * c_col
    g_row, g_col = _gradients(image, transform_sqrt, h, w)
    hist = hog_cell_histograms(g_row, g_col, orientations, (c_row, c_col))
    cells = out[:h, :w].reshape(n_rows, c_row, n_cols, c_col)  # a view: writes land in `out`
    for o, groups in enumerate(_line_stamps(orientations, (c_row, c_col), (n_rows, n_cols))):
        for sel_r, sel_c, pixels in groups:
            if sel_r is None and sel_c is None:
                # One stamp pixel at a time, for all cells at once (a line has < cell-size pixels).
                for p in pixels.tolist():
                    cells[:, p // c_col, :, p % c_col] += hist[:, :, o]
            else:  # rare: cells whose line end points round differently (see _line_stamps)
                rows = np.arange(n_rows) if sel_r is None else sel_r
                cols = np.arange(n_cols) if sel_c is None else sel_c
                for p in pixels.tolist():
                    index = (rows[:, None], p // c_col, cols[None, :], p % c_col)
                    cells[index] += hist[rows[:, None], cols[None, :], o]
    return out


def to_uint8_min_max(x: np.ndarray) -> np.ndarray:
    """``cv2.normalize(x, None, 0, 255, NORM_MINMAX, CV_8U)`` as in the published script.

    Rounds to nearest (ties to even); a constant image (range <= DBL_EPSILON) maps to all zeros.
    """
    return cv2.normalize(x, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)


@register_transform("hog")
class Hog(Transform):
    """scikit-image's HOG visualisation, min-max scaled to one uint8 channel (HxW).

    Precomputed and cached, classified with augmentation group "b" (crop + flip): a flipped HOG
    drawing is still a HOG drawing, while colour jitter would add nothing to a gray-level map.
    ``channels: gray`` (the published script) runs on ``cv2.cvtColor(RGB2GRAY)``; ``rgb`` on the
    colour image with scikit-image's dominant-channel rule. See the module docstring for exactness.
    """
    keeps = "gradient orientations"
    published = (
        "scikit-image HOG visualisation (9 orientations, 8x8 cells, transform_sqrt) on grayscale, min-max to "
        "uint8; our vectorised implementation equals scikit-image's output exactly and is faster "
        "(benchmarks/results/transforms.md)"
    )

    kind = "precomputed"
    augment_group = "b"
    family = "structural"
    has_image_stage = True
    has_tensor_stage = False

    def __init__(
        self,
        orientations: int = 9,
        pixels_per_cell: Any = (8, 8),
        transform_sqrt: bool = True,
        channels: str = "gray",
    ) -> None:
        if isinstance(orientations, bool) or not isinstance(orientations, int) or orientations < 1:
            raise ValueError(f"hog: orientations must be a positive integer, got {orientations!r}")
        cells = [pixels_per_cell] * 2 if isinstance(pixels_per_cell, int) else list(pixels_per_cell)
        if len(cells) != 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in cells):
            # radius = min(cell) // 2 - 1 < 0 for 1-pixel cells: scikit-image's lines leave the cell.
            raise ValueError(f"hog: pixels_per_cell must be an integer >= 2 or a pair of them, got {pixels_per_cell!r}")
        if not isinstance(transform_sqrt, bool):
            raise ValueError(f"hog: transform_sqrt must be true or false, got {transform_sqrt!r}")
        if channels not in CHANNEL_MODES:
            raise ValueError(f"hog: channels must be one of {CHANNEL_MODES}, got {channels!r}")
        self.orientations = orientations
        self.pixels_per_cell = [int(cells[0]), int(cells[1])]  # a list, like its YAML / JSON form
        self.transform_sqrt = transform_sqrt
        self.channels = channels

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 (or HxW) uint8 RGB in, HxW uint8 out."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"hog expects an HxWx3 or HxW uint8 image, got {image.dtype} {image.shape}")
        if image.ndim == 3 and self.channels == "gray":
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        vis = hog_visualisation(image, self.orientations, self.pixels_per_cell, self.transform_sqrt)
        return to_uint8_min_max(vis)
