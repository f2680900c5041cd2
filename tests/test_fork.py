"""Both directions with the users' fork: a fork-layout checkpoint-N/ starts a run; a config goes back in its format."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import ROOT, tiny_overrides
from safetensors.torch import save_file

from hypir_core.config import config_to_dict, load_config
from hypir_core.discriminator import Discriminator
from hypir_core.ema import LoraEMA
from hypir_core.errors import ConfigError, WeightsError
from hypir_core.fork import FORK_KEYS, fork_config, load_fork_checkpoint
from hypir_core.models import add_lora, load_sd2

TINY = ROOT / "configs" / "tiny.yaml"


def lora_of(rank: int, modules: list[str]):
    parts = load_sd2("demo://tiny-sd2")
    params = add_lora(parts.unet, rank, modules)
    names = [n for n, p in parts.unet.named_parameters() if p.requires_grad]
    return names, params


def write_fork_checkpoint(folder, names, params, disc: Discriminator):
    """What the fork's trainer leaves in checkpoint-N/: its two LoRA files and accelerate's saved state."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(1)
    lora = {n: torch.randn(p.shape, generator=generator) for n, p in zip(names, params)}
    ema = {n: torch.randn(p.shape, generator=generator) for n, p in zip(names, params)}
    torch.save(lora, folder / "state_dict.pth")
    torch.save(ema, folder / "ema_state_dict.pth")
    # accelerate saves the prepared D as model 0 (the save hook popped the UNet): backbone, heads and buffers.
    heads = {k.replace("heads.", "decoder.", 1): torch.randn(v.shape, generator=generator).contiguous()
             for k, v in disc.trainable_state_dict().items()}
    backbone = {"model.trunk.stem.0.weight": torch.randn(8, 3, 4, 4), "image_mean": torch.zeros(3),
                "image_std": torch.ones(3)}
    save_file({**backbone, **heads}, str(folder / "model.safetensors"))
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.bin")
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer_1.bin")
    return lora, ema, heads


@pytest.fixture(scope="module")
def fork_checkpoint(tmp_path_factory):
    cfg = load_config(TINY)
    names, params = lora_of(cfg.lora_rank, cfg.lora_modules)
    folder = tmp_path_factory.mktemp("fork") / "checkpoint-50000"
    return folder, *write_fork_checkpoint(folder, names, params, Discriminator("tiny", pretrained=False))


def test_a_run_starts_from_the_forks_lora_ema_and_discriminator_heads(fork_checkpoint, tmp_path):
    from hypir_core.trainer import _Run

    folder, lora, ema, heads = fork_checkpoint
    cfg = load_config(TINY, tiny_overrides(tmp_path / "run", init_from_fork_checkpoint=str(folder)))
    run = _Run(cfg, progress_bar=False)
    weights = dict(zip(run.lora_names, run.lora_params))
    assert set(weights) == set(lora) and all(torch.equal(weights[n], lora[n]) for n in lora)
    assert all(torch.equal(average, ema[n]) for n, average in zip(run.lora_names, run.ema.shadow))
    loaded = run.D.trainable_state_dict()
    assert all(torch.equal(loaded[k.replace("decoder.", "heads.", 1)], v) for k, v in heads.items())


@pytest.mark.parametrize("rank, modules, words", [
    (8, None, r"has rank 16, this config lora_rank 8; set lora_rank: 16"),
    (16, ["to_q", "to_k", "to_v"], r"covers other UNet layers than this config's lora_modules .*only the checkpoint "
                                   r"has e\.g\."),
])
def test_a_rank_or_module_mismatch_is_refused_in_one_sentence(fork_checkpoint, rank, modules, words):
    folder = fork_checkpoint[0]
    names, params = lora_of(rank, modules or load_config(TINY).lora_modules)
    with pytest.raises(WeightsError, match=words):
        load_fork_checkpoint(str(folder), params, names, LoraEMA(params, 0.999), Discriminator("tiny", False), "tiny")


def test_heads_of_another_backbone_and_a_folder_without_lora_are_refused(fork_checkpoint, tmp_path):
    folder = fork_checkpoint[0]
    names, params = lora_of(16, load_config(TINY).lora_modules)
    wider = Discriminator("tiny", pretrained=False, head_width=32)
    with pytest.raises(WeightsError, match="do not fit this run's disc_backbone 'tiny'.*openclip_convnext_xxlarge"):
        load_fork_checkpoint(str(folder), params, names, None, wider, "tiny")
    with pytest.raises(WeightsError, match="holds no state_dict.pth; point it at a fork checkpoint folder"):
        load_fork_checkpoint(str(tmp_path), params, names, None, wider, "tiny")
    with pytest.raises(ConfigError, match="sets both init_lora_from and init_from_fork_checkpoint"):
        load_config(TINY, [f"init_from_fork_checkpoint={folder}", "init_lora_from=x.pth"])


def test_the_fork_config_keeps_only_keys_the_fork_reads_and_warns_once_per_change(tmp_path):
    schedule = '[{"from_step": 100, "overrides": {"lambda_gan": 0.1}}]'
    cfg = load_config(TINY, [f"schedule={schedule}", "ema_warmup=true", "data_config.val.color_fix=wavelet"])
    config = config_to_dict(cfg)
    out, warnings = fork_config(config)
    assert set(out) <= set(FORK_KEYS) and out["optimizer_type"] == "adam"  # the fork refuses "adamw"
    assert out["lambda_l2"] == cfg.lambda_l2 and out["lora_rank"] == cfg.lora_rank and out["coeff_t"] == cfg.coeff_t
    assert yaml.safe_load(yaml.safe_dump(out)) == out
    said = {warning.split(":")[0] for warning in warnings}
    for key in ("schedule", "disc_backbone", "ema_warmup", "lpips_weights", "lambda_ssim", "data_config.val.color_fix",
                "data_config.train.dataset.target", "base_model_path", "validation"):
        assert key in said, key
    assert len(said) == len(warnings), "one warning per key"
    assert "compile" not in said and "loss_read_steps" not in said  # speed and logging only
    # the users' own config carries over without a word about its keys
    users, users_warnings = fork_config(config_to_dict(load_config(ROOT / "configs" / "sd2_finetune_5k.yaml")))
    assert {w.split(":")[0] for w in users_warnings} <= {"validation", "gradient_checkpointing"}
