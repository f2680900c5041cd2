"""Paired LQ/GT image data: training datasets (paired list, all-in-one folders) and the validation scan.

Config objects are read by attribute (or key) only, so any small object with these fields works:
    train_cfg.dataset.kind: "paired_list" | "aio_folder" | "realesrgan" (HQ images only: hypir_core.hq_data)
    train_cfg.dataset.params (paired_list): file_meta.{file_list, lq_key, gt_key, prompt_key}, out_size,
        crop_type ("none" | "center" | "random"), use_hflip, use_rot, return_file_name
    train_cfg.dataset.params (aio_folder): root, degradation_types, prompt, out_size, crop_type, use_hflip, use_rot
    val_cfg: val_dir, degradation_types, num_samples_per_type (None = all); or hq_dir and degradation
        (a set synthesised once from HQ images: hypir_core.hq_val)
Paths may be "demo://..." (see hypir_core.demo).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from hypir_core.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_DEGRADATION_TYPES = ("Blur", "Haze", "Lowlight", "Rain", "Snow")
CROP_TYPES = ("none", "center", "random")
DATASET_KINDS = ("paired_list", "aio_folder", "realesrgan")
_MISSING = object()
log = logging.getLogger(__name__)


def _get(obj: Any, name: str, default: Any = _MISSING) -> Any:
    """Read a config field from a dataclass/namespace (attribute) or a plain dict (key)."""
    value = obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)
    if value is _MISSING:
        raise ConfigError(f"The data config has no field '{name}'; add it (see hypir_core/data.py for the fields).")
    return value


def _resolve(path: str) -> str:
    """A demo:// path as its built folder (built on first use); any other path unchanged."""
    from hypir_core.demo import resolve_path

    return resolve_path(str(path))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (grey, palette, 16-bit and RGBA are converted)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith(("I", "F")):  # 16-bit / float greyscale: PIL's convert would clip to 255
                pixels = np.asarray(image, dtype=np.float64)
                pixels = np.round(np.clip(pixels / (65535.0 if pixels.max() > 255 else 255.0), 0, 1) * 255)
                return np.repeat(pixels.astype(np.uint8)[..., None], 3, axis=-1)
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = "no such file" if not os.path.exists(path) else (str(err) or type(err).__name__)
        raise DataError(
            f"Cannot read image '{path}': {reason}; replace or remove this file "
            "(for training data, skip_bad_images: true skips such pairs)."
        ) from err


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)


@dataclass(frozen=True)
class _Sample:
    lq_path: str
    gt_path: str
    txt: str
    degradation_type: str | None = None


