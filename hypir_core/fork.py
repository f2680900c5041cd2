"""Both directions with the users' HYPIR fork (GitHub Anduin9527/HYPIR): its checkpoints in, our configs out.

A fork checkpoint ``checkpoint-N/`` is accelerate's ``save_state`` plus two files of its own
(``HYPIR/trainer/sd2.py`` save hook, ``utils/ema.py``): ``state_dict.pth`` (the UNet's LoRA by
parameter name), ``ema_state_dict.pth`` (their EMA), and the prepared discriminator as
accelerate's model file (``model.safetensors``, or ``pytorch_model.bin`` from older accelerate:
the UNet's entry is popped by the hook, so the discriminator is model 0), whose trainable heads are
``decoder.*`` (our ``heads.*``). ``init_from_fork_checkpoint`` starts a run from the LoRA, the EMA
and the heads; optimizer moments and the step count start afresh (a new run's budget).

``fork_config`` writes a config the fork's trainer reads (OmegaConf, unknown keys silently
ignored), with one warning per key or behaviour it would drop or change.
"""

from __future__ import annotations

import copy
import glob
import logging
import os

import torch

from hypir_core.errors import WeightsError

logger = logging.getLogger("hypir_core")
LORA_FILE, EMA_FILE = "state_dict.pth", "ema_state_dict.pth"
HEADS_PREFIX = "decoder."  # the fork's ImageConvNextDiscriminator holds its heads as .decoder


def _module_of(name: str) -> str:
    return name.split(".lora_")[0]


