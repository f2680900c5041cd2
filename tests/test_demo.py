"""The embedded demo: a tiny SD2-format model and an all-in-one dataset, built offline, reproducibly, once."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from hypir_core import demo
from hypir_core.data import build_train_dataset, read_image, scan_val_set
from hypir_core.errors import ConfigError

HYPIR_LORA_MODULES = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                      "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
MIN_VAE_PSNR_DB = 23.0  # measured 25.5 dB on the held-out val photos; margin for other CPUs' float rounding


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """The session's HYPIR_SWEEP_CACHE (tests/conftest.py sets one); a fresh temporary one otherwise."""
    if os.environ.get("HYPIR_SWEEP_CACHE"):
        yield Path(os.environ["HYPIR_SWEEP_CACHE"])
        return
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("hypir-cache")
        patch.setenv("HYPIR_SWEEP_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def demo_val(demo_cache) -> Path:
    return Path(demo.resolve_path("demo://aio/val"))


@pytest.fixture(scope="session")
def tiny_sd2(demo_cache) -> Path:
    return Path(demo.resolve_path("demo://tiny-sd2"))


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_paths_resolve_into_the_cache(demo_cache, demo_val):
    assert demo_val == demo_cache / demo.DEMO_VERSION / "aio" / "val"
    assert demo.resolve_path("demo://aio/train") == str(demo_cache / demo.DEMO_VERSION / "aio" / "train")
    assert demo.resolve_path("some/folder") == "some/folder"
    with pytest.raises(ConfigError, match="demo://tiny-sd2"):
        demo.resolve_path("demo://huge-sd3")


def test_concurrent_first_use_builds_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYPIR_SWEEP_CACHE", str(tmp_path))
    results = []
    threads = [threading.Thread(target=lambda: results.append(demo.resolve_path("demo://aio/train")))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert capsys.readouterr().out.count("Building the demo dataset") == 1
    assert [p.name for p in (tmp_path / demo.DEMO_VERSION).iterdir() if not p.name.endswith(".lock")] == ["aio"]


def test_demo_sets_have_all_types_with_matched_names(demo_val):
    pairs = scan_val_set(NS(val_dir="demo://aio/val", degradation_types=list(demo.DEGRADATION_TYPES),
                            num_samples_per_type=None))
    per_type = {t: [p for p in pairs if p.degradation_type == t] for t in demo.DEGRADATION_TYPES}
    assert {t: len(v) for t, v in per_type.items()} == {t: demo.PAIRS_PER_TYPE["val"] for t in per_type}
    assert all(Path(p.lq_path).name == Path(p.gt_path).name == p.name for p in pairs)
    params = NS(root="demo://aio/train", degradation_types=list(demo.DEGRADATION_TYPES), prompt="", out_size=64,
                crop_type="none", use_hflip=True, use_rot=True)
    train = build_train_dataset(NS(dataset=NS(kind="aio_folder", params=params)))
    assert len(train) == 5 * demo.PAIRS_PER_TYPE["train"] and train[0]["GT"].shape == (3, 64, 64)


def load_type(demo_val: Path, degradation_type: str) -> list[tuple[np.ndarray, np.ndarray]]:
    files = sorted((demo_val / degradation_type / "GT").glob("*.png"))
    return [(read_image(demo_val / degradation_type / "LQ" / f.name) / 255.0, read_image(f) / 255.0) for f in files]


def test_degradations_change_images_the_way_their_names_say(demo_val):
    def detail(x):  # mean absolute Laplacian of the luma: fine structure
        return np.abs(ndimage.laplace(x.mean(-1))).mean()

    checks = {
        "Blur": lambda lq, gt: detail(lq) < 0.6 * detail(gt),
        "Haze": lambda lq, gt: lq.mean(-1).std() < gt.mean(-1).std() and lq.mean() > gt.mean(),
        "Lowlight": lambda lq, gt: lq.mean() < 0.5 * gt.mean(),
        "Rain": lambda lq, gt: 0.01 < ((lq - gt).mean(-1) > 0.15).mean() < 0.4,  # thin bright streaks
        "Snow": lambda lq, gt: (lq.min(-1) > 0.8).mean() > (gt.min(-1) > 0.8).mean(),  # white flakes
    }
    for degradation_type, check in checks.items():
        for lq, gt in load_type(demo_val, degradation_type):
            assert np.abs(lq - gt).mean() > 0.01, degradation_type
            assert check(lq, gt), degradation_type


def test_dataset_build_is_reproducible(demo_val, tmp_path):
    demo.build_demo_dataset(tmp_path / "again")
    assert file_hashes(tmp_path / "again") == file_hashes(demo_val.parent)


@pytest.fixture(scope="module")
def quick_sd2(demo_val, tmp_path_factory) -> list[Path]:
    """Two builds of the tiny model with a 1-step VAE fit: every file but the VAE weights as in the real one."""
    folders = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "VAE_STEPS", 1)
        for i in range(2):
            folders.append(tmp_path_factory.mktemp(f"quick-sd2-{i}"))
            rng_before = torch.get_rng_state()
            demo.build_tiny_sd2(folders[-1], demo_val.parent)
            assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched
    return folders


def test_tiny_sd2_loads_like_sd21_base(quick_sd2):
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    path = str(quick_sd2[0])
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")

    ids = tokenizer(["a photo"], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    assert ids.shape == (1, 77) and ids[0, 0] == tokenizer.bos_token_id and len(set(ids[0, 1:].tolist())) > 2
    assert {k: scheduler.config[k] for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
                                             "prediction_type", "clip_sample", "steps_offset")} == {
        "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "prediction_type": "epsilon", "clip_sample": False, "steps_offset": 1}
    names = [name for name, _ in unet.named_modules()]
    for target in HYPIR_LORA_MODULES:  # peft matches a target by the last part(s) of the module name
        assert any(n == target or n.endswith("." + target) for n in names), target

    with torch.no_grad():
        image = torch.rand(1, 3, 64, 64) * 2 - 1
        latent = vae.encode(image).latent_dist.mode() * vae.config.scaling_factor
        text = text_encoder(ids)[0]
        eps = unet(latent, 200, encoder_hidden_states=text).sample
    assert latent.shape == (1, 4, 16, 16) and text.shape == (1, 77, 32)
    assert torch.count_nonzero(eps) == 0  # zero conv_out: the untrained one-step model keeps the content
    assert json.loads((quick_sd2[0] / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    pipeline = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    assert pipeline.vae_scale_factor == 4


def test_tiny_sd2_build_is_reproducible(quick_sd2):
    first, second = (file_hashes(folder) for folder in quick_sd2)
    del first["demo_info.json"], second["demo_info.json"]  # holds the build time
    assert first == second and any(name.startswith("vae/") for name in first)


@pytest.mark.slow
def test_demo_model_resolves_and_its_vae_reconstructs_held_out_photos(demo_cache, tiny_sd2, demo_val):
    from diffusers import AutoencoderKL

    assert tiny_sd2 == demo_cache / demo.DEMO_VERSION / "tiny-sd2"
    assert sorted(p.name for p in tiny_sd2.iterdir()) == ["demo_info.json", "model_index.json", "scheduler",
                                                          "text_encoder", "tokenizer", "unet", "vae"]
    vae = AutoencoderKL.from_pretrained(str(tiny_sd2), subfolder="vae")
    images = [np.asarray(Image.open(f)) for f in sorted(demo_val.glob("*/GT/*.png"))]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    psnr = demo.vae_psnr(vae, batch)
    info = json.loads((tiny_sd2 / "demo_info.json").read_text())
    assert psnr > MIN_VAE_PSNR_DB and abs(psnr - info["vae_val_psnr_db"]) < 0.05
    assert 0.3 < vae.config.scaling_factor < 3  # brings the training latents to about unit variance, as in SD
    with torch.no_grad():
        posterior = vae.encode(batch).latent_dist
    # Near-deterministic posterior, as SD's: a training sample (mode + std * noise) is close to the mode.
    assert posterior.std.median() < 0.05 and (posterior.std > 0.2).float().mean() < 0.01
