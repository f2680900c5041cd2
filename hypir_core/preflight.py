"""Checks before training: data readable, model and metric weights available, without training anything."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypir_core.errors import HypirError

SD2_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_OPENCLIP_REPO = "laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup"


@dataclass
class Check:
    """One preflight check: what was checked, whether it passed, and the detail (or the fix)."""

    name: str
    ok: bool
    detail: str


def _hub_cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return isinstance(found, str) and os.path.exists(found)


def check_model(path: str) -> Check:
    """The SD2 model: a folder with the five subfolders, a cached hub id, or a built-in model."""
    from hypir_core.demo import resolve_path
    from hypir_core.models import RANDOM_SD2_BASE

    if path == RANDOM_SD2_BASE:
        return Check("SD2 model", True, "random weights with SD2.1-base shapes (benchmarks only)")
    try:
        local = resolve_path(path)
    except HypirError as exc:
        return Check("SD2 model", False, str(exc))
    if os.path.isdir(local):
        missing = [s for s in SD2_SUBFOLDERS if not os.path.isdir(os.path.join(local, s))]
        if missing:
            return Check("SD2 model", False, f"'{path}' lacks the subfolders {missing}; point base_model_path at a "
                                             "diffusers SD2 folder.")
        return Check("SD2 model", True, local)
    if os.path.isabs(path) or path.startswith("."):
        return Check("SD2 model", False, f"folder '{path}' does not exist; fix base_model_path.")
    if _hub_cached(path, "unet/config.json"):
        return Check("SD2 model", True, f"hub id {path} (in the local Hugging Face cache)")
    return Check("SD2 model", True, f"hub id {path}: not cached yet, downloaded on first use (needs network)")


def check_lpips(cfg) -> Check:
    """LPIPS-VGG weights (loss and metric): cached torchvision VGG16 and pyiqa LPIPS heads."""
    import torch

    from hypir_core.metrics import LPIPS_VGG_FILE, VGG16_FILE

    if cfg.lpips_weights == "random":
        return Check("LPIPS weights", True, "random (offline demo): LPIPS values are not comparable with papers")
    hub = torch.hub.get_dir()
    missing = [f for f, p in ((VGG16_FILE, os.path.join(hub, "checkpoints", VGG16_FILE)),
                              (LPIPS_VGG_FILE, os.path.join(hub, "pyiqa", LPIPS_VGG_FILE))) if not os.path.exists(p)]
    if missing:
        return Check("LPIPS weights", True, f"{', '.join(missing)} not cached under {hub}: downloaded on first use "
                                            "(needs network)")
    return Check("LPIPS weights", True, f"cached under {hub}")


def check_discriminator(cfg) -> Check:
    """The discriminator backbone's pretrained weights."""
    name = cfg.disc_backbone
    if name == "tiny":
        return Check("discriminator", True, "tiny random frozen backbone (CPU demo)")
    if name == "openclip_convnext_xxlarge":
        try:
            import open_clip  # noqa: F401
        except ImportError:
            return Check("discriminator", False, "open-clip-torch is not installed; pip install -e '.[openclip]'.")
        cached = _hub_cached(_OPENCLIP_REPO, "open_clip_pytorch_model.bin") or _hub_cached(
            _OPENCLIP_REPO, "open_clip_model.safetensors")
    else:
        import timm

        repo = timm.models.get_pretrained_cfg(name[len("timm_"):]).hf_hub_id
        cached = bool(repo) and (_hub_cached(repo, "model.safetensors") or _hub_cached(repo, "pytorch_model.bin"))
    where = "in the local Hugging Face cache" if cached else "not cached: downloaded on first use (needs network)"
    return Check("discriminator", True, f"{name}: {where}")


