"""HQ-only training data, as upstream HYPIR's RealESRGANDataset reads it: images from a file list, kernels per image.

Config objects are read by attribute (or key), as in hypir_core.data:
    params.file_meta.{file_list, image_path_prefix, image_path_key, prompt_key}, params.file_backend_cfg.target,
    out_size, crop_type, use_hflip, use_rot, p_empty_prompt, return_file_name, and the kernel settings
    (blur_kernel_size, kernel_list, kernel_prob, blur_sigma, betag_range, betap_range, sinc_prob, the same
    with suffix 2, final_sinc_prob).

A file list is a .parquet table (paths in column ``image_path_key``, prompts in ``prompt_key``, or
``prompt_key: none`` for empty prompts) or a .txt/.list file with one path per line and no prompts. Each
path is joined to ``image_path_prefix``; relative results are relative to the list file's folder.

Items are {"hq": (3, S, S) float in [0, 1], "kernel1", "kernel2", "sinc_kernel": (K, K), "txt"}; the batch
transform (hypir_core.degradation.transform) turns a batch of them into training pairs on the device.
Everything random in an item comes from (seed, epoch, index), so a resumed run sees what the
uninterrupted one would, whatever the number of loader workers.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hypir_core.data import CROP_TYPES, _get, _resolve, read_image
from hypir_core.degradation.kernels import random_blur_kernel, random_final_sinc
from hypir_core.errors import ConfigError, DataError

HQ_LIST_SUFFIXES = (".parquet", ".txt", ".list")
RANDOM_CROP_MIN_FRACTION = 0.7  # upstream's random crop: the crop covers 70-100% of the short side
log = logging.getLogger(__name__)


def read_hq_list(file_meta: Any) -> list[tuple[str, str]]:
    """(image path, prompt) for every entry of ``file_meta.file_list`` (a .parquet, .txt or .list file)."""
    list_path = Path(_resolve(_get(file_meta, "file_list")))
    suffix = list_path.suffix.lower()
    if suffix not in HQ_LIST_SUFFIXES:
        raise DataError(f"HQ file list '{list_path}' must be a .parquet, .txt or .list file; convert it or point "
                        "file_meta.file_list to one.")
    if not list_path.is_file():
        raise DataError(f"HQ file list '{list_path}' (file_meta.file_list) does not exist; fix the path.")
    prefix = str(_get(file_meta, "image_path_prefix", "") or "")
    if suffix == ".parquet":
        entries = _parquet_entries(list_path, str(_get(file_meta, "image_path_key", "image_path")),
                                   str(_get(file_meta, "prompt_key", "prompt")))
    else:
        lines = list_path.read_text(encoding="utf-8").splitlines()
        entries = [(line.strip(), "") for line in lines if line.strip()]
    if not entries:
        raise DataError(f"HQ file list '{list_path}' lists no images; add one image path per row.")
    base = list_path.parent  # relative paths are relative to the list file, as for the paired lists
    entries = [(str(base / prefix / path), prompt) for path, prompt in entries]
    if not os.path.isfile(entries[0][0]):  # a wrong prefix shows on the first entry, in seconds
        raise DataError(f"The first image of HQ file list '{list_path}', '{entries[0][0]}', does not exist; fix "
                        f"file_meta.image_path_prefix ('{prefix}') or the paths in the list.")
    return entries


def _parquet_entries(list_path: Path, path_key: str, prompt_key: str) -> list[tuple[str, str]]:
    import pandas as pd

    try:
        table = pd.read_parquet(list_path)
    except Exception as err:  # pandas/pyarrow raise many types for a corrupt file
        raise DataError(f"Cannot read HQ file list '{list_path}': {err}; check that it is a valid .parquet "
                        "file.") from err
    for name, column in (("image_path_key", path_key), ("prompt_key", prompt_key)):
        if column not in table.columns and not (name == "prompt_key" and column == "none"):
            raise DataError(f"HQ file list '{list_path}' has no column '{column}' (file_meta.{name}); its columns "
                            f"are {list(map(str, table.columns))}, so set file_meta.{name} to one of them"
                            f"{' or none' if name == 'prompt_key' else ''}.")
    prompts = [""] * len(table) if prompt_key == "none" else table[prompt_key].tolist()
    return [(str(path), "" if prompt is None or (isinstance(prompt, float) and math.isnan(prompt)) else str(prompt))
            for path, prompt in zip(table[path_key].tolist(), prompts)]


def _shrink_to(image: Image.Image, short_side: int) -> Image.Image:
    """Scale so the short side is ``short_side``: box-halving first while twice as large (less aliasing), then
    bicubic, as guided-diffusion's crops (upstream's) do."""
    while min(image.size) >= 2 * short_side:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = short_side / min(image.size)
    return image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)


def crop_hq(pixels: np.ndarray, out_size: int, crop_type: str, rng: np.random.Generator) -> np.ndarray:
    """An (out_size, out_size) HQ crop: ``center`` and ``random`` scale the short side first (to out_size, or to
    a random size up to out_size / 0.7), then crop; ``none`` resizes the whole image to out_size."""
    if pixels.shape[:2] == (out_size, out_size):
        return pixels
    image = Image.fromarray(pixels)
    if crop_type == "none":
        return np.asarray(image.resize((out_size, out_size), resample=Image.BICUBIC))
    if crop_type == "center":
        short_side = out_size
    else:
        short_side = int(rng.integers(out_size, math.ceil(out_size / RANDOM_CROP_MIN_FRACTION) + 1))
    scaled = np.asarray(_shrink_to(image, short_side))
    height, width = scaled.shape[:2]
    if crop_type == "center":
        top, left = (height - out_size) // 2, (width - out_size) // 2
    else:
        top, left = int(rng.integers(0, height - out_size + 1)), int(rng.integers(0, width - out_size + 1))
    return scaled[top:top + out_size, left:left + out_size]


def flip_and_rotate(pixels: np.ndarray, use_hflip: bool, use_rot: bool, rng: np.random.Generator) -> np.ndarray:
    """A horizontal flip (p 0.5), and with use_rot a vertical flip and a transpose (p 0.5 each): the 8
    orientations, as BasicSR's augment draws them."""
    flips = rng.random(3) < 0.5
    if use_hflip and flips[0]:
        pixels = pixels[:, ::-1]
    if use_rot and flips[1]:
        pixels = pixels[::-1]
    if use_rot and flips[2]:
        pixels = pixels.transpose(1, 0, 2)
    return pixels


