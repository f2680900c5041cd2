"""Blur kernels of Real-ESRGAN's degradation model (Wang et al., ICCVW 2021, section 3.2).

Every kernel is a normalised (K, K) float32 array, K odd, centred on the middle tap:

- Gaussian ``exp(-d/2)``, generalized Gaussian ``exp(-d**beta / 2)`` and plateau ``1 / (1 + d**beta)``,
  where ``d = x^T S^-1 x`` is the squared Mahalanobis distance for the covariance
  ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T`` (isotropic: ``sigma_y = sigma_x, theta = 0``).
  beta = 1 makes the generalized Gaussian a Gaussian; beta < 1 gives it heavier tails, beta > 1 a flatter top.
- the sinc kernel: a circular ideal low-pass filter with cut-off ``omega`` (radians, pi = Nyquist),
  ``omega J1(omega r) / (2 pi r)``, which models ringing and overshoot.

`random_blur_kernel` and `random_final_sinc` draw kernels the way Real-ESRGAN's data pipeline does,
from a ``numpy.random.Generator`` (the caller seeds it per sample: hypir_core.hq_data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
SMALLEST_KERNEL = 7  # Real-ESRGAN draws kernel sizes 7, 9, ..., up to the configured size


def _squared_distance(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """x^T S^-1 x on a (size, size) grid of integer offsets from the centre (columns x, rows y)."""
    if size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {size}")
    offsets = np.arange(size, dtype=np.float64) - size // 2
    x, y = np.meshgrid(offsets, offsets)
    cos, sin = math.cos(theta), math.sin(theta)
    # Coordinates along the kernel's own axes (rotated by -theta), each scaled by its sigma.
    along = (cos * x + sin * y) / sigma_x
    across = (-sin * x + cos * y) / sigma_y
    return along**2 + across**2


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """A (size, size) Gaussian blur kernel; isotropic when ``sigma_y`` is None."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(np.exp(-0.5 * _squared_distance(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0,
                                beta: float = 1.0) -> np.ndarray:
    """A generalized Gaussian kernel ``exp(-d**beta / 2)``: beta = 1 is the Gaussian."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(np.exp(-0.5 * _squared_distance(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0,
                   beta: float = 1.0) -> np.ndarray:
    """A plateau-shaped kernel ``1 / (1 + d**beta)``: half its peak at Mahalanobis distance 1 for every beta."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(1.0 / (1.0 + _squared_distance(size, sigma_x, sigma_y, theta) ** beta))


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """A circular low-pass (2-D sinc) kernel with cut-off frequency ``cutoff`` in radians (pi = Nyquist)."""
    radius = np.sqrt(_squared_distance(size, 1.0, 1.0, 0.0))
    centre = radius == 0
    safe = np.where(centre, 1.0, radius)
    kernel = cutoff * special.j1(cutoff * safe) / (2 * np.pi * safe)
    kernel[centre] = cutoff**2 / (4 * np.pi)  # the limit of the expression at r = 0
    return _normalised(kernel)


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a centred odd kernel to (size, size), so kernels of different sizes stack into one batch."""
    pad = (size - kernel.shape[0]) // 2
    if pad < 0 or (size - kernel.shape[0]) % 2:
        raise ValueError(f"cannot pad a {kernel.shape[0]}-tap kernel to {size} taps")
    return np.pad(kernel, pad) if pad else kernel


def pulse_kernel(size: int) -> np.ndarray:
    """The identity kernel: convolving with it changes nothing (the final sinc's 'off')."""
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2, size // 2] = 1.0
    return kernel


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    return low if low == high else float(rng.uniform(low, high))


def _shape_beta(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    """Real-ESRGAN's beta: half the time below 1 and half above, when the range spans 1; else uniform."""
    low, high = float(bounds[0]), float(bounds[1])
    if low <= 1.0 <= high:
        return _uniform(rng, (low, 1.0)) if rng.uniform() < 0.5 else _uniform(rng, (1.0, high))
    return _uniform(rng, (low, high))


def random_kernel_size(rng: np.random.Generator, largest: int) -> int:
    """An odd size drawn uniformly from 7, 9, ..., ``largest`` (just ``largest`` when it is below 7)."""
    sizes = list(range(min(SMALLEST_KERNEL, largest), largest + 1, 2))
    return int(sizes[rng.integers(len(sizes))])


def random_sinc_cutoff(rng: np.random.Generator, size: int) -> float:
    """Real-ESRGAN's cut-off: pi/3..pi for kernels under 13 taps, pi/5..pi for larger ones (stronger ringing)."""
    return float(rng.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi))


def random_blur_kernel(rng: np.random.Generator, *, blur_kernel_size: int, kernel_list: Sequence[str],
                       kernel_prob: Sequence[float], blur_sigma: Sequence[float], betag_range: Sequence[float],
                       betap_range: Sequence[float], sinc_prob: float) -> np.ndarray:
    """One blur kernel of a degradation stage, padded to (blur_kernel_size, blur_kernel_size).

    With probability ``sinc_prob`` a sinc kernel, else a kernel of a type drawn from ``kernel_list`` with
    weights ``kernel_prob``: sigmas uniform in ``blur_sigma`` (each axis on its own for the anisotropic
    types, rotated by a uniform angle in [-pi, pi]), beta from ``betag_range`` (generalized) or
    ``betap_range`` (plateau).
    """
    size = random_kernel_size(rng, blur_kernel_size)
    if rng.uniform() < sinc_prob:
        return pad_kernel(sinc_kernel(size, random_sinc_cutoff(rng, size)), blur_kernel_size)
    weights = np.asarray(kernel_prob, dtype=np.float64)
    kind = kernel_list[int(rng.choice(len(kernel_list), p=weights / weights.sum()))]
    if kind not in KERNEL_TYPES:
        raise ValueError(f"unknown kernel type {kind!r}; use one of {', '.join(KERNEL_TYPES)}")
    sigma_x = _uniform(rng, blur_sigma)
    if kind in ("iso", "generalized_iso", "plateau_iso"):
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y, theta = _uniform(rng, blur_sigma), float(rng.uniform(-np.pi, np.pi))
    if kind.startswith("generalized"):
        kernel = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, _shape_beta(rng, betag_range))
    elif kind.startswith("plateau"):
        kernel = plateau_kernel(size, sigma_x, sigma_y, theta, _shape_beta(rng, betap_range))
    else:
        kernel = gaussian_kernel(size, sigma_x, sigma_y, theta)
    return pad_kernel(kernel, blur_kernel_size)


def random_final_sinc(rng: np.random.Generator, *, kernel_size: int, final_sinc_prob: float) -> np.ndarray:
    """The last stage's sinc kernel (cut-off pi/3..pi) with probability ``final_sinc_prob``, else the pulse."""
    if rng.uniform() >= final_sinc_prob:
        return pulse_kernel(kernel_size)
    size = random_kernel_size(rng, kernel_size)
    return pad_kernel(sinc_kernel(size, float(rng.uniform(np.pi / 3, np.pi))), kernel_size)
