"""Image-quality metrics and losses through pyiqa: PSNR-Y, SSIM-Y, LPIPS-VGG, and Final_Score.

pyiqa is imported only here. LPIPS needs two weight files that pyiqa and torchvision download on
first use (torchvision's VGG16 and LPIPS's linear heads). ``lpips_weights="random"`` plants seeded
random files in a cache folder instead, so the offline CPU demo and the tests run the very same
pyiqa loading code; its LPIPS numbers are then not comparable with published ones (said at start).
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch
from torch import nn

from hypir_core.cache import cache_dir
from hypir_core.errors import WeightsError
from hypir_core.files import atomic_write

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 file name
LPIPS_VGG_FILE = "LPIPS_v0.1_vgg-a78928a0.pth"  # pyiqa's file name for LPIPS v0.1 VGG heads
_VGG_FEATURE_CHANNELS = (64, 128, 256, 512, 512)
FINAL_SCORE = "val/Final_Score"  # final_score's logged name: what rounds, runs and trials are ranked by


def final_score(psnr: float, ssim: float, lpips: float) -> float:
    """The users' ranking score: PSNR + 10*SSIM - 5*LPIPS."""
    return psnr + 10.0 * ssim - 5.0 * lpips


def best_round(rounds: list[dict]) -> dict | None:
    """The validation round with the highest Final_Score (the earliest of equal ones), or None before the first.

    A round is a dict whose ``"metrics"`` hold ``FINAL_SCORE``, as a run's and a summary's rounds do.
    """
    return max(rounds, key=lambda r: r["metrics"][FINAL_SCORE]) if rounds else None


def plant_random_lpips_weights(hub_dir: str) -> str:
    """Write seeded random VGG16 + LPIPS head weights where torch.hub/pyiqa look for them; return hub_dir."""
    from torchvision.models import vgg16

    checkpoints = os.path.join(hub_dir, "checkpoints")
    vgg_path = os.path.join(checkpoints, VGG16_FILE)
    lpips_path = os.path.join(hub_dir, "pyiqa", LPIPS_VGG_FILE)
    if os.path.exists(vgg_path) and os.path.exists(lpips_path):
        return hub_dir
    os.makedirs(checkpoints, exist_ok=True)
    os.makedirs(os.path.dirname(lpips_path), exist_ok=True)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    state = vgg16().state_dict()
    torch.random.set_rng_state(generator_state)
    for key, value in state.items():
        if key.startswith("classifier."):
            # LPIPS never runs the classifier: store it as a broadcast view so the file stays small.
            state[key] = torch.zeros(1).expand(value.shape)
    _atomic_save(state, vgg_path)
    # Uniform non-negative heads: LPIPS becomes the plain average of normalised feature distances.
    heads = {f"lin{i}.model.1.weight": torch.full((1, ch, 1, 1), 1.0 / ch) for i, ch in enumerate(_VGG_FEATURE_CHANNELS)}
    _atomic_save(heads, lpips_path)
    return hub_dir


def _atomic_save(obj, path: str) -> None:
    with atomic_write(path) as tmp:  # trials sharing the cache may plant the same file at once
        torch.save(obj, tmp)


@contextlib.contextmanager
def _hub_dir(path: str | None):
    """Point torch.hub (torchvision's VGG) and pyiqa's cache at ``path`` while a metric is built."""
    if path is None:
        yield
        return
    import pyiqa.utils.download_util as download_util

    old_hub, old_pyiqa = torch.hub.get_dir(), download_util.DEFAULT_CACHE_DIR
    torch.hub.set_dir(path)
    download_util.DEFAULT_CACHE_DIR = os.path.join(path, "pyiqa")
    try:
        yield
    finally:
        torch.hub.set_dir(old_hub)
        download_util.DEFAULT_CACHE_DIR = old_pyiqa


def create_lpips(device, as_loss: bool, weights: str = "pretrained") -> nn.Module:
    """pyiqa LPIPS-VGG (metric or differentiable loss); inputs in [0, 1]."""
    import pyiqa

    hub = plant_random_lpips_weights(str(cache_dir() / "random-lpips-hub")) if weights == "random" else None
    try:
        with _hub_dir(hub), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(None):  # pyiqa prints a line per loaded file
                metric = pyiqa.create_metric("lpips-vgg", as_loss=as_loss, device=torch.device(device))
    except Exception as exc:  # download failures surface as URLError, HTTPError, OSError, ...
        raise WeightsError(
            f"Cannot load LPIPS-VGG weights ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); run once "
            f"with network access so torchvision's {VGG16_FILE} and pyiqa's {LPIPS_VGG_FILE} are cached under "
            f"{torch.hub.get_dir()}, or set lpips_weights: random for an offline demo."
        ) from exc
    # channels_last: oneDNN/cuDNN run VGG's convolutions ~30% faster, results equal to 1e-8.
    metric.net.to(memory_format=torch.channels_last)
    return metric.eval().requires_grad_(False)


