"""The training step against the users' trainer (HYPIR, Anduin9527 fork), aspect by aspect; see PARITY.md.

Each test states the reference's behaviour and checks ours against it: from first principles (a
closed form, a re-derivation) or, where vision-aided-loss is installed, against the package's code.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ROOT

from hypir_core.config import load_config
from hypir_core.losses import GeneratorLoss
from hypir_core.models import OneStepGenerator, add_lora, load_sd2

TINY = ROOT / "configs" / "tiny.yaml"


# ---- generator forward, LoRA and precision (reference: trainer/sd2.py, base.py lines 568-603) ----

@pytest.fixture(scope="module")
def tiny_generator():
    cfg = load_config(TINY)
    parts = load_sd2(cfg.base_model_path)
    params = add_lora(parts.unet, cfg.lora_rank, cfg.lora_modules)
    return OneStepGenerator(parts, cfg.model_t, cfg.coeff_t), params, cfg


def test_x0_is_ddpm_schedulers_pred_original_sample(tiny_generator):
    generator, _, cfg = tiny_generator
    torch.manual_seed(0)
    eps, z = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    expected = generator.scheduler.step(eps, cfg.coeff_t, z).pred_original_sample
    assert torch.equal(generator.pred_x0(eps, z), expected)


def test_lora_is_peft_gaussian_alpha_equal_rank_in_fp32(tiny_generator):
    generator, params, cfg = tiny_generator
    config = generator.unet.peft_config["default"]
    assert (config.r, config.lora_alpha, config.init_lora_weights) == (cfg.lora_rank, cfg.lora_rank, "gaussian")
    assert set(config.target_modules) == set(cfg.lora_modules) and all(p.dtype == torch.float32 for p in params)


def test_only_the_unet_runs_under_autocast(tiny_generator, monkeypatch):
    generator, _, _ = tiny_generator
    seen = {}
    for name, module in (("unet", generator.unet), ("vae_decoder", generator.vae.decoder)):
        module.register_forward_pre_hook(
            lambda _m, _a, name=name: seen.__setitem__(name, torch.is_autocast_enabled("cpu")))
    monkeypatch.setattr(generator, "unet_autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    z = torch.randn(1, 4, 8, 8)
    out = generator(z, generator.encode_prompt([""]))
    assert seen == {"unet": True, "vae_decoder": False} and out.dtype == torch.float32


def test_lpips_loss_is_fp32_outside_autocast():
    loss_fn = GeneratorLoss({"lpips": 1.0}, lpips_weights="random")
    torch.manual_seed(0)
    pred, gt = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    plain = loss_fn(pred, gt)["lpips"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = loss_fn(pred, gt)["lpips"]
        bf16 = loss_fn.lpips(pred * 0.5 + 0.5, gt * 0.5 + 0.5).mean()  # what an autocast VGG would give
    assert torch.equal(plain, inside) and plain.dtype == torch.float32
    assert not math.isclose(plain.item(), bf16.item(), rel_tol=1e-6)
