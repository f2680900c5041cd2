"""Validation rounds: exact, deterministic and cheap enough to run in every trial of a sweep.

The validation set is decoded once per run into a bounded uint8 cache, the prompt is embedded
once, images run in batches of ``data_config.val.batch_size``, the LQ latent is the posterior's
mode (not a sample), and metrics are computed (by default) on outputs rounded to 8 bits, as they
would be on saved PNGs.

Images go through hypir_core/restoration.py, the path ``launch.py --restore`` runs: by default the
whole image in one pass with no colour fix (as the users' trainer validates); ``data_config.val.
color_fix: wavelet`` and ``tile_size`` score HYPIR's deployed inference instead. The final round
also scores the other colour-fix setting on the same outputs (``val/color_fix/<setting>/...``).
"""

from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from hypir_core.data import image_size, read_image, scan_val_set
from hypir_core.errors import DataError
from hypir_core.metrics import final_score
from hypir_core.restoration import RestoreSettings, finish, model_output, vae_factor

METRICS = ("PSNR", "SSIM", "LPIPS")
OTHER_FIX = {"none": "wavelet", "wavelet": "none"}
GRID_IMAGES_PER_TYPE = 3
CROP_SIZE = 256  # side of the centre crops saved for side-by-side comparison


def _centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    top, left = max(0, (image.shape[0] - size) // 2), max(0, (image.shape[1] - size) // 2)
    return image[top:top + size, left:left + size]


def _cache_limit_bytes() -> int:
    return int(float(os.environ.get("HYPIR_SWEEP_VAL_CACHE_GB", "8")) * 2**30)


# GT LPIPS features are kept for as many batches as fit here: they halve LPIPS's cost per round.
LPIPS_REFERENCE_BYTES = 2 * 2**30


@dataclass
class ValidationResult:
    """One round's scores: ``metrics`` holds the logged names (val/PSNR, val/Blur/PSNR, ...)."""

    metrics: dict[str, float]
    per_image: list[dict] = field(default_factory=list)
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # per type: image rows of LQ | restored | GT
    grid_images: dict[str, int] = field(default_factory=dict)  # per type: how many image rows its grid holds

    def save_crops(self, folder: str, size: int = CROP_SIZE) -> list[str]:
        """Write ``<folder>/<type>.png`` per degradation type: rows of LQ | restored | GT, each a centre crop of
        at most ``size`` pixels, so runs can be compared side by side (analyze.py's report does)."""
        os.makedirs(folder, exist_ok=True)
        written = []
        for kind, grid in self.grids.items():
            rows = [np.concatenate([_centre_crop(panel, size) for panel in np.split(row, 3, axis=1)], axis=1)
                    for row in np.split(grid, self.grid_images.get(kind, 1), axis=0)]
            path = os.path.join(folder, f"{kind}.png")
            Image.fromarray(np.concatenate(rows, axis=0)).save(path)
            written.append(path)
        return written

    def write_csv(self, path: str) -> None:
        """Write file, type, PSNR, SSIM, LPIPS per image (so a user sees where the model fails)."""
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "type", *METRICS])
            writer.writeheader()
            writer.writerows(self.per_image)


