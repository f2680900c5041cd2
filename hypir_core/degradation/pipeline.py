"""Real-ESRGAN's second-order degradation of a batch of HQ images (Wang et al., ICCVW 2021, section 3).

``degrade(hq, kernel1, kernel2, sinc_kernel, settings, draws)`` returns (target, LQ):

    target = USM-sharpened HQ (when use_sharpener), which the LQ is made from as well
    stage 1: blur (kernel1), random resize, Gaussian or Poisson noise, JPEG (jpeg_range)
    stage 2: blur (kernel2) with probability second_blur_prob, random resize relative to
             HQ size / stage2_scale, noise, then in random order either
             [resize to HQ size / stage2_scale, final sinc, JPEG (jpeg_range2)] or
             [JPEG, resize, final sinc]
    LQ = resized back to the HQ size (resize_back), rounded to 8 bits

``settings`` is read by attribute: use_sharpener, resize_prob, resize_range, gaussian_noise_prob,
noise_range, poisson_scale_range, gray_noise_prob, jpeg_range, second_blur_prob, stage2_scale (a number,
or [low, high] drawn per batch), resize_prob2, resize_range2, gaussian_noise_prob2, noise_range2,
poisson_scale_range2, gray_noise_prob2, jpeg_range2, resize_back.

Randomness comes only from ``draws`` (see `Draws.for_key`): choices that shape the whole batch (resize
factor and mode, noise kind, the order of the last steps) from a host generator, everything per image from
a generator on the images' device. The same key on the same device gives the same pair, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hypir_core.degradation import ops
from hypir_core.degradation.noise import add_random_noise


@dataclass
class Draws:
    """The two generators one degradation call draws from: ``host`` (CPU) and ``device`` (the images')."""

    host: torch.Generator
    device: torch.Generator

    @classmethod
    def for_key(cls, key: Sequence[int], device: torch.device | str) -> Draws:
        """Generators seeded from a key of non-negative integers, e.g. (seed, step, slot)."""
        words = np.random.SeedSequence([int(k) for k in key]).generate_state(4, np.uint32)
        host_seed = int(words[0]) << 32 | int(words[1])
        device_seed = int(words[2]) << 32 | int(words[3])
        device = torch.device(device)
        return cls(torch.Generator().manual_seed(host_seed), torch.Generator(device=device).manual_seed(device_seed))


def _jpeg(images: torch.Tensor, quality_range: Sequence[float], draws: Draws) -> torch.Tensor:
    low, high = float(quality_range[0]), float(quality_range[1])
    quality = torch.rand(images.shape[0], generator=draws.device, device=images.device) * (high - low) + low
    return ops.jpeg(images, quality)


def _noise(images: torch.Tensor, settings, stage: str, draws: Draws) -> torch.Tensor:
    return add_random_noise(
        images, gaussian_prob=getattr(settings, "gaussian_noise_prob" + stage),
        sigma_range=getattr(settings, "noise_range" + stage),
        poisson_scale_range=getattr(settings, "poisson_scale_range" + stage),
        gray_prob=getattr(settings, "gray_noise_prob" + stage), host=draws.host, device_generator=draws.device)


def stage2_size(hq_size: tuple[int, int], stage2_scale, draws: Draws) -> tuple[int, int]:
    """The size the second stage works at: the HQ size over stage2_scale (a number or a [low, high] range)."""
    scale = ops.uniform(stage2_scale, draws.host) if isinstance(stage2_scale, (list, tuple)) else float(stage2_scale)
    return int(hq_size[0] / scale), int(hq_size[1] / scale)


@torch.no_grad()
def degrade(hq: torch.Tensor, kernel1: torch.Tensor, kernel2: torch.Tensor, sinc_kernel: torch.Tensor, settings,
            draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, LQ) for a (B, 3, H, W) HQ batch in [0, 1] with its per-image (B, K, K) kernels; see the module."""
    target = ops.usm_sharpen(hq) if settings.use_sharpener else hq
    hq_size = tuple(hq.shape[-2:])

    # Stage 1.
    out = ops.blur(target, kernel1)
    out = ops.random_resize(out, ops.random_scale(settings.resize_prob, settings.resize_range, draws.host), draws.host)
    out = _noise(out, settings, "", draws)
    out = _jpeg(out, settings.jpeg_range, draws)

    # Stage 2.
    if ops.uniform((0, 1), draws.host) < settings.second_blur_prob:
        out = ops.blur(out, kernel2)
    small = stage2_size(hq_size, settings.stage2_scale, draws)
    scale = ops.random_scale(settings.resize_prob2, settings.resize_range2, draws.host)
    out = ops.random_resize(out, scale, draws.host, size=small)
    out = _noise(out, settings, "2", draws)
    # Real-ESRGAN's two orders of the last steps; others gave twisted lines in its experiments.
    if ops.uniform((0, 1), draws.host) < 0.5:
        out = ops.blur(ops.random_resize(out, 1.0, draws.host, size=small), sinc_kernel)
        out = _jpeg(out, settings.jpeg_range2, draws)
    else:
        out = _jpeg(out, settings.jpeg_range2, draws)
        out = ops.blur(ops.random_resize(out, 1.0, draws.host, size=small), sinc_kernel)

    if settings.resize_back and tuple(out.shape[-2:]) != hq_size:
        out = ops.resize(out, hq_size, "bicubic")
    return target, ops.to_8bit(out)
