"""Scores of restored image files against their GT, per image and per degradation type (``launch.py --restore --gt``).

GT images are matched as validation matches them: the same file name, in the GT folder at the
LQ's relative path with its ``LQ`` folder read as ``GT`` (``Val/Blur/LQ/x.png`` -> ``GT_DIR/Blur/GT/x.png``;
a flat folder matches a flat folder). The degradation type is the folder above ``LQ`` (or the first
folder). Metrics are validation's (pyiqa PSNR-Y, SSIM-Y, LPIPS-VGG) on the files as saved.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from hypir_core.data import read_image
from hypir_core.errors import DataError
from hypir_core.metrics import QualityMetrics, final_score

METRICS = ("PSNR", "SSIM", "LPIPS")
ALL = "all"


def gt_path(image: Path, root: Path, gt_dir: str) -> Path:
    """Where the GT of LQ ``image`` (under ``root``) is: its relative path under ``gt_dir``, LQ read as GT."""
    parts = ["GT" if part == "LQ" else part for part in image.relative_to(root).parts]
    return Path(gt_dir).joinpath(*parts)


def degradation_type(image: Path, root: Path) -> str | None:
    """The folder above ``LQ`` in the image's relative path (or its first folder); None for a flat folder."""
    folders = image.relative_to(root).parts[:-1]
    if "LQ" in folders:
        index = folders.index("LQ")
        return folders[index - 1] if index > 0 else None
    return folders[0] if folders else None


def _tensor(pixels: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float().to(device) / 255


def score_folder(outputs: dict[str, str], root: Path, gt_dir: str, device, lpips_weights: str,
                 out_root: Path) -> tuple[list[dict], list[dict]]:
    """Score each restored file against its GT; write metrics.csv and metrics_per_type.csv into ``out_root``.

    Returns (per-image rows, per-type rows); the last per-type row is ``all`` (every image).
    """
    pairs = [(Path(lq), Path(out), gt_path(Path(lq), root, gt_dir)) for lq, out in outputs.items()]
    missing = [str(gt) for _, _, gt in pairs if not gt.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(pairs)} restored images have no GT image, e.g. '{missing[0]}'; "
                        f"--gt needs a GT image with the LQ's file name at its relative path (LQ folders read as GT).")
    metrics = QualityMetrics(device, lpips_weights)
    rows = []
    for lq, out, gt in pairs:
        restored, reference = read_image(out), read_image(gt)
        if restored.shape != reference.shape:
            raise DataError(f"Restored '{out}' is {restored.shape[1]}x{restored.shape[0]} but its GT '{gt}' is "
                            f"{reference.shape[1]}x{reference.shape[0]}; set --upscale (or --scale-by) so that the "
                            f"output has the GT's size.")
        scores = metrics(_tensor(restored, device), _tensor(reference, device))
        row = {"file": str(lq.relative_to(root)), "type": degradation_type(lq, root) or ALL,
               **{name: float(scores[name][0]) for name in METRICS}}
        row["Final_Score"] = final_score(row["PSNR"], row["SSIM"], row["LPIPS"])
        rows.append(row)
    per_type = summarize(rows)
    _write_csv(out_root / "metrics.csv", rows)
    _write_csv(out_root / "metrics_per_type.csv", per_type)
    return rows, per_type


def summarize(rows: list[dict]) -> list[dict]:
    """Mean PSNR, SSIM, LPIPS per type and over all images, Final_Score of those means (as validation's)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["type"], []).append(row)
    if set(groups) != {ALL}:
        groups[ALL] = rows
    summary = []
    for kind, members in groups.items():
        means = {name: float(np.mean([r[name] for r in members])) for name in METRICS}
        summary.append({"type": kind, "images": len(members), **means,
                        "Final_Score": final_score(means["PSNR"], means["SSIM"], means["LPIPS"])})
    return summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
