"""The one path from an LQ batch to a restored image, shared by validation and ``launch.py --restore``.

It is HYPIR's inference (``BaseEnhancer.enhance`` in HYPIR/enhancer/base.py, which the fork's
``inference.py`` and the Gradio app call), with each of its choices a setting:

1. resize by ``upscale`` (bicubic), or to a ``target_longest_side`` (``scale_by: longest_side``);
   the result is the *reference* that the output is resized back to and colour-fixed against;
2. with tiles (``patch_size`` set), a short side of at most ``patch_size`` is resized up to it;
3. pad to a multiple of the VAE's downscale factor (8 for SD2; HYPIR pads with zeros);
4. VAE encode (posterior sample from a seeded generator, or its mode), UNet at ``model_t`` with x0 at
   ``coeff_t``, VAE decode: each in Gaussian-weighted tiles of ``patch_size`` pixels every ``stride``
   (latent tiles ``patch_size / factor``), or on the whole image;
5. crop the padding, back to [0, 1], resize to the reference's size;
6. the wavelet colour fix (``wavelet_color_fix``): the output's high frequencies on the reference's
   lowest band; then clamp to [0, 1] and round to 8 bits (what a saved PNG holds).

``model_output`` runs steps 1-5 and returns the unclamped output with its reference, so a caller can
score both colour-fix settings from one generator pass (``finish`` is step 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hypir_core.errors import ConfigError

COLOR_FIXES = ("none", "wavelet")
POSTERIORS = ("sample", "mode")
SCALE_BY = ("factor", "longest_side")
PAD_MODES = ("constant", "reflect")  # constant = zeros in [-1, 1], as HYPIR pads
WAVELET_LEVELS = 5
GAUSSIAN_VARIANCE = 0.01  # of the tile weights, in units of the tile's side squared (HYPIR's, from CCSR)


@dataclass(frozen=True)
class RestoreSettings:
    """How an LQ image becomes an output; the defaults are HYPIR's deployed inference at ``upscale`` 1.

    ``patch_size`` None runs the whole image at its own size in one pass (no tiles, no resize up),
    as validation does by default.
    """

    upscale: float = 1.0
    scale_by: str = "factor"
    target_longest_side: int | None = None
    patch_size: int | None = 512
    stride: int = 256
    posterior: str = "sample"
    color_fix: str = "wavelet"
    pad_mode: str = "constant"
    quantize: bool = True

    def check(self, factor: int, names: dict[str, str] | None = None) -> None:
        """Refuse settings this model cannot run (``factor``: the VAE's downscale factor), in one sentence.

        ``names`` renames settings in the message (validation's ``patch_size`` is data_config.val.tile_size).
        """
        names = {"patch_size": "patch_size", "stride": "stride", **(names or {})}
        choices = (("color_fix", COLOR_FIXES), ("posterior", POSTERIORS), ("scale_by", SCALE_BY),
                   ("pad_mode", PAD_MODES))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} is {getattr(self, name)!r}; use one of {', '.join(allowed)}.")
        if self.scale_by == "factor" and not self.upscale > 0:
            raise ConfigError(f"upscale is {self.upscale}; use a factor above 0 (1 keeps the input's size).")
        if self.scale_by == "longest_side" and not (self.target_longest_side or 0) >= factor:
            raise ConfigError(f"scale_by longest_side needs target_longest_side of at least {factor} pixels, "
                              f"got {self.target_longest_side}.")
        if self.patch_size is None:
            return
        for name in ("patch_size", "stride"):
            value = getattr(self, name)
            if value < factor or value % factor:
                raise ConfigError(f"{names[name]} is {value}; use a multiple of {factor} (this VAE's downscale "
                                  f"factor), such as {max(factor, value // factor * factor)}.")
        if self.stride > self.patch_size:
            raise ConfigError(f"{names['stride']} {self.stride} is larger than {names['patch_size']} "
                              f"{self.patch_size}, which would leave gaps between tiles; use a stride of at most the "
                              f"patch size (HYPIR: 512 / 256).")


def vae_factor(vae) -> int:
    """How many pixels one latent cell covers per side (8 for SD2's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


# ---- tiles ---------------------------------------------------------------------------------------

def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``tile`` cells every ``stride`` covering ``length``; the last ends at the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def gaussian_weights(height: int, width: int, device=None) -> torch.Tensor:
    """(1, 1, height, width) weights peaking at the tile's centre, standard deviation 0.1 of its side.

    HYPIR's tile weights (``gaussian_weights`` in HYPIR/utils/common.py, from CCSR), with the
    centre at (n - 1) / 2 on both axes (HYPIR's row centre is n / 2, half a pixel off).
    """
    def axis(n: int) -> np.ndarray:
        position = np.arange(n) - (n - 1) / 2
        return np.exp(-position ** 2 / (n * n) / (2 * GAUSSIAN_VARIANCE)) / np.sqrt(2 * np.pi * GAUSSIAN_VARIANCE)

    weights = np.outer(axis(height), axis(width))
    return torch.tensor(weights, dtype=torch.float32, device=device)[None, None]


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None, stride: int,
              scale: float = 1.0) -> torch.Tensor:
    """``fn`` over overlapping tiles of ``x`` (B, C, H, W), blended with Gaussian weights.

    ``fn`` maps a tile of h x w cells to an output of h*scale x w*scale (scale 1/8 for a VAE encoder,
    8 for its decoder). ``tile`` None, or an input that fits one tile, is one call on the whole input.
    """
    height, width = x.shape[-2:]
    if tile is None or (height <= tile and width <= tile):
        return fn(x)
    tile_h, tile_w = min(tile, height), min(tile, width)
    out_h, out_w = round(tile_h * scale), round(tile_w * scale)
    weights = gaussian_weights(out_h, out_w, x.device)
    total = torch.zeros((1, 1, round(height * scale), round(width * scale)), device=x.device)
    out = None
    for top in tile_starts(height, tile_h, stride):
        for left in tile_starts(width, tile_w, stride):
            piece = fn(x[..., top:top + tile_h, left:left + tile_w]).float()
            if out is None:
                out = torch.zeros((*piece.shape[:2], *total.shape[-2:]), device=x.device)
            rows, cols = slice(round(top * scale), round(top * scale) + out_h), slice(round(left * scale),
                                                                                       round(left * scale) + out_w)
            out[..., rows, cols] += piece * weights
            total[..., rows, cols] += weights
    return out / total


# ---- the wavelet colour fix ----------------------------------------------------------------------

def wavelet_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """The 3x3 binomial blur with taps ``radius`` pixels apart, replicate padding, per channel."""
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (taps[:, None] * taps[None, :] / 16).expand(image.shape[1], 1, 3, 3)
    padded = F.pad(image, (radius,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=image.shape[1], dilation=radius)


def wavelet_decompose(image: torch.Tensor, levels: int = WAVELET_LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low): the sum of the ``levels`` detail bands (blur radius 1, 2, 4, ...) and the band left below.

    ``high + low`` is the image again.
    """
    high = torch.zeros_like(image)
    for level in range(levels):
        low = wavelet_blur(image, 2 ** level)
        high = high + (image - low)
        image = low
    return high, image


def wavelet_color_fix(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """HYPIR's colour fix (``wavelet_reconstruction``): the output's high frequencies + the reference's lowest band.

    The output takes the LQ's colours and brightness at scales beyond ~30 pixels: for Lowlight and
    Haze inputs that is the darkness and the veil the model removed.
    """
    return wavelet_decompose(output)[0] + wavelet_decompose(reference)[1]


# ---- the pipeline --------------------------------------------------------------------------------

def _bicubic(images: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images  # HYPIR interpolates to the same size too: that is the identity, skipped here
    return F.interpolate(images, size=size, mode="bicubic", antialias=antialias)


def scaled_reference(lq: torch.Tensor, settings: RestoreSettings) -> torch.Tensor:
    """The LQ at the output's size: by ``upscale``, or with its longest side at ``target_longest_side``."""
    height, width = lq.shape[-2:]
    if settings.scale_by == "factor":
        size = (int(height * settings.upscale), int(width * settings.upscale))
    elif height >= width:
        size = (settings.target_longest_side, int(width * settings.target_longest_side / height))
    else:
        size = (int(height * settings.target_longest_side / width), settings.target_longest_side)
    return _bicubic(lq, size, antialias=False)


def model_size(height: int, width: int, patch_size: int | None) -> tuple[int, int]:
    """The size the model runs at: a short side of at most ``patch_size`` is resized up to it (HYPIR's rule)."""
    if patch_size is None or min(height, width) > patch_size:
        return height, width
    if height == width:
        return patch_size, patch_size
    if height < width:
        return patch_size, int(width * patch_size / height)
    return int(height * patch_size / width), patch_size


@torch.no_grad()
def model_output(generator, lq: torch.Tensor, text_embed: torch.Tensor, settings: RestoreSettings,
                 rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, reference) for an LQ batch (B, 3, H, W) in [0, 1]: steps 1-5 of the module docstring.

    Both are float32 in [0, 1]-ish at the reference's size; the output is unclamped. ``text_embed``
    is (B, L, D) or (1, L, D); ``rng`` seeds the posterior sample (``posterior: sample``).
    """
    factor = vae_factor(generator.vae)
    reference = scaled_reference(lq.float(), settings)
    out_h, out_w = reference.shape[-2:]
    run_h, run_w = model_size(out_h, out_w, settings.patch_size)
    x = _bicubic(reference, (run_h, run_w), antialias=True) * 2 - 1
    pad_h, pad_w = (-run_h) % factor, (-run_w) % factor
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=settings.pad_mode)
    text = text_embed.expand(x.shape[0], -1, -1)
    patch, stride = settings.patch_size, settings.stride
    latent_patch, latent_stride = (None, 1) if patch is None else (patch // factor, stride // factor)
    sample = settings.posterior == "sample"
    z = run_tiled(lambda tile: generator.encode_lq(tile, sample=sample, generator=rng), x, patch, stride, 1 / factor)
    z0 = run_tiled(lambda tile: generator.denoise(tile, text), z, latent_patch, latent_stride)
    image = run_tiled(generator.decode, z0, latent_patch, latent_stride, factor)
    image = (image[..., :run_h, :run_w].float() + 1) / 2
    return _bicubic(image, (out_h, out_w), antialias=True), reference


def finish(output: torch.Tensor, reference: torch.Tensor, color_fix: str, quantize: bool) -> torch.Tensor:
    """Step 6: the colour fix (``wavelet`` or ``none``), clamp to [0, 1], and 8-bit rounding if ``quantize``."""
    if color_fix == "wavelet":
        output = wavelet_color_fix(output, reference)
    output = output.clamp(0, 1)
    return torch.round(output * 255) / 255 if quantize else output


def restore(generator, lq: torch.Tensor, text_embed: torch.Tensor, settings: RestoreSettings,
            rng: torch.Generator | None = None) -> torch.Tensor:
    """The restored batch in [0, 1] (B, 3, H', W'), everything in ``settings`` applied."""
    output, reference = model_output(generator, lq, text_embed, settings, rng)
    return finish(output, reference, settings.color_fix, settings.quantize)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] to (B, H, W, 3) uint8, rounded (HYPIR truncates; rounding is what metrics assume)."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