class _PairedImageDataset(Dataset):
    """Shared loading, size check, crop/resize and identical LQ/GT augmentation for the training datasets."""

    def __init__(self, samples: list[_Sample], params: Any, skip_bad_images: bool):
        self.samples = samples
        self.out_size = int(_get(params, "out_size", 512))
        self.crop_type = str(_get(params, "crop_type", "none"))
        if self.crop_type not in CROP_TYPES:
            raise ConfigError(f"data_config.train.dataset.params.crop_type is '{self.crop_type}'; use one of {CROP_TYPES}.")
        if self.out_size < 8:
            raise ConfigError(f"data_config.train.dataset.params.out_size is {self.out_size}; use an integer >= 8.")
        self.use_hflip = bool(_get(params, "use_hflip", True))
        self.use_rot = bool(_get(params, "use_rot", True))
        self.return_file_name = bool(_get(params, "return_file_name", False))
        self.skip_bad_images = skip_bad_images
        self.seed, self.epoch = None, 0
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Fix the augmentation draws of the coming epoch (called by the trainer before each epoch)."""
        self.seed, self.epoch = seed, epoch

    def _load_pair(self, sample: _Sample) -> tuple[np.ndarray, np.ndarray]:
        lq, gt = read_image(sample.lq_path), read_image(sample.gt_path)
        if lq.shape != gt.shape:
            raise DataError(
                f"LQ '{sample.lq_path}' is {lq.shape[1]}x{lq.shape[0]} but GT '{sample.gt_path}' is "
                f"{gt.shape[1]}x{gt.shape[0]}; all-in-one restoration pairs must have the same size, "
                "so resize or remove this pair."
            )
        return lq, gt

    def _crop(self, lq: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        size = self.out_size
        pad_h, pad_w = max(0, size - lq.shape[0]), max(0, size - lq.shape[1])
        if pad_h or pad_w:
            pad = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
            lq, gt = np.pad(lq, pad, mode="reflect"), np.pad(gt, pad, mode="reflect")
        height, width = lq.shape[:2]
        if self.crop_type == "random":
            top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        else:
            top, left = (height - size) // 2, (width - size) // 2
        return lq[top : top + size, left : left + size], gt[top : top + size, left : left + size]

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] == (self.out_size, self.out_size):
            return image
        resized = F.interpolate(image[None], size=(self.out_size,) * 2, mode="bicubic", antialias=True)
        return resized[0].clamp_(0, 1)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.samples[index]
        # Augmentation depends only on (seed, epoch, index): the same whatever the worker count, and a
        # resumed run draws what the uninterrupted one would.
        seed = torch.initial_seed() if self.seed is None else self.seed
        rng = np.random.default_rng([seed, self.epoch, index])
        try:
            lq, gt = self._load_pair(sample)
        except DataError as err:
            if not self.skip_bad_images:
                raise
            if sample.lq_path not in self._warned:
                self._warned.add(sample.lq_path)
                log.warning("Skipping a bad training pair: %s", err)
            return None
        if self.crop_type != "none":
            lq, gt = self._crop(lq, gt, rng)
        if self.use_hflip and rng.random() < 0.5:
            lq, gt = lq[:, ::-1], gt[:, ::-1]
        if self.use_rot:
            turns = int(rng.integers(0, 4))
            lq, gt = np.rot90(lq, turns), np.rot90(gt, turns)
        lq_tensor, gt_tensor = _to_tensor(lq), _to_tensor(gt)
        if self.crop_type == "none":
            lq_tensor, gt_tensor = self._resize(lq_tensor), self._resize(gt_tensor)
        item: dict[str, Any] = {"GT": gt_tensor, "LQ": lq_tensor, "txt": sample.txt}
        if sample.degradation_type is not None:
            item["degradation_type"] = sample.degradation_type
        if self.return_file_name:
            item["file_name"] = sample.gt_path
        return item


def _read_file_list(file_list: str):
    """Load a .parquet or .csv file list as a pandas DataFrame."""
    import pandas as pd

    path = Path(file_list)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise DataError(f"File list '{path}' must be a .parquet or .csv file; convert it or point file_meta.file_list to one.")
    if not path.is_file():
        raise DataError(f"File list '{path}' (file_meta.file_list) does not exist; fix the path.")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False)
    except Exception as err:  # pandas/pyarrow raise many types for a corrupt file
        raise DataError(f"Cannot read file list '{path}': {err}; check that it is a valid {path.suffix} file.") from err


class PairedListDataset(_PairedImageDataset):
    """LQ/GT pairs and prompts listed in a .parquet or .csv file (HYPIR's PairedParquetDataset layout)."""

    def __init__(self, params: Any, skip_bad_images: bool = False):
        file_meta = _get(params, "file_meta")
        list_path = Path(_resolve(_get(file_meta, "file_list")))
        table = _read_file_list(str(list_path))
        keys = {name: str(_get(file_meta, name, default)) for name, default in
                (("lq_key", "lq_path"), ("gt_key", "gt_path"), ("prompt_key", "prompt"))}  # fmt: skip
        for name, column in keys.items():
            if column not in table.columns:
                raise DataError(
                    f"File list '{list_path}' has no column '{column}' (file_meta.{name}); its columns are "
                    f"{list(map(str, table.columns))}, so set file_meta.{name} to one of them."
                )
        if len(table) == 0:
            raise DataError(f"File list '{list_path}' has no rows; add LQ/GT pairs to it.")
        base = list_path.parent  # relative image paths are relative to the list file, not the working directory

        def full(p: Any) -> str:
            return str(p) if os.path.isabs(str(p)) else str(base / str(p))

        def text(value: Any) -> str:
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

        samples = [
            _Sample(full(lq), full(gt), text(prompt))
            for lq, gt, prompt in zip(table[keys["lq_key"]], table[keys["gt_key"]], table[keys["prompt_key"]])
        ]
        super().__init__(samples, params, skip_bad_images)


def _image_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def _scan_type_folder(type_dir: Path, types_key: str) -> list[tuple[str, Path, Path]]:
    """Matched (name, lq_path, gt_path) under type_dir/LQ and type_dir/GT, sorted by name."""
    if not type_dir.is_dir():
        raise DataError(
            f"Degradation type folder '{type_dir}' does not exist; create it with LQ/ and GT/ inside "
            f"or remove '{type_dir.name}' from {types_key}."
        )
    lq_dir, gt_dir = type_dir / "LQ", type_dir / "GT"
    for folder in (lq_dir, gt_dir):
        if not folder.is_dir():
            raise DataError(f"Folder '{folder}' does not exist; put the {folder.name} images of '{type_dir.name}' there.")
    lq_files, gt_files = _image_files(lq_dir), _image_files(gt_dir)
    if not lq_files:
        raise DataError(f"LQ folder '{lq_dir}' holds no images ({', '.join(IMAGE_EXTENSIONS)}); add the degraded images.")
    unmatched = sorted([f"LQ/{n}" for n in lq_files.keys() - gt_files.keys()] +
                       [f"GT/{n}" for n in gt_files.keys() - lq_files.keys()])  # fmt: skip
    if unmatched:
        more = f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
        raise DataError(
            f"LQ and GT file names differ in '{type_dir}' ({len(unmatched)} without a partner: "
            f"{', '.join(unmatched[:10])}{more}); give every LQ image a GT image with the same file name."
        )
    return [(name, lq_files[name], gt_files[name]) for name in sorted(lq_files)]


class AIOFolderDataset(_PairedImageDataset):
    """All-in-one restoration folders: root/<type>/LQ/* and root/<type>/GT/* with the same file names."""

    def __init__(self, params: Any, skip_bad_images: bool = False):
        root = Path(_resolve(_get(params, "root")))
        if not root.is_dir():
            raise DataError(f"Training folder '{root}' (dataset.params.root) does not exist; fix the path.")
        prompt = str(_get(params, "prompt", "") or "")
        samples = [
            _Sample(str(lq), str(gt), prompt, degradation_type)
            for degradation_type in _get(params, "degradation_types", DEFAULT_DEGRADATION_TYPES)
            for _, lq, gt in _scan_type_folder(root / degradation_type, "dataset.params.degradation_types")
        ]
        super().__init__(samples, params, skip_bad_images)


def build_train_dataset(train_cfg: Any, skip_bad_images: bool = False) -> Dataset:
    """The training dataset that train_cfg.dataset describes; items are {"GT", "LQ", "txt"} (None if skipped)."""
    dataset_cfg = _get(train_cfg, "dataset")
    kind, params = _get(dataset_cfg, "kind"), _get(dataset_cfg, "params")
    if kind == "paired_list":
        return PairedListDataset(params, skip_bad_images)
    if kind == "aio_folder":
        return AIOFolderDataset(params, skip_bad_images)
    if kind == "realesrgan":
        from hypir_core.hq_data import RealESRGANDataset

        return RealESRGANDataset(params, skip_bad_images)
    raise ConfigError(f"data_config.train.dataset kind is '{kind}'; use one of {DATASET_KINDS}.")


def train_collate(items: list[dict | None]) -> dict[str, Any]:
    """Batch the items: tensors stacked, other values listed; None items (bad pairs) dropped and counted.

    When every item was dropped, "GT" and "LQ" are empty (0, 3, 0, 0) tensors and "txt" is [].
    """
    kept = [item for item in items if item is not None]
    batch: dict[str, Any] = {"skipped": len(items) - len(kept)}
    if not kept:
        batch.update(GT=torch.empty(0, 3, 0, 0), LQ=torch.empty(0, 3, 0, 0), txt=[])
        return batch
    for key in kept[0]:
        values = [item[key] for item in kept]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def train_batches(dataset, train_cfg: Any, seed: int, progress, pin_memory: bool = False):
    """Endless training batches in a seeded order per epoch, from where ``progress`` says (and advancing it).

    ``progress`` has ``epoch``, ``batches_in_epoch`` and ``skipped_images``; the order comes from
    (seed, epoch) and augmentation from (seed, epoch, index), so a resumed run sees what the
    uninterrupted one would. An epoch's last partial batch is dropped.
    """
    batch_size = train_cfg.batch_size
    while True:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(
            seed * 100_003 + progress.epoch)).tolist()
        usable = len(order) // batch_size * batch_size
        batch_indices = [order[i:i + batch_size] for i in range(0, usable, batch_size)]
        if not batch_indices:
            raise DataError(f"The training set has {len(order)} pairs, fewer than one batch of "
                            f"{batch_size}; lower data_config.train.batch_size or add data.")
        dataset.set_epoch(progress.epoch, seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_indices[progress.batches_in_epoch:],
            num_workers=train_cfg.dataloader_num_workers, collate_fn=train_collate, pin_memory=pin_memory,
            persistent_workers=False, generator=torch.Generator().manual_seed(seed + progress.epoch))
        for batch in loader:
            progress.batches_in_epoch += 1
            progress.skipped_images += batch.get("skipped", 0)
            yield batch
        progress.epoch += 1
        progress.batches_in_epoch = 0