def check_lora(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> None:
    """Refuse LoRA weights of another rank or module list than this run's, in one sentence."""
    ranks = {int(t.shape[0]) for k, t in state.items() if "lora_A" in k}
    ours = {int(t.shape[0]) for k, t in expected.items() if "lora_A" in k}
    if ranks and ours and ranks != ours:
        raise WeightsError(f"The LoRA in '{where}' has rank {sorted(ranks)[0]}, this config lora_rank "
                           f"{sorted(ours)[0]}; set lora_rank: {sorted(ranks)[0]} to continue from it.")
    theirs, mine = {_module_of(k) for k in state}, {_module_of(k) for k in expected}
    if theirs != mine:
        only = sorted(theirs - mine) or sorted(mine - theirs)
        side = "only the checkpoint has" if theirs - mine else "only this config has"
        raise WeightsError(f"The LoRA in '{where}' covers other UNet layers than this config's lora_modules "
                           f"({len(theirs ^ mine)} differ; {side} e.g. {only[0]}); set lora_modules to the list the "
                           f"fork trained with (its config's lora_modules).")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise WeightsError(f"LoRA weight '{name}' in '{where}' has shape {tuple(tensor.shape)}, this run's "
                               f"{tuple(expected[name].shape)}; check lora_rank and lora_modules match the fork's.")


def _discriminator_state(folder: str) -> tuple[str, dict[str, torch.Tensor]] | None:
    """(file, state) of the accelerate model file that holds the fork's discriminator, or None."""
    for path in sorted(glob.glob(os.path.join(folder, "model*.safetensors"))
                       + glob.glob(os.path.join(folder, "pytorch_model*.bin"))):
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if any(key.startswith(HEADS_PREFIX) for key in state):
            return path, state
    return None


def load_fork_checkpoint(folder: str, lora_params: list, lora_names: list[str], ema, discriminator,
                         disc_backbone: str) -> None:
    """Load a fork ``checkpoint-N/`` into a run: LoRA weights, EMA (or an EMA restarted from them), D heads."""
    lora_path = os.path.join(folder, LORA_FILE)
    if not os.path.isfile(lora_path):
        raise WeightsError(f"init_from_fork_checkpoint '{folder}' holds no {LORA_FILE}; point it at a fork "
                           f"checkpoint folder such as results/checkpoint-50000 (with state_dict.pth inside).")
    state = torch.load(lora_path, map_location="cpu", weights_only=True)
    params = dict(zip(lora_names, lora_params))
    check_lora(state, params, lora_path)
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
    ema_path = os.path.join(folder, EMA_FILE)
    if ema is not None:
        if os.path.isfile(ema_path):
            averaged = torch.load(ema_path, map_location="cpu", weights_only=True)
            check_lora(averaged, params, ema_path)
            ema.shadow = [averaged[name].to(device=p.device, dtype=p.dtype).clone() for name, p in params.items()]
        else:
            logger.warning("%s has no %s: the EMA restarts from its LoRA weights.", folder, EMA_FILE)
            ema.reset(lora_params)
    found = _discriminator_state(folder)
    if found is None:
        logger.warning("%s holds no discriminator (accelerate's model.safetensors with decoder.* keys): the "
                       "discriminator heads start fresh.", folder)
        return
    path, d_state = found
    heads = {"heads." + k[len(HEADS_PREFIX):]: v for k, v in d_state.items() if k.startswith(HEADS_PREFIX)}
    ours = discriminator.trainable_state_dict()
    if set(heads) != set(ours) or any(heads[k].shape != ours[k].shape for k in ours):
        raise WeightsError(f"The discriminator heads in '{path}' do not fit this run's disc_backbone "
                           f"'{disc_backbone}'; fork checkpoints train OpenCLIP ConvNeXt-XXLarge heads, "
                           f"so set disc_backbone: openclip_convnext_xxlarge.")
    discriminator.load_state_dict(heads, strict=False)
    logger.info("Started from fork checkpoint %s: LoRA, %s and discriminator heads", folder,
                "EMA" if ema is not None and os.path.isfile(ema_path) else "no EMA")


# ---- our config in the fork's format ----------------------------------------------------------------

# Keys the fork's trainer never reads, with what it does instead: a value other than that is a warning.
# (compile and loss_read_steps are dropped without one: they change speed and logging only.)
DROPPED = {
    "schedule": ([], "the fork has no schedule: it trains with the first segment's values for the whole run"),
    "disc_backbone": ("openclip_convnext_xxlarge", "the fork's discriminator backbone is always OpenCLIP "
                                                   "ConvNeXt-XXLarge"),
    "ema_warmup": (False, "the fork's EMA decay is constant from the initial LoRA"),
    "init_lora_from": (None, "the fork starts its LoRA from peft's initialisation"),
    "init_from_fork_checkpoint": (None, "the fork continues its own checkpoints with resume_from_checkpoint "
                                        "(optimizers and step too)"),
    "lpips_weights": ("pretrained", "the fork's LPIPS always loads the pretrained VGG weights"),
    "skip_bad_images": (False, "the fork stops at an unreadable image"),
    "swanlab_mode": (("auto", "cloud"), "the fork logs to SwanLab's cloud"),
    "compile": (None, ""),
    "loss_read_steps": (None, ""),
}
VAL_DROPPED = {
    "prompt": ("high quality, sharp details", "the fork validates with 'high quality, sharp details'"),
    "resize": (512, "the fork validates at 512x512"),
    "color_fix": ("none", "the fork validates without the colour fix (its inference applies it)"),
    "tile_size": (None, "the fork validates whole images"),
    "quantize": (None, ""),
    "tile_stride": (None, ""),
}


# Every top-level key the fork's trainer reads (its configs/sd2_finetune_5k_improved.yaml and trainer/base.py).
FORK_KEYS = ("output_dir", "data_config", "base_model_type", "base_model_path", "model_t", "coeff_t", "lora_rank",
             "lora_modules", "use_ema", "ema_decay", "resume_ema", "lambda_gan", "lambda_lpips", "lambda_l2",
             "lambda_l1", "lambda_ssim", "lr_G", "lr_D", "optimizer_type", "opt_kwargs", "mixed_precision", "seed",
             "max_train_steps", "gradient_accumulation_steps", "gradient_checkpointing", "max_grad_norm",
             "logging_dir", "report_to", "swanlab_project", "checkpointing_steps", "checkpoints_total_limit",
             "resume_from_checkpoint", "log_image_steps", "log_grad_steps", "log_grad_modules", "validation_steps")


def _drop(section: dict, table: dict, prefix: str, warnings: list[str]) -> None:
    for key, (fork_values, why) in table.items():
        if key not in section:
            continue
        value = section.pop(key)
        if why and value not in (fork_values if isinstance(fork_values, tuple) else (fork_values,)):
            warnings.append(f"{prefix}{key}: {value!r} dropped; {why}.")


def fork_config(config: dict) -> tuple[dict, list[str]]:
    """(the fork's config, warnings): ``config`` (ours, as config_to_dict gives it) in the fork's keys and values."""
    out, warnings = copy.deepcopy(config), []
    _drop(out, DROPPED, "", warnings)
    _drop(out.get("data_config", {}).get("val", {}), VAL_DROPPED, "data_config.val.", warnings)
    for key in [k for k in out if k not in FORK_KEYS]:  # a key added after this table: the fork ignores it too
        warnings.append(f"{key}: {out.pop(key)!r} dropped; the fork does not read it.")
    warnings.append("validation: the fork samples the VAE posterior (a noisy score) and validates at step 1 too.")
    if config.get("lambda_ssim", 0) > 0:
        warnings.append(f"lambda_ssim: {config['lambda_ssim']} has no effect in the fork: its SSIM term has no "
                        f"gradient (a pyiqa metric built without as_loss).")
    if out.get("optimizer_type") == "adamw":
        out["optimizer_type"] = "adam"  # the fork's name for AdamW; it refuses "adamw"
    if isinstance(out.get("gradient_checkpointing"), str):
        out["gradient_checkpointing"] = True
        warnings.append("gradient_checkpointing: 'auto' written as true (the fork takes true or false).")
    if out.get("resume_from_checkpoint") == "latest":
        out["resume_from_checkpoint"] = None
        warnings.append("resume_from_checkpoint: 'latest' written as null (the fork takes a checkpoint folder).")
    dataset = out.get("data_config", {}).get("train", {}).get("dataset", {})
    if dataset.get("target") != "HYPIR.dataset.paired.PairedParquetDataset":
        warnings.append(f"data_config.train.dataset.target: {dataset.get('target')!r} is ours only; the fork needs "
                        f"HYPIR.dataset.paired.PairedParquetDataset with a .parquet file_list.")
    if str(out.get("base_model_path", "")).startswith(("demo://", "random://")):
        warnings.append(f"base_model_path: {out['base_model_path']!r} is ours only; give the fork an SD2 folder or "
                        f"stabilityai/stable-diffusion-2-1-base.")
    return out, warnings