def create_ssim_y(device, as_loss: bool) -> nn.Module:
    """pyiqa SSIM on the Y channel of YCbCr (BasicSR/MATLAB convention); inputs in [0, 1].

    As a loss: ``SSIMYLoss``, the same computation with its constant tensors made once.
    """
    import pyiqa

    if as_loss:
        return SSIMYLoss(device)
    return pyiqa.create_metric("ssim", as_loss=as_loss, device=torch.device(device),
                               test_y_channel=True, color_space="ycbcr")


class SSIMYLoss(nn.Module):
    """pyiqa's SSIM-Y as a loss (``create_metric("ssim", as_loss=True, test_y_channel=True, color_space="ycbcr")``).

    pyiqa makes its YCbCr matrix and Gaussian window as CPU tensors on every call and copies them to
    the GPU, each copy a host sync in the middle of a training step. This keeps them on the device and
    runs pyiqa's own ``ssim`` on the Y channel its ``preprocess_rgb`` computes, operation for operation:
    same values and gradients (tests/test_speed.py compares them with pyiqa's, bit for bit).
    """

    def __init__(self, device="cpu"):
        super().__init__()
        from pyiqa.matlab_utils import fspecial

        self.register_buffer("window", fspecial(11, 1.5, 1).to(device=device, dtype=torch.float64), persistent=False)
        self.register_buffer("rgb_to_ycbcr", torch.tensor([[65.481, -37.797, 112.0], [128.553, -74.203, -93.786],
                                                           [24.966, 112.0, -18.214]], device=device), persistent=False)
        self.register_buffer("ycbcr_bias", torch.tensor([16.0, 128.0, 128.0], device=device).view(1, 3, 1, 1),
                             persistent=False)

    def _y(self, x: torch.Tensor) -> torch.Tensor:
        # pyiqa's rgb2ycbcr, to_y_channel(x, 255) and preprocess_rgb's rounding (straight-through), then float64.
        ycbcr = torch.matmul(x.permute(0, 2, 3, 1), self.rgb_to_ycbcr.to(x)).permute(0, 3, 1, 2) + self.ycbcr_bias.to(x)
        y = (ycbcr / 255.0)[:, [0], :, :] * 255
        y = y - y.detach() + y.round()
        y = y - y.detach() + y.round()
        return y.to(torch.float64)

    def forward(self, restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-image SSIM-Y of images in [0, 1], differentiable."""
        from pyiqa.archs.ssim_arch import ssim

        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):  # as pyiqa runs it
            return ssim(self._y(restored), self._y(reference), win=self.window, data_range=255, downsample=False)


def create_psnr_y(device) -> nn.Module:
    """pyiqa PSNR on the Y channel of YCbCr; inputs in [0, 1]."""
    import pyiqa

    return pyiqa.create_metric("psnr", device=torch.device(device), test_y_channel=True, color_space="ycbcr")


class QualityMetrics(nn.Module):
    """PSNR-Y, SSIM-Y and LPIPS-VGG per image for batches in [0, 1], on the metrics' device."""

    def __init__(self, device="cpu", lpips_weights: str = "pretrained"):
        super().__init__()
        self.psnr = create_psnr_y(device)
        self.ssim = create_ssim_y(device, as_loss=False)
        self.lpips = create_lpips(device, as_loss=False, weights=lpips_weights)

    @torch.no_grad()
    def forward(self, restored: torch.Tensor, gt: torch.Tensor,
                lpips_reference: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per-image scores (1-D float64 tensors on CPU) for ``restored`` against ``gt``.

        ``lpips_reference`` (from ``lpips_reference(gt)``) skips recomputing the GT's VGG features.
        """
        restored, gt = restored.float().clamp(0, 1), gt.float().clamp(0, 1)
        if lpips_reference is None:
            lpips = self.lpips(restored, gt)
        else:
            lpips = self._lpips_against(restored, lpips_reference)
        return {
            "PSNR": self.psnr(restored, gt).flatten().double().cpu(),
            "SSIM": self.ssim(restored, gt).flatten().double().cpu(),
            "LPIPS": lpips.flatten().double().cpu(),
        }

    def _vgg_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        from pyiqa.archs.lpips_arch import normalize_tensor

        net = self.lpips.net  # pyiqa's LPIPS module: its own scaling, VGG slices and heads
        return [normalize_tensor(f) for f in net.net(net.scaling_layer(2 * images - 1))]

    @torch.no_grad()
    def lpips_reference(self, gt: torch.Tensor) -> list[torch.Tensor]:
        """Normalised VGG features of reference images in [0, 1], to score many rounds against them."""
        return self._vgg_features(gt.float().clamp(0, 1))

    def _lpips_against(self, restored: torch.Tensor, reference: list[torch.Tensor]) -> torch.Tensor:
        """pyiqa's LPIPS v0.1 (sum over layers of the spatial mean of lin(diff^2)), GT features given."""
        net = self.lpips.net
        layers = zip(net.lins, self._vgg_features(restored), reference)
        return sum(lin((ref - feat) ** 2).mean(dim=(2, 3)) for lin, feat, ref in layers)

    @staticmethod
    def reference_bytes(height: int, width: int) -> int:
        """Memory of one image's LPIPS reference features (VGG16 relu1_2..relu5_3, float32)."""
        return 4 * height * width * (64 + 128 // 4 + 256 // 16 + 512 // 64 + 512 // 256)
