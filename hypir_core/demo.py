"""Embedded demo assets: a tiny SD2-format model and a small all-in-one restoration dataset.

`resolve_path("demo://tiny-sd2")`, `resolve_path("demo://aio/train")` and `resolve_path("demo://aio/val")`
(and the HQ-only views of the dataset, `demo://hq/train.list` and `demo://hq/val`) build these once into a
cache folder (env HYPIR_SWEEP_CACHE, default ~/.cache/hypir-sweep) from
the photos scikit-image ships, with no downloads, seeded so every build gives the same files.

Cache layout (DEMO_VERSION is bumped whenever the build recipe changes):
    <cache>/demo-v1/aio/{train,val}/<Blur|Haze|Lowlight|Rain|Snow>/{LQ,GT}/<name>.png
    <cache>/demo-v1/hq/{train.list, val/<type>_<name>.png}  (the AIO GT images as HQ-only data)
    <cache>/demo-v1/tiny-sd2/{model_index.json, demo_info.json, unet, vae, text_encoder, tokenizer, scheduler}
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from hypir_core.cache import cache_dir
from hypir_core.errors import ConfigError, HypirError
from hypir_core.files import build_once

if TYPE_CHECKING:
    import torch

DEMO_VERSION = "demo-v1"
DEMO_PATHS = ("demo://tiny-sd2", "demo://aio/train", "demo://aio/val", "demo://hq/train.list", "demo://hq/val")
DEGRADATION_TYPES = ("Blur", "Haze", "Lowlight", "Rain", "Snow")
# (photo, (left, right) fraction of its width): val regions are never seen by the VAE or the trainer.
TRAIN_PHOTOS = (("astronaut", (0, 1)), ("rocket", (0, 1)), ("camera", (0, 1)), ("coins", (0, 1)),
                ("motorcycle", (0, 1)), ("immunohistochemistry", (0, 1)), ("coffee", (0, 0.6)))  # fmt: skip
VAL_PHOTOS = (("chelsea", (0, 1)), ("coffee", (0.6, 1)))
PATCH_SIZE = 64
PHOTO_SHORT_SIDE = 160  # photos are downscaled first so a 64 px patch shows recognisable content
PAIRS_PER_TYPE = {"train": 40, "val": 8}
SEED = 231
VAE_STEPS, VAE_BATCH, VAE_CROP, VAE_LR = 500, 16, 32, 2e-3  # measured: 300 steps gave 20-24 dB by seed


def cache_root() -> Path:
    """The folder that holds every built demo asset of this version."""
    return cache_dir() / DEMO_VERSION


def resolve_path(p: str) -> str:
    """Map a demo:// path to its built folder (building it on first use); other strings come back unchanged."""
    if not isinstance(p, str) or not p.startswith("demo://"):
        return p
    root = cache_root()
    if p in ("demo://aio/train", "demo://aio/val"):
        return str(_ensure_built(root / "aio", "dataset", 5, build_demo_dataset) / p.rsplit("/", 1)[1])
    if p in ("demo://hq/train.list", "demo://hq/val"):
        aio = _ensure_built(root / "aio", "dataset", 5, build_demo_dataset)
        return str(_ensure_built(root / "hq", "HQ image list", 1, lambda dest: build_hq_lists(dest, aio))
                   / p.rsplit("/", 1)[1])
    if p == "demo://tiny-sd2":
        aio = _ensure_built(root / "aio", "dataset", 5, build_demo_dataset)
        return str(_ensure_built(root / "tiny-sd2", "model", 60, lambda dest: build_tiny_sd2(dest, aio)))
    raise ConfigError(f"Unknown demo path '{p}'; use one of {', '.join(DEMO_PATHS)}.")


# ---------------------------------------------------------------- cache: build once, atomically


def _ensure_built(dest: Path, what: str, estimate_s: int, build: Callable[[Path], None]) -> Path:
    """Return dest, built once (by one of concurrent processes, such as Ray trials) and atomically."""
    try:
        return build_once(dest, build, f"Building the demo {what} (once, ~{estimate_s} s) in {dest}")
    except OSError as err:
        raise HypirError(
            f"Cannot build the demo {what} in '{dest}': {err}; set HYPIR_SWEEP_CACHE to a writable folder."
        ) from err