def check_data(cfg) -> list[Check]:
    """Training list/folders readable, the validation layout sound (names matched, sizes equal) and every
    validation image decodable (an HQ-only set is synthesised first, once)."""
    from hypir_core.config_data import has_validation
    from hypir_core.data import build_train_dataset, decode_val_set, scan_val_set

    checks = []
    hq_only = cfg.data_config.train.dataset.kind == "realesrgan"
    try:
        dataset = build_train_dataset(cfg.data_config.train, skip_bad_images=cfg.skip_bad_images)
        checks.append(Check("training data", True, f"{len(dataset)} {'HQ images' if hq_only else 'pairs'}"))
    except HypirError as exc:
        checks.append(Check("training data", False, str(exc)))
    if not has_validation(cfg.data_config.val):
        checks.append(Check("validation data", True, "none: the run reports no val/Final_Score and writes only its "
                                                     "final weights (a sweep needs data_config.val.val_dir or hq_dir)"))
        return checks
    try:
        pairs = scan_val_set(cfg.data_config.val)  # also checks LQ/GT sizes; synthesises an HQ-only set once
        decode_val_set(pairs)  # a truncated file is named here, not after the models have loaded
        types = sorted({p.degradation_type for p in pairs})
        where = f", synthesised once into {os.path.dirname(os.path.dirname(pairs[0].lq_path))}" \
            if cfg.data_config.val.hq_dir is not None else ""
        checks.append(Check("validation data", True, f"{len(pairs)} pairs over {', '.join(types)}{where}, all decoded"))
    except HypirError as exc:
        checks.append(Check("validation data", False, str(exc)))
    return checks


def check_todo(cfg) -> Check:
    """Values still "TODO" (upstream's config ships its paths so): each must be filled in before a run."""
    from hypir_core.config import config_to_dict

    def todo_keys(node, prefix=""):
        if isinstance(node, dict):
            return [key for k, v in node.items() for key in todo_keys(v, f"{prefix}{k}.")]
        return [prefix[:-1]] if isinstance(node, str) and node.strip().upper() == "TODO" else []

    keys = todo_keys(config_to_dict(cfg))
    if keys:
        return Check("config", False, f"still TODO: {', '.join(keys)}; fill them in (in the file, or as key=value "
                                      "overrides).")
    return Check("config", True, "no TODO values")


PREVIEW_FILE = "degradation_preview.png"


def preview_degradations(cfg, count: int = 4) -> tuple[str, int] | None:
    """For HQ-only data: write ``<output_dir>/degradation_preview.png``, rows of training target | degraded LQ for
    the first ``count`` images of the training order at the configured settings; returns (path, rows), or None
    for paired data. The pool is left out, so each row is one image's own pair."""
    import dataclasses
    from types import SimpleNamespace

    import numpy as np
    import torch
    from PIL import Image

    from hypir_core.data import build_train_dataset, train_batches
    from hypir_core.degradation.transform import RealESRGANBatchTransform

    train = cfg.data_config.train
    if train.dataset.kind != "realesrgan":
        return None
    dataset = build_train_dataset(train, skip_bad_images=True)
    order = SimpleNamespace(batch_size=min(count, len(dataset)), dataloader_num_workers=0)
    batch = next(train_batches(dataset, order, cfg.seed, SimpleNamespace(epoch=0, batches_in_epoch=0,
                                                                          skipped_images=0)))
    params = dataclasses.replace(train.batch_transform.params, queue_size=0)
    pairs = RealESRGANBatchTransform(params, cfg.seed, "cpu")(batch, step=1, slot=0)
    rows = torch.cat([pairs["GT"], pairs["LQ"]], dim=-1)  # each row: target | LQ, side by side
    grid = (torch.cat(list(rows), dim=-2).permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
    os.makedirs(cfg.output_dir, exist_ok=True)
    path = os.path.join(cfg.output_dir, PREVIEW_FILE)
    Image.fromarray(np.ascontiguousarray(grid)).save(path)
    return path, len(rows)


def check_speed(cfg, device: str | None = None, gpu_share: float | None = None) -> list[Check]:
    """Gradient checkpointing and torch.compile as a run of ``cfg`` chooses them on ``device`` (default: here).

    ``gpu_share``: the fraction of the GPU the run gets (a sweep's resources.gpu; default
    ``HYPIR_SWEEP_GPU_SHARE`` or 1).
    """
    import torch

    from hypir_core.speed import plan

    chosen = plan(cfg, device or ("cuda" if torch.cuda.is_available() else "cpu"), share=gpu_share)
    return [Check(name, True, ("on: " if on else "off: ") + why) for name, on, why in (
        ("gradient checkpointing", chosen.checkpointing, chosen.checkpointing_reason),
        ("torch.compile", chosen.compile, chosen.compile_reason))]


def preflight(cfg, device: str | None = None, gpu_share: float | None = None) -> list[Check]:
    """Every check a run needs before it starts, and the speed settings it will choose."""
    return [check_todo(cfg), check_model(cfg.base_model_path), *check_data(cfg), check_lpips(cfg),
            check_discriminator(cfg), *check_speed(cfg, device, gpu_share)]
