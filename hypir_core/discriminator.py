"""HYPIR's discriminator: a frozen pretrained image backbone with trainable multi-level heads.

Backbones by name: ``openclip_convnext_xxlarge`` (HYPIR's: OpenCLIP ConvNeXt-XXLarge,
laion2b_s34b_b82k_augreg_soup), ``timm_convnext_{tiny,small,base}`` (timm ImageNet weights), and
``tiny`` (a small random frozen CNN, for the embedded CPU default only). The heads read three
intermediate feature maps (ConvNeXt stages 0..2) plus the pooled embedding; each level gives
logits, and the loss is the multi-level BCE with a smoothed real target of 0.8. Heads and loss are
vision-aided GAN's (``vision_aided_loss``: BlurPool, spectral norm, ``multilevel_loss(alpha=0.8)``)
as HYPIR's ``model/D.py`` assembles them, re-written here because that package does not import
on current setuptools; tests/test_parity.py checks them against a re-derivation and the package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from hypir_core.errors import WeightsError

BACKBONES = ("openclip_convnext_xxlarge", "timm_convnext_tiny", "timm_convnext_small", "timm_convnext_base", "tiny")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _ConvNextFeatures(nn.Module):
    """Stage outputs 0..2 and the pooled embedding of a timm ConvNeXt trunk (optionally OpenCLIP's head)."""

    def __init__(self, trunk: nn.Module, pool: nn.Module | None, pooled_dim: int):
        super().__init__()
        self.trunk, self.pool = trunk, pool
        self.channels = [info["num_chs"] for info in trunk.feature_info[:3]]
        self.pooled_dim = pooled_dim

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = self.trunk.stem(x)
        for index, stage in enumerate(self.trunk.stages):
            x = stage(x)
            if index < 3:
                feats.append(x)
        x = self.trunk.norm_pre(x)
        if self.pool is None:
            pooled = self.trunk.forward_head(x, pre_logits=True)
        else:
            pooled = self.pool(self.trunk.forward_head(x))
        return feats + [pooled]


class _TinyBackbone(nn.Module):
    """Small frozen random CNN standing in for a pretrained backbone in the CPU demo.

    Its three feature maps have ConvNeXt's strides (4, 8, 16: a patchify stem, then stride-2
    stages), so the heads see the same geometry as on HYPIR's backbone.
    """

    def __init__(self, widths=(16, 32, 64)):
        super().__init__()
        layers, in_ch = [], 3
        for index, width in enumerate(widths):
            down = nn.Conv2d(in_ch, width, 4, stride=4) if index == 0 else nn.Conv2d(in_ch, width, 2, stride=2)
            layers.append(nn.Sequential(down, nn.GELU(), nn.Conv2d(width, width, 3, padding=1), nn.GELU()))
            in_ch = width
        self.stages = nn.ModuleList(layers)
        self.channels, self.pooled_dim = list(widths), widths[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats + [x.mean(dim=(2, 3))]


def build_backbone(name: str, pretrained: bool = True) -> tuple[nn.Module, tuple, tuple]:
    """Return (feature backbone, input mean, input std) for a backbone name."""
    if name == "tiny":
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)  # the same frozen features whatever the run's seed
        backbone = _TinyBackbone()
        torch.random.set_rng_state(generator_state)
        return backbone, _IMAGENET_MEAN, _IMAGENET_STD
    if name.startswith("timm_"):
        import timm

        try:
            trunk = timm.create_model(name[len("timm_"):], pretrained=pretrained, num_classes=0)
        except Exception as exc:  # timm raises hub/URL errors of many types when offline
            raise WeightsError(
                f"Cannot load pretrained weights for disc_backbone '{name}' ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}); run once with network access to fill the Hugging Face cache, "
                "or choose another disc_backbone."
            ) from exc
        return _ConvNextFeatures(trunk, None, trunk.num_features), _IMAGENET_MEAN, _IMAGENET_STD
    if name == "openclip_convnext_xxlarge":
        try:
            import open_clip
        except ImportError as exc:
            raise WeightsError(
                "disc_backbone 'openclip_convnext_xxlarge' needs open-clip-torch; "
                "install it with pip install -e '.[openclip]'."
            ) from exc
        try:
            model = open_clip.create_model(
                "convnext_xxlarge", pretrained="laion2b_s34b_b82k_augreg_soup" if pretrained else None)
        except Exception as exc:
            raise WeightsError(
                f"Cannot load OpenCLIP ConvNeXt-XXLarge weights ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}); run once with network access to fill the Hugging Face cache, "
                "or choose disc_backbone timm_convnext_base."
            ) from exc
        visual = model.visual
        return _ConvNextFeatures(visual.trunk, visual.head, model.embed_dim if hasattr(model, "embed_dim")
                                 else visual.head.proj.out_features), _CLIP_MEAN, _CLIP_STD
    raise WeightsError(f"Unknown disc_backbone '{name}'; use one of {', '.join(BACKBONES)}.")


class BlurPool(nn.Module):
    """Vision-aided GAN's BlurPool (filt_size 4, zero padding): a per-channel [1, 3, 3, 1]^2 / 64 blur.

    Padding is 1 + ``pad_off`` on each side, so with stride 1 a map of size L becomes L - 1 (pad_off 0)
    or L + 1 (pad_off 1). The filter is a buffer named ``filt``, as in ``vision_aided_loss.blurpool``.
    """

    def __init__(self, channels: int, stride: int = 1, pad_off: int = 0):
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        filt = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))
        self.stride, self.pad = stride, 1 + pad_off

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, [self.pad] * 4), self.filt.to(x.dtype), stride=self.stride, groups=x.shape[1])