def draw_kernels(settings: Any, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """kernel1, kernel2 (the two stages' blur) and sinc_kernel (the last stage's) for one image."""
    stages = {}
    for name, suffix in (("kernel1", ""), ("kernel2", "2")):
        stages[name] = random_blur_kernel(
            rng, **{key: _get(settings, key + suffix) for key in (
                "blur_kernel_size", "kernel_list", "kernel_prob", "blur_sigma", "betag_range", "betap_range",
                "sinc_prob")})
    stages["sinc_kernel"] = random_final_sinc(rng, kernel_size=_get(settings, "blur_kernel_size2"),
                                              final_sinc_prob=_get(settings, "final_sinc_prob"))
    return {name: torch.from_numpy(kernel) for name, kernel in stages.items()}


class RealESRGANDataset(Dataset):
    """HQ images from a file list (upstream HYPIR's RealESRGANDataset), with the kernels their degradation uses.

    An unreadable image raises a DataError, or with ``skip_bad_images`` is skipped: the item is None, which the
    collate function drops and counts (upstream swaps in a random other image instead).
    """

    def __init__(self, params: Any, skip_bad_images: bool = False):
        backend = str(_get(_get(params, "file_backend_cfg", {"target": "HardDiskBackend"}), "target"))
        if backend.rsplit(".", 1)[-1] != "HardDiskBackend":
            raise ConfigError(f"data_config.train.dataset.params.file_backend_cfg.target is '{backend}'; only "
                              "HardDiskBackend (files on a local or mounted disk) is supported, so use it.")
        self.params = params
        self.entries = read_hq_list(_get(params, "file_meta"))
        self.out_size = int(_get(params, "out_size", 512))
        self.crop_type = str(_get(params, "crop_type", "none"))
        if self.crop_type not in CROP_TYPES:
            raise ConfigError(f"data_config.train.dataset.params.crop_type is '{self.crop_type}'; use one of "
                              f"{CROP_TYPES}.")
        self.skip_bad_images = skip_bad_images
        self.seed, self.epoch = None, 0
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Fix the draws of the coming epoch (called by the trainer before each epoch)."""
        self.seed, self.epoch = seed, epoch

    def __getitem__(self, index: int) -> dict | None:
        path, prompt = self.entries[index]
        seed = torch.initial_seed() if self.seed is None else self.seed
        rng = np.random.default_rng([seed, self.epoch, index])
        try:
            pixels = read_image(path)
        except DataError as err:
            if not self.skip_bad_images:
                raise
            if path not in self._warned:
                self._warned.add(path)
                log.warning("Skipping a bad training image: %s", err)
            return None
        params = self.params
        pixels = crop_hq(pixels, self.out_size, self.crop_type, rng)
        pixels = flip_and_rotate(pixels, bool(_get(params, "use_hflip", True)), bool(_get(params, "use_rot", False)),
                                 rng)
        if rng.random() < float(_get(params, "p_empty_prompt", 0.0)):
            prompt = ""
        hq = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float().div_(255.0)  # a copy: PIL arrays are read-only
        item = {"hq": hq, **draw_kernels(params, rng), "txt": prompt}
        if _get(params, "return_file_name", False):
            item["file_name"] = os.path.basename(path)
        return item
