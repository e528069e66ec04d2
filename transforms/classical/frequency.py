"""Frequency filters: keep only the low (lpf) or the high (hpf) spatial frequencies.

Published recipe (group "b": the crop tensor in [0, 1], no normalisation): grayscale (ITU-R
BT.601 luma 0.299/0.587/0.114), 2-D FFT, centred spectrum, mask by the distance ``d`` of each
frequency from the centre of the HxW grid in frequency-index units, inverse FFT, real part,
per-image min-max to [0, 1], replicated to 3 channels.

* ideal: lpf keeps ``d <= r``, hpf keeps ``d > r`` (so the DC term is always removed by hpf);
* Butterworth of order n: lpf gain ``1 / (1 + (d/r)^(2n))``, hpf gain ``1 / (1 + (r/d)^(2n))``
  (= 1 - lpf gain, 0 at d = 0, 0.5 at d = r).

Radius and image size: the published radius 40 is in units of the 224x224 grid. At another input
size the radius scales with it, ``r = radius * size / reference_size`` (per axis for a
non-square input, i.e. the distance is measured in reference-grid units), so that the same
fraction of the spectrum is kept at every resolution. ``reference_size: null`` uses ``radius``
as-is in index units of the actual input.

Implementation notes. The mask depends only on ``|frequency|`` so it is symmetric under
``f -> -f``; the filtered spectrum of a real image stays Hermitian and the inverse FFT is real.
That lets us use ``rfft2``/``irfft2`` (half the work of the full complex FFT) and apply the mask
in the unshifted FFT layout, which is the same as fftshift -> mask -> ifftshift. Masks are built
once per (H, W, device) and cached on the instance.
"""

from __future__ import annotations

import torch

