"""Gaussian and Poisson (shot) noise on batches of images in [0, 1], colour or gray, drawn from a given generator.

Every function draws the colour and the gray field for the whole batch (whichever images use them), so
the numbers a generator gives out do not depend on which images came out gray: a seeded run is
reproducible image by image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from kornia.color import rgb_to_grayscale


def _per_image(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.dtype).view(-1, 1, 1, 1)


def gaussian_noise(images: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise for (B, 3, H, W) ``images``: standard deviation ``sigma`` per image on the 0-255 scale.

    Where ``gray`` (B,) is true the image gets one field shared by its three channels (luminance noise).
    """
    batch, _, height, width = images.shape
    color = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    mono = torch.randn((batch, 1, height, width), generator=generator, device=images.device, dtype=images.dtype)
    gray = _per_image(gray, images)
    return (color * (1 - gray) + mono * gray) * _per_image(sigma, images) / 255.0


def _levels(images_8bit: torch.Tensor) -> torch.Tensor:
    """2 ** ceil(log2(number of distinct 8-bit values)) per image: the photon-count scale of shot noise."""
    codes = (images_8bit * 255).round().long().flatten(1)
    counts = torch.zeros(codes.shape[0], 256, device=codes.device).scatter_add_(1, codes, torch.ones_like(
        codes, dtype=torch.float32))
    distinct = (counts > 0).sum(dim=1).clamp_min(1).float()
    return torch.exp2(torch.ceil(torch.log2(distinct))).view(-1, 1, 1, 1)


def _shot_noise(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # As scikit-image's random_noise(mode="poisson"): counts on the image rounded to 8 bits.
    rounded = ((images.clamp(0, 1) * 255).round() / 255).float()
    levels = _levels(rounded)
    counts = torch.poisson(rounded * levels, generator=generator)
    return (counts / levels - rounded).to(images.dtype)


def poisson_noise(images: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Shot noise for (B, 3, H, W) ``images``, times ``scale`` (B,); gray images get it from their luminance.

    A pixel of value p on an image with L levels has noise variance ``scale**2 * p / L``.
    """
    color = _shot_noise(images, generator)
    mono = _shot_noise(rgb_to_grayscale(images), generator).expand_as(images)
    gray = _per_image(gray, images)
    return (color * (1 - gray) + mono * gray) * _per_image(scale, images)


def _uniform(count: int, bounds: Sequence[float], generator: torch.Generator, device) -> torch.Tensor:
    low, high = float(bounds[0]), float(bounds[1])
    return torch.rand(count, generator=generator, device=device) * (high - low) + low


def add_random_noise(images: torch.Tensor, *, gaussian_prob: float, sigma_range: Sequence[float],
                     poisson_scale_range: Sequence[float], gray_prob: float, host: torch.Generator,
                     device_generator: torch.Generator) -> torch.Tensor:
    """Real-ESRGAN's noise step: Gaussian noise with probability ``gaussian_prob`` for the batch, else Poisson.

    Per image: the strength (sigma on the 0-255 scale, or the Poisson scale) uniform in its range, gray with
    probability ``gray_prob``. The choice of kind comes from the ``host`` generator, everything per image from
    ``device_generator`` (on the images' device, so nothing waits for it). Returns the noisy images in [0, 1].
    """
    count, device = images.shape[0], images.device
    use_gaussian = float(torch.rand(1, generator=host)) < gaussian_prob
    strength = _uniform(count, sigma_range if use_gaussian else poisson_scale_range, device_generator, device)
    gray = torch.rand(count, generator=device_generator, device=device) < gray_prob
    noise = (gaussian_noise if use_gaussian else poisson_noise)(images, strength, gray, device_generator)
    return (images + noise).clamp(0, 1)
