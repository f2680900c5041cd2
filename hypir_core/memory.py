"""Peak GPU memory of a training run, estimated from its config: what ``gradient_checkpointing: auto`` decides on.

The model, for SD2.1-base (the only ``base_model_type``) at a training crop of ``out_size``::

    peak = frozen weights + LoRA training state + other + batch_size * (out_size / 512)**2 * activations(image)

- frozen weights: SD2.1-base's UNet, VAE and text encoder (1.29 G parameters) and the discriminator
  backbone, 2 bytes each under bf16/fp16, 4 under ``mixed_precision: "no"``;
- LoRA training state: 20 bytes per LoRA parameter (fp32 weight, gradient, AdamW's two moments, the
  EMA copy); the parameter count is ``lora_rank`` times the per-rank count of each module type in
  ``lora_modules``, counted on SD2.1-base's UNet (259.5 M at rank 256 with HYPIR's 13 types);
- other: LPIPS-VGG (loss and metric), the discriminator heads with their AdamW state: 0.3 GiB;
- activations per 512x512 image: the rest of a measured peak (``CALIBRATION``: bench/gpu_train.py on an
  H200, batch 4, LoRA 256, ConvNeXt-XXLarge discriminator, BENCHMARKS.md), one figure with gradient
  checkpointing and one without. They scale with batch and pixels; a smaller discriminator
  backbone needs less, so for those the estimate errs high.

A run fits a GPU share when ``MARGIN * peak + CONTEXT_GIB`` is at most the share of the card's memory
(the allocator reserves more than it hands out; the CUDA context and cuBLAS/cuDNN workspaces are not
in the peak). Re-calibrate from the bench's ``peak_memory_gib`` rows by editing ``CALIBRATION``.
"""

from __future__ import annotations

GIB = 2**30
SD2_FROZEN_PARAMS = (865.91 + 83.65 + 340.39) * 1e6  # UNet, VAE, text encoder of SD2.1-base
# Frozen discriminator backbones (timm's trunks; OpenCLIP adds its 3.1 M projection head).
BACKBONE_PARAMS = {"openclip_convnext_xxlarge": 846.5e6, "timm_convnext_tiny": 27.8e6,
                   "timm_convnext_small": 49.5e6, "timm_convnext_base": 87.6e6, "tiny": 0.03e6}
# LoRA parameters per unit of rank for each module type, on SD2.1-base's UNet (peft matches name suffixes).
LORA_PARAMS_PER_RANK = {"proj_in": 24960, "to_q": 49920, "to_k": 53824, "to_v": 53824, "to_out.0": 49920,
                        "ff.net.0.proj": 112320, "ff.net.2": 62400, "proj_out": 24960, "conv1": 288000,
                        "conv2": 201600, "conv": 54400, "conv_shortcut": 34560, "conv_out": 2884}
LORA_BYTES_PER_PARAM = 20
OTHER_GIB = 0.3
# Measured peaks (GiB): gradient checkpointing on / off, bench/gpu_train.py on an H200 (BENCHMARKS.md).
CALIBRATION = {"batch": 4, "size": 512, "lora_rank": 256, "disc_backbone": "openclip_convnext_xxlarge",
               "weight_bytes": 2, "peak_gib": {True: 35.4, False: 40.5}}
MARGIN, CONTEXT_GIB = 1.05, 1.5


def lora_params(lora_rank: int, lora_modules: list[str]) -> float:
    """LoRA parameters on SD2.1-base's UNet for this rank and these module types (unknown types count 0)."""
    return lora_rank * sum(LORA_PARAMS_PER_RANK.get(name, 0) for name in set(lora_modules))


def _fixed_gib(weight_bytes: int, disc_backbone: str, lora_rank: int, lora_modules: list[str]) -> float:
    frozen = (SD2_FROZEN_PARAMS + BACKBONE_PARAMS.get(disc_backbone, BACKBONE_PARAMS["openclip_convnext_xxlarge"]))
    return (frozen * weight_bytes + lora_params(lora_rank, lora_modules) * LORA_BYTES_PER_PARAM) / GIB + OTHER_GIB


def activation_gib_per_image(checkpointing: bool) -> float:
    """Activation memory of one 512x512 training image: the calibration peak less the fixed part."""
    c = CALIBRATION
    from hypir_core.config import DEFAULT_LORA_MODULES

    fixed = _fixed_gib(c["weight_bytes"], c["disc_backbone"], c["lora_rank"], DEFAULT_LORA_MODULES)
    return (c["peak_gib"][checkpointing] - fixed) / c["batch"] * (512 / c["size"]) ** 2


def estimate_peak_gib(cfg, checkpointing: bool) -> float:
    """Estimated peak GPU memory (GiB, as torch.cuda.max_memory_allocated counts it) of a training run."""
    weight_bytes = 4 if cfg.mixed_precision == "no" else 2
    train = cfg.data_config.train
    pixels = (train.dataset.params.out_size / 512) ** 2
    return (_fixed_gib(weight_bytes, cfg.disc_backbone, cfg.lora_rank, cfg.lora_modules)
            + train.batch_size * pixels * activation_gib_per_image(checkpointing))


def needed_gib(peak_gib: float) -> float:
    """GPU memory a run with this peak needs: the allocator's margin and the CUDA context added."""
    return MARGIN * peak_gib + CONTEXT_GIB