# ---------------------------------------------------------------- degradations (float32 HxWx3 in [0, 1])


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel: what a straight camera or object motion of `length` px smears a point into."""
    size = int(np.ceil(length)) | 1
    steps = np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * size)
    angle = np.deg2rad(angle_deg)
    kernel = np.zeros((size, size), np.float32)
    rows = np.clip(np.round(size // 2 - steps * np.sin(angle)).astype(int), 0, size - 1)
    cols = np.clip(np.round(size // 2 + steps * np.cos(angle)).astype(int), 0, size - 1)
    np.add.at(kernel, (rows, cols), 1.0)
    return kernel / kernel.sum()


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Low-frequency random field scaled to [0, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return ((field - field.min()) / (np.ptp(field) + 1e-8)).astype(np.float32)


def degrade_blur(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian defocus followed by a linear motion blur."""
    out = ndimage.gaussian_filter(gt, sigma=(rng.uniform(0.6, 1.6),) * 2 + (0,), mode="reflect")
    kernel = _motion_kernel(rng.uniform(3, 9), rng.uniform(0, 180))
    return ndimage.convolve(out, kernel[..., None], mode="reflect")


def degrade_haze(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Atmospheric scattering I = J*t + A*(1-t), t = exp(-beta*depth) with a smooth, far-at-the-top depth map."""
    height, width, _ = gt.shape
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(width, 1)
    depth = 0.3 + 0.7 * (0.6 * ramp + 0.4 * _smooth_field(rng, (height, width), height / 5))
    transmission = np.exp(-rng.uniform(1.0, 2.0) * depth)[..., None]
    airlight = rng.uniform(0.75, 0.95) * (1 + rng.uniform(-0.03, 0.03, 3))
    return gt * transmission + airlight * (1 - transmission)


def degrade_lowlight(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma darkening and under-exposure, then shot (Poisson) and read (Gaussian) sensor noise."""
    dark = rng.uniform(0.2, 0.45) * gt ** rng.uniform(1.4, 2.2)
    photons_at_white = rng.uniform(40, 150)
    noisy = rng.poisson(dark * photons_at_white) / photons_at_white
    return noisy + rng.normal(0, rng.uniform(0.005, 0.015), gt.shape)


def degrade_rain(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random drops smeared into slanted streaks by a motion kernel, screen-blended over a dimmed scene."""
    height, width, _ = gt.shape
    drops = (rng.random((height, width)) < rng.uniform(0.01, 0.025)) * rng.uniform(0.6, 1.0, (height, width))
    length = rng.uniform(7, 15)
    streaks = ndimage.convolve(drops, _motion_kernel(length, 90 + rng.uniform(-20, 20)), mode="wrap")
    streaks = np.clip(ndimage.gaussian_filter(streaks * length * 0.6, 0.5), 0, 1)[..., None]
    scene = gt * rng.uniform(0.8, 0.95) + 0.04
    return 1 - (1 - scene) * (1 - rng.uniform(0.6, 0.9) * streaks)


def degrade_snow(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flakes of three sizes (small ones smeared by falling), alpha-blended, plus a slight white veil."""
    height, width, _ = gt.shape
    flakes = np.zeros((height, width), np.float32)
    for radius, count in ((0.5, rng.integers(60, 120)), (1.0, rng.integers(15, 30)), (1.8, rng.integers(3, 8))):
        points = np.zeros((height, width), np.float32)
        points[rng.integers(0, height, count), rng.integers(0, width, count)] = rng.uniform(0.6, 1.0, count)
        blob = ndimage.gaussian_filter(points, radius, mode="wrap") * (2 * np.pi * radius**2)
        if radius < 1:
            blob = ndimage.convolve(blob, _motion_kernel(3, rng.uniform(60, 120)), mode="wrap") * 2
        flakes = np.maximum(flakes, np.clip(blob, 0, 1))
    flakes = flakes[..., None]
    out = gt * (1 - flakes) + rng.uniform(0.9, 1.0) * flakes
    veil = rng.uniform(0.05, 0.15)
    return out * (1 - veil) + veil * 0.9


DEGRADATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "Blur": degrade_blur,
    "Haze": degrade_haze,
    "Lowlight": degrade_lowlight,
    "Rain": degrade_rain,
    "Snow": degrade_snow,
}


# ---------------------------------------------------------------- demo dataset


def _load_photo(name: str, region: tuple[float, float]) -> np.ndarray:
    """A region of a scikit-image photo (files inside the package, no download), RGB uint8, short side 160 px."""
    import skimage.data

    pixels = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    image = Image.fromarray(pixels[..., :3])
    scale = PHOTO_SHORT_SIDE / min(image.size)
    pixels = np.asarray(image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC))
    return pixels[:, round(region[0] * pixels.shape[1]) : round(region[1] * pixels.shape[1])]


