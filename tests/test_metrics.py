"""Metrics users can put in a paper: pyiqa's PSNR-Y / SSIM-Y agree with an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate
from skimage import data, filters

from hypir_core.metrics import QualityMetrics, final_score


def y_channel(rgb_uint8: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma on the [16, 235] scale, as MATLAB's rgb2ycbcr (float64, 0..255)."""
    rgb = rgb_uint8.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((y_channel(a) / 255.0 - y_channel(b) / 255.0) ** 2)
    return 10 * np.log10(1.0 / mse)


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 SSIM: 11x11 Gaussian (sigma 1.5), 'valid' window, K1=0.01, K2=0.03, L=255.

    Luma is rounded to integers first, as MATLAB's rgb2ycbcr does on uint8 images.
    """
    x, y = np.round(y_channel(a)), np.round(y_channel(b))
    ax = np.arange(11) - 5
    g = np.exp(-(ax ** 2) / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(img):
        return correlate(img, window, mode="constant")[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x ** 2
    syy = filt(y * y) - mu_y ** 2
    sxy = filt(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def degrade(img: np.ndarray, sigma: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blurred = filters.gaussian(img, sigma=sigma, channel_axis=-1, preserve_range=True)
    return np.clip(np.round(blurred + rng.normal(0, noise, img.shape)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def metrics():
    return QualityMetrics("cpu", lpips_weights="random")


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.parametrize("photo,sigma,noise", [("astronaut", 1.0, 3.0), ("chelsea", 2.0, 1.0),
                                               ("coffee", 0.7, 6.0)])
def test_psnr_and_ssim_on_y_match_the_standard_formulas(metrics, photo, sigma, noise):
    gt = getattr(data, photo)()[:256, :256]
    restored = degrade(gt, sigma, noise, seed=len(photo))
    scores = metrics(to_tensor(restored), to_tensor(gt))
    assert float(scores["PSNR"][0]) == pytest.approx(psnr_y(restored, gt), abs=1e-4)
    assert float(scores["SSIM"][0]) == pytest.approx(ssim_y(restored, gt), abs=1e-4)


def test_batched_scores_equal_one_at_a_time(metrics):
    gts = [data.astronaut()[:128, :128], data.chelsea()[:128, :128], data.coffee()[:128, :128]]
    restored = [degrade(g, 1.5, 4.0, seed=i) for i, g in enumerate(gts)]
    batch = metrics(torch.cat([to_tensor(r) for r in restored]), torch.cat([to_tensor(g) for g in gts]))
    for i, (r, g) in enumerate(zip(restored, gts)):
        single = metrics(to_tensor(r), to_tensor(g))
        for name in ("PSNR", "SSIM", "LPIPS"):
            assert float(batch[name][i]) == pytest.approx(float(single[name][0]), abs=1e-6)


def test_final_score_is_the_users_formula():
    assert final_score(30.0, 0.9, 0.2) == pytest.approx(30.0 + 9.0 - 1.0)


def test_lpips_against_cached_reference_features_equals_pyiqa(metrics):
    gts = [data.astronaut()[:96, :96], data.coffee()[:96, :96]]
    restored = torch.cat([to_tensor(degrade(g, 1.2, 5.0, seed=i)) for i, g in enumerate(gts)])
    gt = torch.cat([to_tensor(g) for g in gts])
    direct = metrics(restored, gt)
    cached = metrics(restored, gt, lpips_reference=metrics.lpips_reference(gt))
    assert torch.allclose(cached["LPIPS"], direct["LPIPS"], rtol=1e-5, atol=1e-7)
    assert float(direct["LPIPS"].min()) > 0