class Validator:
    """Holds the cached validation set and scores a generator on it."""

    def __init__(self, val_cfg, generator, metrics, device, autocast=contextlib.nullcontext, pairs=None,
                 progress_bar: bool = True):
        self.generator, self.metrics, self.device, self.autocast = generator, metrics, device, autocast
        self.quantize = val_cfg.quantize
        self.batch_size = val_cfg.batch_size
        self.resize = val_cfg.resize
        self.settings = settings_for(val_cfg)
        self.settings.check(vae_factor(generator.vae), {"patch_size": "data_config.val.tile_size",
                                                         "stride": "data_config.val.tile_stride"})
        self.pairs = scan_val_set(val_cfg) if pairs is None else pairs
        self._check_fits(self.pairs)
        self.images = [self._load(pair) for pair in tqdm(self.pairs, desc="Caching validation set", leave=False,
                                                                  disable=not progress_bar)]
        with torch.no_grad():
            self.text_embed = generator.encode_prompt([val_cfg.prompt])
        self.lpips_references: dict[int, list[torch.Tensor]] = {}  # first index of a batch -> GT features
        self.reference_budget = LPIPS_REFERENCE_BYTES

    def _check_fits(self, pairs) -> None:
        if self.resize == "native":
            pixels = sum(np.prod(image_size(p.gt_path)) for p in pairs)
        else:
            pixels = len(pairs) * self.resize * self.resize
        needed = 2 * 3 * int(pixels)
        if needed > _cache_limit_bytes():
            raise DataError(
                f"The validation set ({len(pairs)} pairs) needs {needed / 2**30:.1f} GiB of memory as uint8, over "
                f"the {_cache_limit_bytes() / 2**30:.1f} GiB limit; set data_config.val.num_samples_per_type or "
                "a smaller data_config.val.resize, or raise HYPIR_SWEEP_VAL_CACHE_GB."
            )

    def _load(self, pair) -> tuple[np.ndarray, np.ndarray]:
        lq, gt = read_image(pair.lq_path), read_image(pair.gt_path)
        if self.resize != "native":
            size = (self.resize, self.resize)
            lq = np.asarray(Image.fromarray(lq).resize(size, Image.BICUBIC))
            gt = np.asarray(Image.fromarray(gt).resize(size, Image.BICUBIC))
        return lq, gt

    def _batches(self):
        """Index batches of equal image size (all of them when resized)."""
        by_shape: dict[tuple, list[int]] = {}
        for index, (lq, _) in enumerate(self.images):
            by_shape.setdefault(lq.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start:start + self.batch_size]

    @torch.no_grad()
    def outputs(self, lq_uint8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, reference) of a (B,H,W,3) uint8 batch before the colour fix (restoration.model_output)."""
        lq = torch.from_numpy(lq_uint8).to(self.device).permute(0, 3, 1, 2).float() / 255
        with self.autocast():
            return model_output(self.generator, lq, self.text_embed, self.settings)

    def restore(self, lq_uint8: np.ndarray) -> torch.Tensor:
        """Restore a (B,H,W,3) uint8 batch; returns float (B,3,H,W) in [0, 1] on the device."""
        return finish(*self.outputs(lq_uint8), self.settings.color_fix, self.quantize)

    def run(self, with_details: bool = False, progress: bool = False) -> ValidationResult:
        """Score the generator on the cached set; ``with_details`` keeps per-image rows and image grids."""
        was_training = self.generator.training
        self.generator.eval()
        # The final round (with_details) also scores the other colour-fix setting on the same outputs.
        fixes = [self.settings.color_fix] + ([OTHER_FIX[self.settings.color_fix]] if with_details else [])
        scores = {fix: {name: np.zeros(len(self.images)) for name in METRICS} for fix in fixes}
        grid_rows: dict[str, list[np.ndarray]] = {}
        batches = list(self._batches())
        for indices in tqdm(batches, desc="Validation", disable=not progress, leave=False):
            lq = np.stack([self.images[i][0] for i in indices])
            gt = np.stack([self.images[i][1] for i in indices])
            output, reference = self.outputs(lq)
            gt_tensor = torch.from_numpy(gt).to(self.device).permute(0, 3, 1, 2).float() / 255
            for fix in fixes:
                finished = finish(output, reference, fix, self.quantize)
                batch_scores = self.metrics(finished, gt_tensor, lpips_reference=self._reference(indices, gt_tensor))
                for name in METRICS:
                    scores[fix][name][indices] = batch_scores[name].numpy()
                if fix == fixes[0]:
                    restored = finished
            if with_details:
                out = (restored.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
                for row, i in enumerate(indices):
                    rows = grid_rows.setdefault(self.pairs[i].degradation_type, [])
                    if len(rows) < GRID_IMAGES_PER_TYPE:
                        rows.append(np.concatenate([self.images[i][0], out[row], self.images[i][1]], axis=1))
        self.generator.train(was_training)
        result = ValidationResult(metrics=self._aggregate(scores[fixes[0]]))
        for fix in fixes[1:]:
            result.metrics.update(self._aggregate(scores[fix], prefix=f"val/color_fix/{fix}/"))
        if with_details:
            main = scores[fixes[0]]
            result.per_image = [
                {"file": pair.name, "type": pair.degradation_type, **{m: float(main[m][i]) for m in METRICS}}
                for i, pair in enumerate(self.pairs)]
            result.grids = {t: np.concatenate(rows, axis=0) for t, rows in grid_rows.items()
                            if len({r.shape for r in rows}) == 1}
            result.grid_images = {t: len(grid_rows[t]) for t in result.grids}
        return result

    def _reference(self, indices: list[int], gt: torch.Tensor) -> list[torch.Tensor] | None:
        """Cached GT features for this batch, computed on first use while the budget lasts."""
        if indices[0] not in self.lpips_references:
            needed = len(indices) * self.metrics.reference_bytes(*gt.shape[-2:])
            if needed > self.reference_budget:
                return None
            self.reference_budget -= needed
            self.lpips_references[indices[0]] = self.metrics.lpips_reference(gt)
        return self.lpips_references[indices[0]]

    def _aggregate(self, scores: dict[str, np.ndarray], prefix: str = "val/") -> dict[str, float]:
        metrics = {f"{prefix}{name}": float(scores[name].mean()) for name in METRICS}
        metrics[f"{prefix}Final_Score"] = final_score(*(metrics[f"{prefix}{name}"] for name in METRICS))
        types = [pair.degradation_type for pair in self.pairs]
        for degradation_type in dict.fromkeys(types):
            mask = np.array([t == degradation_type for t in types])
            for name in METRICS:
                metrics[f"{prefix}{degradation_type}/{name}"] = float(scores[name][mask].mean())
        return metrics


def settings_for(val_cfg) -> RestoreSettings:
    """The restoration settings validation scores with: the posterior's mode, at the cached image's size.

    ``tile_size`` null is the whole image in one pass (the default); set, HYPIR's deployed geometry
    (short side resized up to the tile size, Gaussian-weighted tiles, resized back).
    """
    return RestoreSettings(upscale=1.0, patch_size=getattr(val_cfg, "tile_size", None),
                           stride=getattr(val_cfg, "tile_stride", 256), posterior="mode",
                           color_fix=getattr(val_cfg, "color_fix", "none"), pad_mode="reflect",
                           quantize=val_cfg.quantize)
