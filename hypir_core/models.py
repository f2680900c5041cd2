"""SD2 components, LoRA on the UNet, and HYPIR's one-step generator.

Everything loads through diffusers/transformers ``from_pretrained`` (a local SD2-format folder, a hub
id, or the embedded ``demo://tiny-sd2``). ``random://sd2-base`` builds SD2.1-base shapes with random
weights, for measuring speed and memory without the checkpoint; it is never chosen silently.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hypir_core.errors import WeightsError

RANDOM_SD2_BASE = "random://sd2-base"

# SD2.1-base shapes (stabilityai/stable-diffusion-2-1-base), for random-weight speed/memory benchmarks.
_SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
)
_SD2_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.18215,
)
_SD2_BASE_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)
_SD2_SCHEDULER = dict(
    num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
    prediction_type="epsilon", clip_sample=False, steps_offset=1,
)


@dataclass
class SD2Components:
    """The five parts of an SD2 model folder, loaded and frozen."""

    tokenizer: object
    text_encoder: nn.Module
    vae: nn.Module
    unet: nn.Module
    scheduler: object


def load_sd2(base_model_path: str, weight_dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu") -> SD2Components:
    """Load tokenizer, text encoder, VAE, UNet and DDPM scheduler of an SD2 model, all frozen."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from hypir_core.demo import resolve_path
    from hypir_core.quiet import hide_weight_loading_bars

    hide_weight_loading_bars()  # transformers draws one per model loaded: noise in every trial's log
    if base_model_path == RANDOM_SD2_BASE:
        parts = _random_sd2_base()
    else:
        path = resolve_path(base_model_path)
        try:
            parts = SD2Components(
                tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
                text_encoder=CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=weight_dtype),
                vae=AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=weight_dtype),
                unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=weight_dtype),
                scheduler=DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
            )
        except (OSError, ValueError) as exc:
            where = "folder" if os.path.isdir(path) else "hub id"
            raise WeightsError(
                f"Cannot load the SD2 model from {where} '{base_model_path}' ({str(exc).splitlines()[0]}); "
                "set base_model_path to a local folder with unet/ vae/ text_encoder/ tokenizer/ scheduler/ "
                "subfolders, or download the hub model once with network access."
            ) from exc
    for module in (parts.text_encoder, parts.vae, parts.unet):
        if base_model_path == RANDOM_SD2_BASE:
            module.to(dtype=weight_dtype)
        module.to(device=device).eval().requires_grad_(False)
    return parts


def _random_sd2_base() -> SD2Components:
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from hypir_core.demo import write_byte_tokenizer

    # The demo's byte-level tokenizer produces ids well inside SD2's 49408-token vocabulary.
    with tempfile.TemporaryDirectory() as folder:
        write_byte_tokenizer(Path(folder) / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    return SD2Components(
        tokenizer=tokenizer,
        text_encoder=CLIPTextModel(CLIPTextConfig(**_SD2_BASE_TEXT)),
        vae=AutoencoderKL(**_SD2_BASE_VAE),
        unet=UNet2DConditionModel(**_SD2_BASE_UNET),
        scheduler=DDPMScheduler(**_SD2_SCHEDULER),
    )


def check_timesteps(scheduler, model_t: int, coeff_t: int) -> None:
    """Refuse model_t / coeff_t outside the loaded scheduler's training timesteps."""
    total = scheduler.config.num_train_timesteps
    for key, value in (("model_t", model_t), ("coeff_t", coeff_t)):
        if not 0 <= value < total:
            raise WeightsError(
                f"{key}={value} is outside the scheduler's {total} training timesteps; use 0..{total - 1}."
            )


def add_lora(unet: nn.Module, lora_rank: int, lora_modules: list[str]) -> list[nn.Parameter]:
    """Attach HYPIR's LoRA (peft, gaussian init, alpha = rank) to the UNet; return its fp32 parameters."""
    from peft import LoraConfig

    config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian",
                        target_modules=list(lora_modules))
    try:
        unet.add_adapter(config)
    except ValueError as exc:
        raise WeightsError(
            f"lora_modules {list(lora_modules)} match no layer of this UNet ({exc}); "
            "use names such as to_q, to_k, to_v, conv1, conv_out."
        ) from exc
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        # LoRA stays fp32 under bf16/fp16 so small updates are not rounded away.
        p.data = p.data.float()
    return params


def lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """HYPIR-format weights: exactly the UNet's LoRA parameters, by their UNet names (HYPIR_sd2.pth)."""
    return {name: p.detach().float().cpu().clone() for name, p in unet.named_parameters() if p.requires_grad}


