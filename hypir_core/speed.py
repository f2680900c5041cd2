"""How a run trains fast: gradient checkpointing (auto), torch.compile regions, and casts done once.

``plan(cfg, device_type, ...)`` resolves the ``gradient_checkpointing`` and ``compile`` keys (true,
false or auto) into a ``SpeedPlan`` whose reasons the run logs and ``--dry-run`` prints:

- ``gradient_checkpointing: auto``: off on the CPU; on a GPU, off when the run's estimated peak
  (``hypir_core.memory``) fits its share of the card's memory without it (``HYPIR_SWEEP_GPU_SHARE``,
  which a sweep trial sets to its ``resources.gpu``: 0.5 is half the card), on otherwise.
- ``compile: auto``: off for now, on CUDA as on the CPU: the compiled path has not yet run on a GPU
  (``compile: true`` forces it). On means torch.compile of regions: the UNet's down,
  mid and up blocks, the VAE encoder and decoder, the discriminator's frozen backbone and the LPIPS
  networks (``compile_regions``), plus AdamW's fused kernel on CUDA. The discriminator heads (spectral
  norm updates its buffers in place) and the glue between regions stay eager.

Exact on every run with mixed precision, whatever the keys say (``cast_once``): peft's LoRA layers
no longer cast their input to fp32 (autocast casts it straight back to bf16 for the matmul), and
on CUDA the frozen norm layers of UNet and backbone hold fp32 copies of their bf16 weights (CUDA
autocast runs group/layer norm in fp32 and would otherwise cast those weights on every call).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from hypir_core.memory import GIB, estimate_peak_gib, needed_gib

GPU_SHARE_ENV = "HYPIR_SWEEP_GPU_SHARE"
RECOMPILE_LIMIT = 64  # each region compiles per shape and grad mode: G step, D step, validation batches


@dataclass(frozen=True)
class SpeedPlan:
    """What a run does for speed, and why: ``checkpointing`` and ``compile`` with a sentence each."""

    checkpointing: bool
    checkpointing_reason: str
    compile: bool
    compile_reason: str
    fused_adamw: bool = False

    def lines(self) -> list[str]:
        """Two lines for logs: which was chosen and why."""
        return [f"gradient checkpointing {'on' if self.checkpointing else 'off'}: {self.checkpointing_reason}",
                f"torch.compile {'on' if self.compile else 'off'}: {self.compile_reason}"]


def gpu_share() -> float:
    """The fraction of its GPU this run may use: ``HYPIR_SWEEP_GPU_SHARE`` (a sweep trial's resources.gpu), else 1."""
    try:
        share = float(os.environ.get(GPU_SHARE_ENV, "1"))
    except ValueError:
        return 1.0
    return share if 0 < share <= 1 else 1.0


def device_memory(device: torch.device | str) -> tuple[float | None, str]:
    """(total memory in GiB, name) of a CUDA device; (None, "") for any other."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, ""
    props = torch.cuda.get_device_properties(device)
    return props.total_memory / GIB, props.name


def choose_checkpointing(cfg, device_type: str, total_gib: float | None = None, share: float = 1.0,
                         device_name: str = "the GPU") -> tuple[bool, str]:
    """(on, why) for ``cfg.gradient_checkpointing`` on this device and share of its memory."""
    setting = cfg.gradient_checkpointing
    if isinstance(setting, bool):
        return setting, f"gradient_checkpointing: {str(setting).lower()} in the config"
    if device_type != "cuda":
        return False, "auto: off on the CPU (memory is not what limits a CPU run)"
    need_off, need_on = needed_gib(estimate_peak_gib(cfg, False)), needed_gib(estimate_peak_gib(cfg, True))
    estimate = f"the run needs about {need_off:.0f} GiB without it and {need_on:.0f} GiB with it (estimated)"
    if total_gib is None:
        return False, (f"auto: {estimate}, so off on a GPU share with {need_off:.0f} GiB or more; the run decides "
                       "on its GPU")
    available = share * total_gib
    share_text = f"{share:g} of " if share < 1 else ""
    where = f"its {available:.0f} GiB ({share_text}{device_name}'s {total_gib:.0f} GiB)"
    if need_off <= available:
        return False, f"auto: {estimate}; without it the run fits {where}"
    if need_on > available:
        return True, (f"auto: {estimate}; it does not fit {where} even with it: expect running out of memory "
                      "(lower data_config.train.batch_size, or give the run a larger share of a GPU)")
    return True, f"auto: {estimate}; only with it does the run fit {where}"


def choose_compile(cfg, device_type: str) -> tuple[bool, str]:
    """(on, why) for ``cfg.compile`` on this device type."""
    if isinstance(cfg.compile, bool):
        return cfg.compile, f"compile: {str(cfg.compile).lower()} in the config"
    if device_type == "cuda":
        # Not yet run on a GPU (BENCHMARKS.md): a default nobody has measured does not go to every user's sweep.
        return False, ("auto: off on CUDA until a GPU benchmark shows it pays (bench/device_check.sh); "
                       "compile: true turns it on")
    return False, "auto: off on the CPU (plain eager: compiling takes longer than a CPU run gains)"


def plan(cfg, device: torch.device | str, share: float | None = None) -> SpeedPlan:
    """The speed settings of a run of ``cfg`` on ``device`` (share: of the GPU's memory; default gpu_share())."""
    device = torch.device(device)
    total, name = device_memory(device)
    checkpointing, why_checkpointing = choose_checkpointing(cfg, device.type, total,
                                                            gpu_share() if share is None else share, name)
    compiled, why_compile = choose_compile(cfg, device.type)
    return SpeedPlan(checkpointing, why_checkpointing, compiled, why_compile,
                     fused_adamw=compiled and device.type == "cuda")


def cast_once(unet: nn.Module, backbone: nn.Module | None, weight_dtype: torch.dtype, device: torch.device) -> None:
    """Casts that give the same numbers done once instead of per call (see the module docstring).

    Only for modules that always run under autocast (the trainer's UNet and discriminator backbone).
    """
    if weight_dtype == torch.float32:
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in unet.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False  # what peft.helpers.disable_input_dtype_casting sets
    if device.type == "cuda":  # CPU autocast runs norms in the input's dtype: there fp32 weights would not fit
        for model in (unet, backbone):
            for module in model.modules() if model is not None else ():
                if isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                    module.float()


def compile_regions(generator: nn.Module, backbone: nn.Module | None, lpips_metrics: list) -> list[nn.Module]:
    """torch.compile, in place, the regions named in the module docstring; return them.

    In place (``nn.Module.compile``), so parameter names, checkpoints and exported weights are unchanged.
    ``lpips_metrics``: pyiqa LPIPS metrics (None entries skipped); their ``net`` and VGG trunk are compiled.
    """
    import torch._dynamo

    torch._dynamo.reset()  # a process that trained before (a sweep reuses it) starts with empty caches
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch's name
    setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
    # A region that fails to compile (a missing compiler, an unsupported op on some card or torch) runs
    # eager, with torch's warning, instead of ending the run: compiling only ever changes the speed.
    config.suppress_errors = True
    unet, vae = generator.unet, generator.vae
    regions = [*unet.down_blocks, unet.mid_block, *unet.up_blocks, vae.encoder, vae.decoder]
    if backbone is not None:
        regions.append(backbone)
    for metric in lpips_metrics:
        if metric is not None:
            regions += [metric.net, metric.net.net]
    for region in regions:
        region.compile(dynamic=False)
    return regions
