"""The image operations of the degradation pipeline, batched on the images' device: blur, resize, JPEG, USM.

Images are (B, 3, H, W) float tensors in [0, 1]. Filtering is kornia's, JPEG kornia's differentiable
codec (JPEG's colour transform, 4:2:0 chroma subsampling, 8x8 DCT and the standard quantisation tables
scaled by quality; its rounding of the DCT coefficients is a smooth cubic approximation, so it keeps
slightly more detail than a real encoder at the same quality), resizing torch's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d, gaussian_blur2d

RESIZE_MODES = ("area", "bilinear", "bicubic")
RESIZE_DIRECTIONS = ("up", "down", "keep")
USM_KERNEL, USM_SIGMA = 51, 8.0  # OpenCV's Gaussian for a 51-tap kernel (sigma 0 -> 0.3 * (25 - 1) + 0.8)
USM_WEIGHT, USM_THRESHOLD = 0.5, 10  # residual gain, and the residual (0-255 scale) a pixel needs to be sharpened


def _border(images: torch.Tensor, kernel_size: int) -> str:
    # Mirror padding needs the image longer than half the kernel; an image shrunk further repeats its edge.
    return "reflect" if min(images.shape[-2:]) > kernel_size // 2 else "replicate"


def blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter each image with its own kernel, (B, K, K), or all with one (1, K, K); mirrored borders."""
    return filter2d(images, kernels.to(images), border_type=_border(images, kernels.shape[-1]))


def choose(options: Sequence, weights: Sequence[float] | None, generator: torch.Generator):
    """One of ``options``, by ``weights`` (or uniformly), drawn from a host generator."""
    probabilities = torch.ones(len(options)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    return options[int(torch.multinomial(probabilities, 1, generator=generator))]


def uniform(bounds: Sequence[float], generator: torch.Generator) -> float:
    """A number uniform in [low, high] from a host generator (``low`` itself when the two are equal)."""
    low, high = float(bounds[0]), float(bounds[1])
    return low + (high - low) * float(torch.rand(1, dtype=torch.float64, generator=generator))


def random_scale(direction_prob: Sequence[float], scale_range: Sequence[float], generator: torch.Generator) -> float:
    """Real-ESRGAN's resize factor: up (1..high), down (low..1) or keep (1), with ``direction_prob`` weights."""
    direction = choose(RESIZE_DIRECTIONS, direction_prob, generator)
    if direction == "up":
        return uniform((1.0, scale_range[1]), generator)
    if direction == "down":
        return uniform((scale_range[0], 1.0), generator)
    return 1.0


def resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize to ``size`` (height, width), at least 1 pixel each, by ``mode`` (area, bilinear, bicubic)."""
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode=mode)


def random_resize(images: torch.Tensor, scale: float, generator: torch.Generator,
                  size: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize by ``scale`` (relative to ``size``, default the images' own) with a mode drawn uniformly."""
    height, width = size or images.shape[-2:]
    mode = choose(RESIZE_MODES, None, generator)
    return resize(images, (int(height * scale), int(width * scale)), mode)


def jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG-compress and decode each image at its own ``quality`` (B,) in [1, 100]; inputs clamped to [0, 1]."""
    with torch.no_grad():
        return jpeg_codec_differentiable(images.clamp(0, 1), quality.to(images)).clamp(0, 1)


def usm_sharpen(images: torch.Tensor) -> torch.Tensor:
    """Unsharp masking as Real-ESRGAN sharpens its targets: half the detail added back where it is clear.

    residual = image - Gaussian blur; pixels whose residual exceeds 10/255 get image + 0.5 * residual
    (clamped to [0, 1]), blended in through the blurred mask of those pixels so edges have no seams.
    """
    border = _border(images, USM_KERNEL)
    blurred = gaussian_blur2d(images, (USM_KERNEL,) * 2, (USM_SIGMA,) * 2, border_type=border)
    residual = images - blurred
    mask = ((residual.abs() * 255) > USM_THRESHOLD).to(images.dtype)
    soft_mask = gaussian_blur2d(mask, (USM_KERNEL,) * 2, (USM_SIGMA,) * 2, border_type=border)
    sharp = (images + USM_WEIGHT * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * images


def to_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels an 8-bit image file holds (the LQ a user would have), kept as float."""
    return (images * 255).round().clamp(0, 255) / 255