from transforms.base import Transform
from transforms.registry import register_transform

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
FILTERS = ("ideal", "butterworth")
#: A filtered image whose value range is below this is treated as constant and maps to zeros.
#: Float32 FFT round-off on [0, 1] images is ~1e-7, so e.g. the hpf of a constant image (exactly
#: zero in theory) must not be stretched into noise by the min-max.
CONSTANT_RANGE = 1e-5


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) RGB (or C = 1) -> (..., H, W) BT.601 luma."""
    if x.shape[-3] == 1:
        return x[..., 0, :, :]
    if x.shape[-3] != 3:
        raise ValueError(f"expected 1 or 3 channels at dim -3, got shape {tuple(x.shape)}")
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device)
    return torch.einsum("...chw,c->...hw", x, w)


def min_max(y: torch.Tensor, constant_range: float = CONSTANT_RANGE) -> torch.Tensor:
    """Per-image min-max of (..., H, W) to [0, 1]; a (near-)constant image maps to all zeros."""
    lo = y.amin(dim=(-2, -1), keepdim=True)
    hi = y.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    flat = span <= constant_range
    return torch.where(flat, torch.zeros_like(y), (y - lo) / torch.where(flat, torch.ones_like(span), span))


class FrequencyFilter(Transform):
    """Shared implementation of lpf and hpf; subclasses only choose which side of r to keep.

    `filter_gray` exposes the raw filtered grayscale image (before min-max) and `gain` the
    centred mask, so both can be checked against known answers.
    """

    kind = "online"
    augment_group = "b"
    family = "frequency"
    has_image_stage = False
    has_tensor_stage = True
    #: True for the high-pass side.
    high_pass: bool = False

    def __init__(
        self,
        radius: float = 40,
        reference_size: int | None = 224,
        filter: str = "ideal",  # noqa: A002  (the published parameter name)
        order: int = 2,
    ) -> None:
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
            raise ValueError(f"{self.name}: radius must be a positive number, got {radius!r}")
        if reference_size is not None and (
            isinstance(reference_size, bool) or not isinstance(reference_size, int) or reference_size <= 0
        ):
            raise ValueError(f"{self.name}: reference_size must be a positive integer or null, got {reference_size!r}")
        if filter not in FILTERS:
            raise ValueError(f"{self.name}: unknown filter {filter!r}; choose one of {', '.join(FILTERS)}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"{self.name}: order must be a positive integer, got {order!r}")
        self.radius = radius
        self.reference_size = reference_size
        self.filter = filter
        self.order = order
        self._masks: dict[tuple[int, int, str], torch.Tensor] = {}

    # --- the mask -----------------------------------------------------------------------------
    def _distance(self, freq_h: torch.Tensor, freq_w: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Distance of integer frequencies from DC, in units where `radius` applies (reference grid)."""
        sh = 1.0 if self.reference_size is None else self.reference_size / h
        sw = 1.0 if self.reference_size is None else self.reference_size / w
        return torch.hypot((freq_h * sh)[:, None], (freq_w * sw)[None, :])

    def _gain_of_distance(self, d: torch.Tensor) -> torch.Tensor:
        r = float(self.radius)
        if self.filter == "ideal":
            keep = d > r if self.high_pass else d <= r
            return keep.to(torch.float64)
        low = 1.0 / (1.0 + (d / r) ** (2 * self.order))
        return 1.0 - low if self.high_pass else low

    def gain(self, h: int, w: int) -> torch.Tensor:
        """The centred (fftshift layout) HxW gain, float64: DC at (h // 2, w // 2)."""
        freq_h = torch.arange(h, dtype=torch.float64) - h // 2
        freq_w = torch.arange(w, dtype=torch.float64) - w // 2
        return self._gain_of_distance(self._distance(freq_h, freq_w, h, w))

    def _rfft_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """The gain in rfft2 layout, (h, w // 2 + 1) float32, cached per (h, w, device)."""
        key = (h, w, str(device))
        mask = self._masks.get(key)
        if mask is None:
            freq_h = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64)  # 0, 1, ..., -1 (integers)
            freq_w = torch.fft.rfftfreq(w, d=1.0 / w, dtype=torch.float64)  # 0 .. w // 2
            mask = self._gain_of_distance(self._distance(freq_h, freq_w, h, w)).to(torch.float32).to(device)
            self._masks[key] = mask
        return mask

    # --- the transform ------------------------------------------------------------------------
    def filter_gray(self, gray: torch.Tensor) -> torch.Tensor:
        """Filter (..., H, W) grayscale images; returns the real filtered image, before min-max."""
        h, w = gray.shape[-2:]
        work = gray if gray.dtype in (torch.float32, torch.float64) else gray.float()
        spectrum = torch.fft.rfft2(work)
        mask = self._rfft_mask(h, w, gray.device)
        return torch.fft.irfft2(spectrum * mask.to(work.dtype), s=(h, w))

    def apply_tensor(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(..., 3, H, W) in [0, 1] -> (..., 3, H, W): the filtered luma, min-max scaled, in 3 channels."""
        y = min_max(self.filter_gray(to_gray(x)))
        return y.unsqueeze(-3).expand(*y.shape[:-2], 3, *y.shape[-2:]).to(x.dtype).contiguous()

    def effective_radius(self, size: int) -> float:
        """The radius in frequency-index units at input `size` (see the module docstring)."""
        return float(self.radius) if self.reference_size is None else self.radius * size / self.reference_size


@register_transform("lpf")
class LowPassFilter(FrequencyFilter):
    """Keep the low spatial frequencies (coarse shape and shading; removes texture and noise)."""
    keeps = "low frequencies"
    published = "ideal filter, radius 40 on a 224 grid; `filter=butterworth` (order 2)"

    high_pass = False


@register_transform("hpf")
class HighPassFilter(FrequencyFilter):
    """Keep the high spatial frequencies (edges, texture, noise, compression artefacts)."""
    keeps = "high frequencies"
    published = "as lpf, keeps d > 40"

    high_pass = True


__all__ = ["FrequencyFilter", "HighPassFilter", "LowPassFilter", "min_max", "to_gray"]
