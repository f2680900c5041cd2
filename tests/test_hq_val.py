"""HQ-only validation (a set synthesised once with a fixed seed) and the dry run's degradation preview."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace as NS

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from hypir_core import hq_val
from hypir_core.config_degradation import ValDegradation
from hypir_core.data import check_val_sizes, scan_val_set
from hypir_core.errors import DataError


@pytest.fixture
def hq_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPIR_SWEEP_CACHE", str(tmp_path / "cache"))  # only the synthesised sets are built there
    folder = tmp_path / "hq"
    folder.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def val_cfg(folder, **changes):
    return NS(**{"hq_dir": str(folder), "degradation": ValDegradation(stage2_scale=2), "degradation_seed": 0,
                 "num_samples_per_type": None, "resize": 32, **changes})


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_synthesised_set_is_built_once_into_the_cache_in_the_aio_layout(hq_folder, monkeypatch):
    pairs = scan_val_set(val_cfg(hq_folder))
    assert [p.name for p in pairs] == ["00000_0.png", "00001_1.png", "00002_2.png"]
    assert {p.degradation_type for p in pairs} == {"RealESRGAN"}
    check_val_sizes(pairs)  # LQ resized back to the GT's size
    assert all(read(p.gt_path).shape == (32, 32, 3) for p in pairs)  # at data_config.val.resize
    assert all(not np.array_equal(read(p.lq_path), read(p.gt_path)) for p in pairs)
    monkeypatch.setattr(hq_val, "_build", lambda *args: pytest.fail("a cached set was built again"))
    assert scan_val_set(val_cfg(hq_folder)) == pairs


def test_same_settings_and_seed_give_the_same_lq_anywhere_and_others_do_not(hq_folder, tmp_path, monkeypatch):
    first = [read(p.lq_path) for p in scan_val_set(val_cfg(hq_folder))]
    monkeypatch.setenv("HYPIR_SWEEP_CACHE", str(tmp_path / "another-cache"))
    again = [read(p.lq_path) for p in scan_val_set(val_cfg(hq_folder))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # rebuilt from scratch, bit for bit
    other_seed = scan_val_set(val_cfg(hq_folder, degradation_seed=1))
    assert not np.array_equal(read(other_seed[0].lq_path), first[0])
    noisier = scan_val_set(val_cfg(hq_folder, degradation=ValDegradation(stage2_scale=2, gaussian_noise_prob=1,
                                                                       noise_range=[40, 50])))
    assert noisier[0].lq_path != other_seed[0].lq_path and not np.array_equal(read(noisier[0].lq_path), first[0])


def test_first_n_images_and_a_new_image_makes_a_new_set(hq_folder):
    assert len(scan_val_set(val_cfg(hq_folder, num_samples_per_type=2))) == 2
    before = scan_val_set(val_cfg(hq_folder))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(hq_folder / "3.png")
    after = scan_val_set(val_cfg(hq_folder))
    assert len(after) == 4 and after[0].lq_path != before[0].lq_path


def test_validation_pairs_are_resized_back_even_when_training_is_not(hq_folder):
    pairs = scan_val_set(val_cfg(hq_folder, degradation=replace(ValDegradation(stage2_scale=2), resize_back=False)))
    check_val_sizes(pairs)


def test_missing_or_empty_hq_folder_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match="does not exist; fix the path"):
        scan_val_set(val_cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        scan_val_set(val_cfg(tmp_path / "empty"))


def test_dry_run_writes_the_degradation_preview_and_says_where(tmp_path):
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--single", str(ROOT / "configs" /
                          "tiny_realesrgan.yaml"), "--dry-run", f"output_dir={out}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    preview = out / "degradation_preview.png"
    assert str(preview) in " ".join(run.stdout.split())
    pixels = read(preview)
    assert pixels.shape == (4 * 64, 2 * 64, 3)  # 4 rows of target | LQ at out_size 64
    assert not np.array_equal(pixels[:, :64], pixels[:, 64:])
    assert "40 pairs over RealESRGAN, synthesised once" in run.stdout and "Ready to train" in run.stdout


def test_dry_run_of_upstreams_config_names_its_todo_values(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--single", str(ROOT / "configs" /
                          "sd2_train_upstream.yaml"), "--dry-run",
                          "data_config.train.dataset.params.file_meta.file_list=hq.txt"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    text = re.sub(r"[\s│]", "", run.stdout)  # the table wraps long keys over its rows
    assert run.returncode == 2 and "stillTODO:" in text
    assert "file_meta.image_path_prefix" in text and "file_meta.prompt_key,output_dir;" in text