@dataclass(frozen=True)
class ValPair:
    """One validation pair: file paths of the degraded (LQ) and clean (GT) image."""

    degradation_type: str
    name: str
    lq_path: str
    gt_path: str


def scan_val_set(val_cfg: Any) -> list[ValPair]:
    """The validation pairs under val_cfg.val_dir/<type>/{LQ,GT}, first N sorted names per type, sizes checked.

    With val_cfg.hq_dir instead, the pairs of the set synthesised once from those HQ images (hypir_core.hq_val).
    """
    if _get(val_cfg, "hq_dir", None) is not None:
        from hypir_core.hq_val import synthesised_val_set

        return synthesised_val_set(val_cfg)
    val_dir = _get(val_cfg, "val_dir", None)
    if val_dir is None:
        raise DataError(
            "data_config.val.val_dir is not set; point it to a folder with <type>/LQ and <type>/GT (or demo://aio/val)."
        )
    root = Path(_resolve(val_dir))
    if not root.is_dir():
        raise DataError(f"Validation folder '{root}' (data_config.val.val_dir) does not exist; fix the path.")
    limit = _get(val_cfg, "num_samples_per_type", None)
    pairs = []
    for degradation_type in _get(val_cfg, "degradation_types", DEFAULT_DEGRADATION_TYPES):
        matched = _scan_type_folder(root / degradation_type, "data_config.val.degradation_types")
        pairs += [ValPair(degradation_type, name, str(lq), str(gt)) for name, lq, gt in matched[:limit]]
    check_val_sizes(pairs)
    return pairs


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels; unreadable -> DataError."""
    try:
        with Image.open(path) as image:  # reads the header only, no pixel decoding
            return image.size
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read image '{path}': {err}; replace or remove this file.") from err


def decode_val_set(pairs: list[ValPair], threads: int = 4) -> None:
    """Decode every LQ and GT image of the validation set (as the run's cache will); the first that cannot be
    read is a DataError naming it. Decoding runs in threads (PIL releases the GIL while it decodes)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [path for pair in pairs for path in (pair.lq_path, pair.gt_path)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(read_image, paths):  # in order: the first bad file raises
            pass


def check_val_sizes(pairs: list[ValPair]) -> None:
    """Raise DataError naming the files when an LQ image and its GT differ in size (headers only)."""
    mismatched = []
    for pair in pairs:
        lq_size, gt_size = image_size(pair.lq_path), image_size(pair.gt_path)
        if lq_size != gt_size:
            mismatched.append((pair, lq_size, gt_size))
    if mismatched:
        folders = sorted({str(Path(pair.lq_path).parent.parent) for pair, _, _ in mismatched})
        details = [f"'{pair.lq_path}' is {lq[0]}x{lq[1]} but '{pair.gt_path}' is {gt[0]}x{gt[1]}"
                   for pair, lq, gt in mismatched[:5]]  # fmt: skip
        more = f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        raise DataError(
            f"LQ and GT sizes differ for {len(mismatched)} validation pair(s) in {', '.join(folders)}: "
            f"{'; '.join(details)}{more}; restoration pairs must have the same size, so resize or remove them."
        )