class MultiLevelHeads(nn.Module):
    """HYPIR's trainable heads (``MultiLevelDConv(level=4, down=2)`` in its ``model/D.py``).

    Per feature map: BlurPool, spectral-norm 3x3 conv with stride 2 and no padding, LeakyReLU(0.2),
    BlurPool, spectral-norm 1x1 conv with stride 2: a map of stride s gives logits of stride 4s
    (512 input, ConvNeXt stages 0..2: 32, 16 and 8 logits a side). The pooled embedding gets a
    spectral-norm Linear, LeakyReLU and a Linear to one logit. Module names are the reference's
    (``decoder.<level>.<layer>``, ``out``), so its heads' state dict loads here and back.
    """

    def __init__(self, channels: list[int], pooled_dim: int, width: int):
        super().__init__()
        act = nn.LeakyReLU(0.2, inplace=True)
        self.decoder = nn.ModuleList(
            nn.Sequential(BlurPool(ch, pad_off=1), spectral_norm(nn.Conv2d(ch, width, 3, stride=2, padding=0)), act,
                          BlurPool(width), spectral_norm(nn.Conv2d(width, 1, 1, stride=2)))
            for ch in channels)
        self.decoder.append(nn.Sequential(spectral_norm(nn.Linear(pooled_dim, width)), act))
        self.out = spectral_norm(nn.Linear(width, 1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = [head(f.float()).squeeze(1) for head, f in zip(self.decoder[:-1], feats[:-1])]
        return maps + [self.out(self.decoder[-1](feats[-1].float()))]


class Discriminator(nn.Module):
    """Frozen backbone + trainable heads; ``loss(x, real)`` is the multi-level BCE on images in [-1, 1]."""

    def __init__(self, backbone: str = "openclip_convnext_xxlarge", pretrained: bool = True,
                 head_width: int | None = None, real_target: float = 0.8):
        super().__init__()
        self.backbone, mean, std = build_backbone(backbone, pretrained)
        self.backbone.eval().requires_grad_(False)
        width = head_width or (512 if backbone == "openclip_convnext_xxlarge" else 64 if backbone == "tiny" else 256)
        self.heads = MultiLevelHeads(self.backbone.channels, self.backbone.pooled_dim, width)
        self.real_target = real_target
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        """Only the heads switch mode: the backbone stays a frozen feature extractor."""
        self.heads.train(mode)
        return self

    def logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-level logits for images in [-1, 1]."""
        x = ((x * 0.5 + 0.5) - self.mean) / self.std
        return self.heads(self.backbone(x))

    def loss(self, x: torch.Tensor, real: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Multi-level BCE towards 'real' (the smoothed target, 0.8) or 'fake' (0); also the logits.

        As vision-aided GAN's ``multilevel_loss`` followed by HYPIR's ``.mean()``: each level's BCE is
        averaged per image, the levels are summed, and the sum is averaged over the batch.
        """
        logits = self.logits(x)
        target = self.real_target if real else 0.0
        per_image = 0
        for level in logits:
            level = level.float()
            bce = F.binary_cross_entropy_with_logits(level, torch.full_like(level, target), reduction="none")
            per_image = per_image + (bce.mean(dim=(1, 2)).reshape(-1, 1) if bce.dim() > 2 else bce)
        return per_image.mean(), logits

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The heads' weights: all that training changes (the backbone reloads from its source)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("heads.")}
