#!/usr/bin/env python
"""What the colour fix and HYPIR's tiles do to the scores, and how fast launch.py --restore runs, on the demo.

  python bench/restore.py                 train configs/tiny.yaml (150 steps) in a temporary folder, then measure
  python bench/restore.py --run DIR       measure an existing run folder (summary.json + HYPIR_sd2_final.pth)

Scores the run's final weights on the demo validation set (40 pairs, 64x64) four ways, per type:
validation as is (whole image, posterior mode, no colour fix), the same outputs with HYPIR's wavelet
colour fix, tiled at the native size (tiles of 32 pixels every 16: the tiny model's 4x4 latent cells
make that 8/4 latent tiles, as SD2's 512/256 are 64/32), and launch.py --restore with its defaults
(HYPIR's inference: 512 tiles, so the 64-pixel images run at 512, posterior sample, colour fix).
Prints markdown rows for BENCHMARKS.md, and restore's seconds per image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypir_core.config import config_from_dict  # noqa: E402
from hypir_core.demo import resolve_path  # noqa: E402
from hypir_core.metrics import FINAL_SCORE, QualityMetrics, final_score  # noqa: E402
from hypir_core.restoration import RestoreSettings  # noqa: E402
from hypir_core.restore import ModelSpec, load_generator, restore_images  # noqa: E402
from hypir_core.validation import Validator  # noqa: E402

TYPES = ("Blur", "Haze", "Lowlight", "Rain", "Snow")


def train(folder: str) -> str:
    run = os.path.join(folder, "run")
    subprocess.run([sys.executable, str(ROOT / "launch.py"), "--single", str(ROOT / "configs" / "tiny.yaml"),
                    f"output_dir={run}", "report_to=none", "log_image_steps=0", "log_grad_steps=0", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    return run


def row(name: str, metrics: dict, prefix: str = "val/") -> str:
    cells = [f"{metrics[f'{prefix}Final_Score']:.3f}", f"{metrics[f'{prefix}PSNR']:.2f}"]
    for kind in TYPES:
        triple = [metrics[f"{prefix}{kind}/{m}"] for m in ("PSNR", "SSIM", "LPIPS")]
        cells.append(f"{triple[0]:.2f} / {final_score(*triple):.2f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--run", help="a trained run folder (default: train configs/tiny.yaml now)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        run = args.run or train(folder)
        trained = time.time() - started
        with open(os.path.join(run, "summary.json")) as handle:
            cfg = config_from_dict(json.load(handle)["config"])
        weights = os.path.join(run, "HYPIR_sd2_final.pth")
        spec = ModelSpec.from_config(cfg, weights, run)
        generator = load_generator(spec, torch.device("cpu"))
        metrics = QualityMetrics("cpu", cfg.lpips_weights)
        val, rows = cfg.data_config.val, []
        final = Validator(val, generator, metrics, "cpu").run(with_details=True).metrics
        rows.append(row("validation as is (whole 64x64 image, mode, no colour fix)", final))
        rows.append(row("the same outputs with the wavelet colour fix", final, "val/color_fix/wavelet/"))
        tiled_cfg = type("Val", (), {**{k: getattr(val, k) for k in val.__dataclass_fields__},
                                     "resize": "native", "tile_size": 32, "tile_stride": 16, "color_fix": "wavelet"})
        tiled = Validator(tiled_cfg, generator, metrics, "cpu").run(with_details=True).metrics
        rows.append(row("tiled native size (32/16 px tiles), wavelet colour fix", tiled))
        rows.append(row("tiled native size (32/16 px tiles), no colour fix", tiled, "val/color_fix/none/"))
        val_dir = resolve_path(val.val_dir)
        timings = {}
        for name, settings in (("validation's settings", RestoreSettings(patch_size=None, posterior="mode",
                                                                          color_fix="none", pad_mode="reflect")),
                               ("defaults (HYPIR's: 512 tiles, sample, colour fix)", RestoreSettings())):
            out = os.path.join(folder, name.split()[0])
            result = restore_images(spec, val_dir, out, settings, gt_dir=val_dir, device="cpu", progress=False)
            timings[name] = result.seconds_per_image
            if settings.patch_size is not None:
                by_type = {r["type"]: r for r in result.per_type}
                as_metrics = {FINAL_SCORE: by_type["all"]["Final_Score"], "val/PSNR": by_type["all"]["PSNR"]}
                for kind in TYPES:
                    for m in ("PSNR", "SSIM", "LPIPS"):
                        as_metrics[f"val/{kind}/{m}"] = by_type[kind][m]
                rows.append(row("launch.py --restore defaults (images run at 512, sample, colour fix)", as_metrics))
    print(f"run: {run if args.run else f'configs/tiny.yaml, trained here in {trained:.0f} s'}; "
          f"torch threads {torch.get_num_threads()}")
    print("| pipeline | Final_Score | PSNR | " + " | ".join(f"{t} PSNR / Final_Score" for t in TYPES) + " |")
    print("| --- " * (3 + len(TYPES)) + "|")
    print("\n".join(rows))
    for name, seconds in timings.items():
        print(f"launch.py --restore, {name}: {seconds:.3f} s/image ({1 / seconds:.1f} images/s), 64x64 inputs")


if __name__ == "__main__":
    main()