def build_demo_dataset(dest: Path, seed: int = SEED) -> None:
    """Write the demo AIO dataset: dest/{train,val}/<type>/{LQ,GT}/<name>.png, 64x64, same names in LQ and GT."""
    for split_index, (split, photo_names) in enumerate((("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS))):
        photos = {name: _load_photo(name, region) for name, region in photo_names}
        for type_index, degradation_type in enumerate(DEGRADATION_TYPES):
            rng = np.random.default_rng([seed, split_index, type_index])
            lq_dir, gt_dir = dest / split / degradation_type / "LQ", dest / split / degradation_type / "GT"
            lq_dir.mkdir(parents=True)
            gt_dir.mkdir(parents=True)
            for index in range(PAIRS_PER_TYPE[split]):
                name = photo_names[rng.integers(len(photo_names))][0]
                photo = photos[name]
                top = rng.integers(0, photo.shape[0] - PATCH_SIZE + 1)
                left = rng.integers(0, photo.shape[1] - PATCH_SIZE + 1)
                gt = photo[top : top + PATCH_SIZE, left : left + PATCH_SIZE]
                lq = DEGRADATIONS[degradation_type](gt.astype(np.float32) / 255, rng)
                file_name = f"{index:03d}_{name}.png"
                Image.fromarray(gt).save(gt_dir / file_name)
                Image.fromarray(np.round(np.clip(lq, 0, 1) * 255).astype(np.uint8)).save(lq_dir / file_name)


def build_hq_lists(dest: Path, aio_root: Path) -> None:
    """The demo AIO set's GT images as HQ-only data: dest/train.list (paths relative to it) and dest/val/."""
    train = sorted((aio_root / "train").glob("*/GT/*.png"))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "train.list").write_text("".join(f"../aio/{p.relative_to(aio_root).as_posix()}\n" for p in train))
    (dest / "val").mkdir()
    for path in sorted((aio_root / "val").glob("*/GT/*.png")):
        shutil.copyfile(path, dest / "val" / f"{path.parent.parent.name}_{path.name}")


def _load_folder_images(split_dir: Path, pattern: str = "*/*/*.png") -> torch.Tensor:
    """The images under split_dir matching pattern as a float tensor (N,3,H,W) in [-1, 1]."""
    import torch

    files = sorted(split_dir.glob(pattern))
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


# ---------------------------------------------------------------- tiny SD2-format model


def write_byte_tokenizer(folder: Path) -> None:
    """A byte-level CLIP tokenizer without merges: every byte is a token, as CLIP's own vocab starts."""
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codepoints = printable + [256 + i for i in range(256 - len(printable))]
    byte_chars = [chr(c) for c in codepoints]  # CLIP's bytes_to_unicode table, in its order
    vocab = {char: index for index, char in enumerate(byte_chars)}
    vocab.update({char + "</w>": index + 256 for index, char in enumerate(byte_chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    CLIPTokenizer.from_pretrained(str(folder), model_max_length=77).save_pretrained(str(folder))


def _train_vae(vae, train_images, seed: int) -> None:
    """Fit the VAE to reconstruct demo crops (L1 + a tiny KL, as SD's VAE), a few hundred CPU steps."""
    import torch

    # Identity-initialised residual blocks (zeroed last conv) train far faster in a few hundred steps.
    for name, module in vae.named_modules():
        if name.endswith(("conv2", "to_out.0")):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    # Start with a near-deterministic posterior (log-variance -10), as SD's trained VAE has: unit-variance
    # latent noise at the start costs most of the short training budget (measured: ~20 vs ~24 dB).
    with torch.no_grad():
        vae.quant_conv.weight[vae.config.latent_channels :] = 0
        vae.quant_conv.bias[vae.config.latent_channels :] = -10
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=VAE_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, VAE_LR, total_steps=VAE_STEPS, pct_start=0.15)
    vae.train()
    for _ in range(VAE_STEPS):
        batch = train_images[torch.randint(0, len(train_images), (VAE_BATCH,), generator=generator)]
        top, left = torch.randint(0, PATCH_SIZE - VAE_CROP + 1, (2,), generator=generator).tolist()
        batch = batch[:, :, top : top + VAE_CROP, left : left + VAE_CROP]
        # Random per-channel gain and offset: a handful of photos would leave colours and exposures
        # (dark, hazy) unseen, and the held-out photos then decode with a colour cast.
        gain = 1 + 0.3 * (2 * torch.rand(VAE_BATCH, 3, 1, 1, generator=generator) - 1)
        offset = 0.3 * (2 * torch.rand(VAE_BATCH, 3, 1, 1, generator=generator) - 1)
        batch = ((batch + 1) * gain - 1 + offset).clamp(-1, 1)
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        loss = (reconstruction - batch).abs().mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    vae.eval()


def vae_psnr(vae, images) -> float:
    """Mean PSNR (dB) of 8-bit VAE reconstructions (latent mode, no sampling) of images in [-1, 1]."""
    import torch

    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mode()
        decoded = vae.decode(latents).sample.clamp(-1, 1)
    error = torch.round((decoded + 1) * 127.5) - torch.round((images + 1) * 127.5)  # on 8-bit values
    mse = (error**2).mean(dim=(1, 2, 3)) / 255**2
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def build_tiny_sd2(dest: Path, aio_root: Path, seed: int = SEED) -> dict:
    """Write a tiny SD2.1-base-format model folder to dest (VAE fitted to the demo train images); return its stats."""
    import torch

    # Restore the caller's RNG afterwards: a run must not depend on whether the demo was cached.
    with torch.random.fork_rng(devices=[]), _no_progress_bars():
        return _build_tiny_sd2(dest, aio_root, seed)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Silence the libraries' save_pretrained progress bars ("Writing model shards") during the build."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    were_on = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in were_on:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, on in were_on:
            if on:
                lib.enable_progress_bar()


def _build_tiny_sd2(dest: Path, aio_root: Path, seed: int) -> dict:
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    start = time.time()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8, use_linear_projection=True,
    )  # fmt: skip
    # Zero conv_out: the untrained one-step model predicts eps = 0, so z0 = z / sqrt(alpha_bar_t) keeps the
    # content of the input, as pretrained SD does; a random UNet would instead start from noise.
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    unet.save_pretrained(str(dest / "unet"))

    write_byte_tokenizer(dest / "tokenizer")
    text_config = CLIPTextConfig(
        vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", bos_token_id=512, eos_token_id=513, pad_token_id=513,
    )  # fmt: skip
    CLIPTextModel(text_config).save_pretrained(str(dest / "text_encoder"))

    DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", clip_sample=False, steps_offset=1,
    ).save_pretrained(str(dest / "scheduler"))  # fmt: skip

    # Two downsamplings: a 64x64 image -> a 16x16x4 latent, as SD's 512 -> 64.
    torch.manual_seed(seed)  # the VAE's start does not depend on how many numbers the modules above drew
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(16, 16, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8, sample_size=PATCH_SIZE,
    )  # fmt: skip
    train_images = _load_folder_images(aio_root / "train", "*/GT/*.png")  # measured: adding LQ gave GT a colour cast
    _train_vae(vae, train_images, seed)
    with torch.no_grad():  # SD's recipe: scale latents to unit variance, measured on the training images
        latent_std = float(vae.encode(train_images).latent_dist.mode().std())
    scaling_factor = float(f"{1.0 / latent_std:.5g}")
    vae.register_to_config(scaling_factor=scaling_factor)
    vae.save_pretrained(str(dest / "vae"))

    val_gt = _load_folder_images(aio_root / "val", "*/GT/*.png")  # held-out photos
    stats = {"vae_val_psnr_db": round(vae_psnr(vae, val_gt), 2), "scaling_factor": scaling_factor,
             "build_seconds": round(time.time() - start, 1), "seed": seed}  # fmt: skip
    model_index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }  # fmt: skip
    (dest / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    (dest / "demo_info.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(
        f"Demo model built in {stats['build_seconds']} s: VAE reconstruction PSNR {stats['vae_val_psnr_db']} dB "
        f"on held-out val photos, latent scaling factor {scaling_factor}.",
        flush=True,
    )
    return stats