def load_lora_weights(unet: nn.Module, path: str) -> None:
    """Load HYPIR-format LoRA weights (such as HYPIR_sd2.pth) into a LoRA-adapted UNet, strictly."""
    if not os.path.isfile(path):
        raise WeightsError(f"init_lora_from file '{path}' does not exist; give the path of a HYPIR .pth file.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = {name for name, p in unet.named_parameters() if p.requires_grad}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise WeightsError(
            f"LoRA weights '{path}' do not fit this UNet ({len(missing)} missing, {len(unexpected)} unexpected "
            f"keys, e.g. {sorted(missing or unexpected)[0]}); check lora_rank and lora_modules match the file."
        )
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise WeightsError(
                    f"LoRA weight '{name}' in '{path}' has shape {tuple(tensor.shape)}, the UNet expects "
                    f"{tuple(params[name].shape)}; set lora_rank to the rank the file was trained with."
                )
            params[name].copy_(tensor)


class OneStepGenerator(nn.Module):
    """HYPIR's generator: VAE-encode LQ, one UNet pass at ``model_t``, x0 from eps at ``coeff_t``, decode.

    The arithmetic is HYPIR's ``forward_generator`` (trainer/sd2.py): only the UNet runs under
    ``unet_autocast`` (the trainer sets accelerate's, as accelerate wraps HYPIR's prepared UNet), its
    output is cast to float32, x0 is DDPM's ``pred_original_sample`` and the VAE decodes in its own dtype.
    """

    def __init__(self, parts: SD2Components, model_t: int, coeff_t: int):
        super().__init__()
        check_timesteps(parts.scheduler, model_t, coeff_t)
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.tokenizer, self.scheduler = parts.tokenizer, parts.scheduler
        self.model_t, self.coeff_t = model_t, coeff_t
        self.alpha_prod = parts.scheduler.alphas_cumprod[coeff_t]  # a CPU scalar tensor, as scheduler.step uses
        self.prediction_type = parts.scheduler.config.prediction_type
        self.scaling_factor = parts.vae.config.scaling_factor
        # Read once: diffusers' ``.dtype`` walks every submodule, and the forward needs it each call.
        self.unet_dtype, self.vae_dtype = parts.unet.dtype, parts.vae.dtype
        self.unet_autocast = contextlib.nullcontext

    def train(self, mode: bool = True):
        """Only the flag changes: the frozen SD2 parts stay in eval mode.

        Mode changes no math here, but diffusers' ResnetBlock2D picks other kernels in train mode
        (1e-6 apart on CPU), which made a run's steps depend on whether it had validated yet.
        """
        self.training = mode
        return self

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings (last hidden state), as SD2 conditions its UNet."""
        ids = self.tokenizer(prompts, max_length=self.tokenizer.model_max_length, padding="max_length",
                             truncation=True, return_tensors="pt").input_ids
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(ids.to(device))[0]

    def encode_lq(self, lq: torch.Tensor, sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent of an LQ image in [-1, 1]: a posterior sample for training, its mode for validation.

        With a CPU ``generator`` the sample is diffusers' ``latent_dist.sample(generator)`` (the noise drawn
        on the CPU in the latent's dtype), its noise copied to the GPU from pinned memory without a host sync.
        """
        dist = self.vae.encode(lq.to(self.vae_dtype)).latent_dist
        if not sample:
            z = dist.mode()
        elif generator is None or generator.device.type != "cpu":
            z = dist.sample(generator)
        else:
            noise = torch.randn(dist.mean.shape, generator=generator, dtype=dist.parameters.dtype)
            if dist.mean.device.type == "cuda":
                noise = noise.pin_memory().to(dist.mean.device, non_blocking=True)
            z = dist.mean + dist.std * noise
        return z * self.scaling_factor

    def pred_x0(self, model_output: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """DDPM's pred_original_sample at coeff_t: ``scheduler.step``'s formula, without its noise draw."""
        alpha_prod, beta_prod = self.alpha_prod, 1 - self.alpha_prod
        if self.prediction_type == "epsilon":
            return (z - beta_prod ** 0.5 * model_output) / alpha_prod ** 0.5
        if self.prediction_type == "v_prediction":
            return alpha_prod ** 0.5 * z - beta_prod ** 0.5 * model_output
        return model_output

    def denoise(self, z_lq: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        """The restored latent (scaled, float32): one UNet pass at model_t, x0 at coeff_t."""
        timesteps = torch.full((z_lq.shape[0],), self.model_t, dtype=torch.long, device=z_lq.device)
        dtype = self.unet_dtype
        with self.unet_autocast():
            eps = self.unet(z_lq.to(dtype), timesteps, encoder_hidden_states=text_embed.to(dtype)).sample
        return self.pred_x0(eps.float(), z_lq)

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (unclamped, float32) from a scaled latent, decoded in the VAE's own dtype."""
        return self.vae.decode(z0.to(self.vae_dtype) / self.scaling_factor).sample.float()

    def forward(self, z_lq: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        """Restored image in [-1, 1] (unclamped, float32) from the scaled LQ latent."""
        # Two methods so inference can run the UNet and the decoder each in its own tiles (hypir_core/restoration.py).
        return self.decode(self.denoise(z_lq, text_embed))
