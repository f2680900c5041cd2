"""launch.py --restore on a freshly trained tiny run: it scores what validation scored; bad input is one sentence."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT
from PIL import Image

from hypir_core.demo import resolve_path
from hypir_core.errors import HypirError
from hypir_core.restoration import RestoreSettings
from hypir_core.restore import model_from_source, restore_images

TINY = ROOT / "configs" / "tiny.yaml"


def launch(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=os.environ.copy(), timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step tiny run validating at steps 2 and 4; the warm-up EMA scores the trained weights, not the initial."""
    run = tmp_path_factory.mktemp("restore") / "run"
    result = launch("--single", TINY, f"output_dir={run}", "max_train_steps=4", "validation_steps=2",
                    "checkpointing_steps=4", "report_to=none", "log_image_steps=0", "log_grad_steps=0",
                    "ema_warmup=true", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    return run, json.loads((run / "summary.json").read_text())["rounds"]


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_restore_with_validations_settings_gives_the_last_rounds_metrics(trained, tmp_path):
    run, rounds = trained
    val_dir = resolve_path("demo://aio/val")
    out = tmp_path / "out"
    result = launch("--restore", run, val_dir, "--weights", run / "HYPIR_sd2_final.pth", "--output", out,
                    "--posterior", "mode", "--color-fix", "none", "--patch-size", "none", "--pad", "reflect",
                    "--gt", val_dir, "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "s/image" in result.stdout and "Lowlight" in result.stdout
    per_type = {row["type"]: row for row in read_csv(out / "metrics_per_type.csv")}
    last, first = rounds[-1]["metrics"], rounds[0]["metrics"]
    assert float(per_type["all"]["images"]) == 40 and len(read_csv(out / "metrics.csv")) == 40
    for name in ("PSNR", "SSIM", "LPIPS", "Final_Score"):
        assert float(per_type["all"][name]) == pytest.approx(last[f"val/{name}"], abs=1e-3)
    for kind in ("Blur", "Haze", "Lowlight", "Rain", "Snow"):
        for name in ("PSNR", "SSIM", "LPIPS"):
            assert float(per_type[kind][name]) == pytest.approx(last[f"val/{kind}/{name}"], abs=1e-3)
    # the trained weights, not the first round's: the rounds are further apart than the tolerance
    assert abs(float(per_type["all"]["Final_Score"]) - first["val/Final_Score"]) > 1e-2
    assert Image.open(out / "Haze" / "LQ" / sorted(os.listdir(out / "Haze" / "LQ"))[0]).size == (64, 64)
    assert not (out / "Haze" / "GT").exists(), "GT folders are not inputs"


def test_hypirs_deployed_pipeline_tiles_colour_fixes_and_saves_jpeg(trained, tmp_path):
    run, _ = trained
    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    lowlight = os.path.join(resolve_path("demo://aio/val"), "Lowlight", "LQ")
    shutil.copy(os.path.join(lowlight, sorted(os.listdir(lowlight))[0]), image)
    Image.open(image).resize((72, 56)).save(image)  # not a multiple of the latent cell, smaller than the patch
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "photo.txt").write_text("a cat\n")
    spec = model_from_source(str(run))
    settings = RestoreSettings(patch_size=64, stride=32)  # HYPIR's rules at the tiny model's scale
    jpg = restore_images(spec, str(image.parent), str(tmp_path / "jpg"), settings, txt_dir=str(tmp_path / "prompts"),
                         image_format="jpg", progress=False)
    saved = Image.open(jpg.outputs[str(image)])
    assert saved.format == "JPEG" and saved.size == (72, 56)
    record = json.loads((tmp_path / "jpg" / "restore.json").read_text())
    assert record["settings"]["color_fix"] == "wavelet" and record["settings"]["posterior"] == "sample"
    again = restore_images(spec, str(image), str(tmp_path / "png"), settings, prompt="a cat", progress=False)
    other_seed = restore_images(spec, str(image), str(tmp_path / "seed"), settings, prompt="a cat", seed=1,
                                progress=False)
    pixels = [np.asarray(Image.open(r.outputs[str(image)])) for r in (again, other_seed)]
    assert not np.array_equal(pixels[0], pixels[1]), "the posterior sample follows --seed"
    repeat = restore_images(spec, str(image), str(tmp_path / "png2"), settings, prompt="a cat", progress=False)
    assert np.array_equal(np.asarray(Image.open(repeat.outputs[str(image)])), pixels[0])


def test_a_best_config_and_a_gradio_config_name_their_weights(trained, tmp_path):
    run, _ = trained
    config = json.loads((run / "summary.json").read_text())["config"]
    best = tmp_path / "best_config.yaml"
    best.write_text(f"# best config of sweep 'x'\n# trial a (completed, 2 rounds): best val/Final_Score 1.0\n"
                    f"# HYPIR-format weights of that trial: {run / 'HYPIR_sd2_best.pth'}\n" + yaml.safe_dump(config))
    spec = model_from_source(str(best))
    assert spec.weights == str(run / "HYPIR_sd2_best.pth") and spec.lora_rank == 16
    gradio = tmp_path / "sd2_gradio.yaml"
    gradio.write_text(yaml.safe_dump({"base_model_type": "sd2", "base_model_path": "demo://tiny-sd2", "model_t": 150,
                                      "coeff_t": 100, "lora_rank": 16, "lora_modules": config["lora_modules"],
                                      "weight_path": str(run / "HYPIR_sd2_best.pth")}))
    spec = model_from_source(None, str(gradio))
    assert (spec.model_t, spec.coeff_t, spec.weights) == (150, 100, str(run / "HYPIR_sd2_best.pth"))


def test_bad_input_is_one_sentence_with_the_fix(trained, tmp_path):
    run, _ = trained
    val_dir = resolve_path("demo://aio/val")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(run / "summary.json", no_weights / "summary.json")
    other_rank = tmp_path / "rank8.yaml"
    other_rank.write_text(TINY.read_text().replace("lora_rank: 16", "lora_rank: 8"))
    no_gt = tmp_path / "flat"
    no_gt.mkdir()
    shutil.copy(os.path.join(val_dir, "Rain", "LQ", sorted(os.listdir(os.path.join(val_dir, "Rain", "LQ")))[0]),
                no_gt / "rain.png")
    cases = [
        ((run, empty), "holds no images"),
        ((no_weights, val_dir), "HYPIR_sd2_best.pth' does not exist; pass --weights"),
        ((val_dir, "--config", other_rank, "--weights", run / "HYPIR_sd2_best.pth"),
         "have LoRA rank 16 but .* says lora_rank 8; use the config the weights were trained with"),
        ((tmp_path / "missing", val_dir), "Restore source .* does not exist; pass analyze.py's best_config.yaml"),
        ((run, no_gt, "--gt", empty), "1 of 1 restored images have no GT image"),
    ]
    for args, words in cases:
        result = launch("--restore", *args, "--output", tmp_path / "out", "--patch-size", "none", "--no-progress")
        assert result.returncode == 2, result.stderr[-1000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-1000:]
        assert re.search(words, lines[0]), lines[0]
    with pytest.raises(HypirError, match="patch_size is 30; use a multiple of 4"):
        restore_images(model_from_source(str(run)), str(no_gt), str(tmp_path / "o"),
                       RestoreSettings(patch_size=30, stride=16), progress=False)
