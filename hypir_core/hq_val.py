"""Validation for HQ-only data: the LQ images synthesised once from HQ images, with a fixed seed, and cached.

``data_config.val.hq_dir`` names a folder of HQ images and ``data_config.val.degradation`` the
Real-ESRGAN settings (the training data's by default). The first N sorted images
(``num_samples_per_type``) are resized to ``data_config.val.resize`` (unless native), degraded once on
the CPU with generators seeded from (degradation_seed, image index), and written as PNG pairs into the
cache, ``<cache>/val-synth/<key>/RealESRGAN/{LQ,GT}``, in the AIO layout the Validator reads. The key
hashes the images (names, sizes, times), the settings, the seed and the size, so every trial of a sweep
scores the same pairs, and a changed setting builds a new set. The GT is the target training uses
(USM-sharpened when use_sharpener); the LQ is always resized back to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hypir_core.cache import cache_dir
from hypir_core.config_data import HQ_VAL_TYPE
from hypir_core.data import IMAGE_EXTENSIONS, ValPair, _get, _resolve, _scan_type_folder, read_image
from hypir_core.degradation.pipeline import Draws, degrade
from hypir_core.errors import DataError
from hypir_core.files import build_once
from hypir_core.hq_data import draw_kernels

VAL_TYPE = HQ_VAL_TYPE  # the degradation type the pairs are logged under: val/RealESRGAN/PSNR, ...
VAL_STREAM = 2  # first word of the synthesis draws' key (training draws use another)
RECIPE_VERSION = 1  # bumped whenever the synthesis changes, so old cached sets are not reused


def hq_images(val_cfg: Any) -> list[Path]:
    """The HQ validation images: the first ``num_samples_per_type`` files of hq_dir, sorted by name."""
    root = Path(_resolve(_get(val_cfg, "hq_dir")))
    if not root.is_dir():
        raise DataError(f"HQ validation folder '{root}' (data_config.val.hq_dir) does not exist; fix the path.")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"HQ validation folder '{root}' (data_config.val.hq_dir) holds no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); add some.")
    return files[:_get(val_cfg, "num_samples_per_type", None)]


def _settings(val_cfg: Any):
    settings = _get(val_cfg, "degradation", None)
    if not is_dataclass(settings):
        raise DataError("data_config.val.degradation is not resolved into settings; load the config with "
                        "hypir_core.config.load_config, which does.")
    return replace(settings, resize_back=True)  # validation pairs must have the GT's size


def cache_key(files: list[Path], settings: Any, seed: int, size: int | str) -> str:
    """A digest of everything the synthesised set depends on."""
    from hypir_core.config import config_to_dict

    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps({"recipe": RECIPE_VERSION, "folder": str(files[0].parent.resolve()), "files": stats,
                       "settings": config_to_dict(settings), "seed": int(seed), "size": size}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def synthesise_pair(pixels: np.ndarray, settings: Any, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(GT, LQ) as uint8 (H, W, 3) arrays for one HQ image, drawn from (seed, index) alone."""
    rng = np.random.default_rng([VAL_STREAM, seed, index])
    kernels = draw_kernels(settings, rng)
    hq = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float().div(255)[None]
    draws = Draws.for_key((VAL_STREAM, seed, index), "cpu")
    gt, lq = degrade(hq, kernels["kernel1"][None], kernels["kernel2"][None], kernels["sinc_kernel"][None],
                     settings, draws)
    as_uint8 = lambda image: (image[0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()  # noqa: E731
    return as_uint8(gt), as_uint8(lq)


def _build(dest: Path, files: list[Path], settings: Any, seed: int, size: int | str) -> None:
    for index, path in enumerate(files):
        pixels = read_image(path)
        if size != "native":
            pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC))
        gt, lq = synthesise_pair(pixels, settings, seed, index)
        name = f"{index:05d}_{path.stem}.png"
        for folder, image in (("GT", gt), ("LQ", lq)):
            (dest / VAL_TYPE / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(dest / VAL_TYPE / folder / name)


def synthesised_val_set(val_cfg: Any) -> list[ValPair]:
    """The validation pairs synthesised from data_config.val.hq_dir (built into the cache on first use)."""
    files = hq_images(val_cfg)
    settings, seed = _settings(val_cfg), int(_get(val_cfg, "degradation_seed", 0))
    size = _get(val_cfg, "resize", 512)
    dest = cache_dir() / "val-synth" / cache_key(files, settings, seed, size)
    try:  # trials of a sweep starting at once: one builds the set, the others wait for it
        build_once(dest, lambda folder: _build(folder, files, settings, seed, size),
                   f"Synthesising the validation set ({len(files)} HQ images, once) in {dest}")
    except OSError as err:
        raise DataError(f"Cannot write the synthesised validation set in '{dest}': {err}; set "
                        "HYPIR_SWEEP_CACHE to a writable folder.") from err
    matched = _scan_type_folder(dest / VAL_TYPE, "data_config.val.hq_dir")
    return [ValPair(VAL_TYPE, name, str(lq), str(gt)) for name, lq, gt in matched]
