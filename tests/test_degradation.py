"""Real-ESRGAN's degradation model (hypir_core.degradation): kernels, noise, resize, JPEG, the pipeline, the pool."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from hypir_core.config_degradation import RealESRGANTransformParams, ValDegradation
from hypir_core.degradation import Draws, PairPool, RealESRGANBatchTransform, degrade, kernels, noise, ops
from hypir_core.hq_data import draw_kernels


def second_moments(kernel: np.ndarray) -> np.ndarray:
    """The kernel's covariance [[xx, xy], [xy, yy]] about its centre tap (x = column, y = row)."""
    offsets = np.arange(kernel.shape[0]) - kernel.shape[0] // 2
    x, y = np.meshgrid(offsets, offsets)
    k = kernel.astype(np.float64)
    return np.array([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])


def photo(size: int = 96) -> torch.Tensor:
    """A (1, 3, size, size) crop of scikit-image's astronaut in [0, 1]."""
    import skimage.data

    pixels = skimage.data.astronaut()[40:40 + 2 * size:2, 160:160 + 2 * size:2]
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float()[None] / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


# ---- kernels ----

FAMILIES = {
    "iso": lambda: kernels.gaussian_kernel(21, 2.0),
    "aniso": lambda: kernels.gaussian_kernel(21, 3.0, 1.0, 0.7),
    "generalized_iso": lambda: kernels.generalized_gaussian_kernel(21, 2.0, beta=0.6),
    "generalized_aniso": lambda: kernels.generalized_gaussian_kernel(21, 2.5, 1.2, -1.0, beta=3.0),
    "plateau_iso": lambda: kernels.plateau_kernel(21, 2.0, beta=1.5),
    "plateau_aniso": lambda: kernels.plateau_kernel(21, 2.5, 1.0, 2.0, beta=1.2),
    "sinc": lambda: kernels.sinc_kernel(21, math.pi / 2),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_family_is_normalised_odd_and_centred(family):
    kernel = FAMILIES[family]()
    assert kernel.shape == (21, 21) and kernel.dtype == np.float32
    assert abs(float(kernel.sum(dtype=np.float64)) - 1) < 1e-5  # blurring keeps the image's brightness
    assert kernel.argmax() == 21 * 10 + 10  # its peak on the centre tap: blurring does not shift the image
    assert np.allclose(kernel, kernel[::-1, ::-1], atol=1e-7)  # point-symmetric, as every family is


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_isotropic_gaussian_has_variance_sigma_squared(sigma):
    # Sampled at integer taps, a Gaussian's variance differs from sigma^2 by < 1e-6 for sigma >= 1, and 31 taps
    # cut off < 1e-5 of it at sigma 3: 1e-3 is the discretisation's margin, not float noise.
    covariance = second_moments(kernels.gaussian_kernel(31, sigma))
    assert covariance[0, 0] == pytest.approx(sigma**2, rel=1e-3)
    assert covariance[1, 1] == pytest.approx(sigma**2, rel=1e-3)
    assert abs(covariance[0, 1]) < 1e-6


def test_anisotropic_gaussian_has_the_rotated_covariance():
    sigma_x, sigma_y, theta = 3.0, 1.0, math.pi / 6
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    expected = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    assert np.allclose(second_moments(kernels.gaussian_kernel(31, sigma_x, sigma_y, theta)), expected, rtol=1e-3)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_generalized_gaussian_has_the_variance_of_its_shape(beta):
    # exp(-r^(2 beta) / 2) in 2-D: per-axis variance sigma^2 * 2^(1/beta - 1) * Gamma(2/beta) / Gamma(1/beta);
    # beta = 1 is the Gaussian's sigma^2, beta = 2 (a flatter top) about 0.4 of it.
    sigma = 3.0
    expected = sigma**2 * 2 ** (1 / beta - 1) * math.gamma(2 / beta) / math.gamma(1 / beta)
    covariance = second_moments(kernels.generalized_gaussian_kernel(41, sigma, beta=beta))
    assert covariance[0, 0] == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0])
def test_plateau_kernel_falls_to_half_its_peak_at_one_sigma(beta):
    iso = kernels.plateau_kernel(21, 3.0, beta=beta)
    assert iso[10, 13] / iso[10, 10] == pytest.approx(0.5, abs=1e-6)
    assert iso[10, 12] / iso[10, 10] > 0.5  # the plateau: flat inside, whatever beta
    aniso = kernels.plateau_kernel(21, 3.0, 2.0, 0.0, beta=beta)
    assert aniso[10, 13] / aniso[10, 10] == pytest.approx(0.5, abs=1e-6)  # along x at sigma_x
    assert aniso[12, 10] / aniso[10, 10] == pytest.approx(0.5, abs=1e-6)  # along y at sigma_y


def test_sinc_kernel_passes_frequencies_below_its_cutoff_and_stops_those_above():
    cutoff = math.pi / 2
    response = np.abs(np.fft.fft2(kernels.sinc_kernel(21, cutoff), (256, 256)))
    frequency = np.fft.fftfreq(256) * 2 * np.pi
    radius = np.hypot(*np.meshgrid(frequency, frequency))
    # 21 taps of an ideal low-pass: ripple (Gibbs) of ~15% in the pass band, < 5% in the stop band.
    assert np.all(np.abs(response[radius < 0.6 * cutoff] - 1) < 0.2)
    assert np.all(response[(radius > 1.4 * cutoff) & (radius <= np.pi)] < 0.1)


def blur_settings(**changes):
    settings = dict(blur_kernel_size=21, kernel_list=["iso"], kernel_prob=[1.0], blur_sigma=[2.0, 2.0],
                    betag_range=[0.5, 4.0], betap_range=[1.0, 2.0], sinc_prob=0.0)
    settings.update(changes)
    return settings


def test_drawn_kernel_is_the_configured_family_padded_to_the_configured_size():
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(40):
        kernel = kernels.random_blur_kernel(rng, **blur_settings())
        assert kernel.shape == (21, 21)
        inner = int((kernel.sum(axis=0) > 0).sum())  # taps of the unpadded kernel
        sizes.add(inner)
        assert np.allclose(kernel, kernels.pad_kernel(kernels.gaussian_kernel(inner, 2.0), 21), atol=1e-7)
    assert sizes <= set(range(7, 22, 2)) and len(sizes) > 3  # sizes 7, 9, ..., 21 as Real-ESRGAN draws them


def test_drawn_kernels_follow_kernel_prob_and_sinc_prob():
    rng = np.random.default_rng(1)
    plateaus = [kernels.random_blur_kernel(rng, **blur_settings(kernel_list=["iso", "plateau_iso"],
                                                                kernel_prob=[0, 1], betap_range=[1.5, 1.5]))
                for _ in range(10)]
    assert all(k[10, 12] / k[10, 10] == pytest.approx(0.5, abs=1e-6) for k in plateaus)  # never the Gaussian
    sincs = [kernels.random_blur_kernel(rng, **blur_settings(sinc_prob=1.0)) for _ in range(10)]
    assert all(k.min() < 0 for k in sincs)  # negative lobes: the ringing only the sinc kernel has
    assert not any(k.min() < 0 for k in plateaus)
    again = kernels.random_blur_kernel(np.random.default_rng(5), **blur_settings(kernel_list=list(kernels.KERNEL_TYPES),
                                                                                kernel_prob=[1] * 6))
    assert np.array_equal(again, kernels.random_blur_kernel(np.random.default_rng(5), **blur_settings(
        kernel_list=list(kernels.KERNEL_TYPES), kernel_prob=[1] * 6)))


def test_final_sinc_is_the_pulse_when_off():
    pulse = kernels.random_final_sinc(np.random.default_rng(0), kernel_size=21, final_sinc_prob=0.0)
    image = photo(32)
    assert torch.equal(ops.blur(image, torch.from_numpy(pulse)[None]), image)
    sinc = kernels.random_final_sinc(np.random.default_rng(0), kernel_size=21, final_sinc_prob=1.0)
    assert sinc.shape == (21, 21) and sinc.min() < 0


# ---- noise ----

def test_gaussian_noise_has_the_requested_sigma_in_colour_or_gray():
    flat = torch.full((2, 3, 64, 64), 0.5)
    sigma = torch.tensor([5.0, 20.0])
    generator = torch.Generator().manual_seed(0)
    colour = noise.gaussian_noise(flat, sigma, torch.tensor([False, False]), generator) * 255
    # 12288 samples per image: the std's standard error is 0.6%, so 3% is five of them.
    assert colour.std(dim=(1, 2, 3)).tolist() == pytest.approx([5.0, 20.0], rel=0.03)
    assert abs(float(colour[0].mean())) < 0.2
    assert abs(float(torch.corrcoef(colour[1].flatten(1))[0, 1])) < 0.05  # channels independent
    gray = noise.gaussian_noise(flat, sigma, torch.tensor([True, True]), generator) * 255
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert gray.std(dim=(1, 2, 3)).tolist() == pytest.approx([5.0, 20.0], rel=0.03)


def test_poisson_noise_variance_grows_with_brightness_and_scale():
    # 256 distinct levels: L = 256 photons per unit of brightness, so noise variance = scale^2 * p / 256.
    ramp = (torch.arange(3 * 64 * 64) % 256).float().view(1, 3, 64, 64) / 255
    images = ramp.repeat(2, 1, 1, 1)
    scale = torch.tensor([1.0, 2.0])
    found = noise.poisson_noise(images, scale, torch.tensor([False, False]), torch.Generator().manual_seed(0))
    expected = scale**2 * ramp.mean() / 256
    assert (found**2).mean(dim=(1, 2, 3)).tolist() == pytest.approx(expected.tolist(), rel=0.05)
    bright, dark = ramp >= 0.5, ramp < 0.5
    assert float((found[0] ** 2)[bright[0]].mean()) > 2 * float((found[0] ** 2)[dark[0]].mean())  # shot noise
    gray = noise.poisson_noise(images, scale, torch.tensor([True, True]), torch.Generator().manual_seed(0))
    assert torch.equal(gray[:, 0], gray[:, 2])


def test_random_noise_stays_in_range_and_in_the_image():
    images = photo(32).repeat(4, 1, 1, 1)
    noisy = noise.add_random_noise(images, gaussian_prob=1.0, sigma_range=[10, 10], poisson_scale_range=[1, 1],
                                   gray_prob=0.0, host=torch.Generator().manual_seed(0),
                                   device_generator=torch.Generator().manual_seed(0))
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert 5 < float((noisy - images).std() * 255) < 11  # sigma 10, a little less where clipped


# ---- resize, JPEG, sharpening ----

@pytest.mark.parametrize("weights, low, high", [([1, 0, 0], 1.0, 1.5), ([0, 1, 0], 0.15, 1.0), ([0, 0, 1], 1.0, 1.0)])
def test_random_scale_goes_up_down_or_keeps_by_the_weights(weights, low, high):
    generator = torch.Generator().manual_seed(0)
    scales = [ops.random_scale(weights, [0.15, 1.5], generator) for _ in range(50)]
    assert all(low <= s <= high for s in scales)
    images = photo(40)
    resized = ops.random_resize(images, scales[0], generator)
    assert resized.shape[-2:] == (int(40 * scales[0]),) * 2


def test_jpeg_quality_lowers_psnr_monotonically_on_a_photo():
    image = photo(96)
    scores = [psnr(ops.jpeg(image, torch.tensor([q])), image) for q in (95, 80, 60, 40, 20, 5)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] > 33  # quality 95 is nearly lossless


def test_jpeg_is_close_to_a_real_encoder():
    from PIL import Image

    image = photo(96)
    pixels = (image[0].permute(1, 2, 0) * 255).round().byte().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=40)
    real = torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).float()[None] / 255
    ours = ops.jpeg(image, torch.tensor([40.0]))
    assert abs(psnr(ours, image) - psnr(real, image)) < 1.5  # dB: kornia's rounding is smooth, libjpeg's hard


def test_usm_sharpening_adds_detail_and_leaves_flat_areas_alone():
    image = photo(64)
    sharp = ops.usm_sharpen(image)
    detail = lambda x: float((x[..., 1:] - x[..., :-1]).abs().mean())  # noqa: E731
    assert detail(sharp) > 1.1 * detail(image)
    flat = torch.full((1, 3, 64, 64), 0.3)
    assert torch.allclose(ops.usm_sharpen(flat), flat, atol=1e-6)


# ---- the pipeline, the batch transform, the pool ----

def hq_batch(count: int = 4, size: int = 64, seed: int = 0) -> dict:
    settings = ValDegradation()
    rng = np.random.default_rng(seed)
    drawn = [draw_kernels(settings, rng) for _ in range(count)]
    base = photo(size)
    hq = torch.cat([torch.roll(base, shifts=7 * i, dims=-1) for i in range(count)])
    return {"hq": hq, **{k: torch.stack([d[k] for d in drawn]) for k in drawn[0]},
            "txt": [f"photo {i}" for i in range(count)]}


def run_degrade(batch, settings, key):
    return degrade(batch["hq"], batch["kernel1"], batch["kernel2"], batch["sinc_kernel"], settings,
                   Draws.for_key(key, "cpu"))


def test_degraded_pairs_are_8bit_hq_sized_and_worse_than_hq():
    batch = hq_batch()
    gt, lq = run_degrade(batch, ValDegradation(), (0, 1))
    assert gt.shape == lq.shape == batch["hq"].shape
    assert torch.equal(lq * 255, (lq * 255).round()) and lq.min() >= 0 and lq.max() <= 1
    assert psnr(lq, gt) < 30  # really degraded
    _, small = run_degrade(batch, ValDegradation(resize_back=False, stage2_scale=4), (0, 1))
    assert small.shape[-2:] == (16, 16)  # the second stage's size, HQ / stage2_scale


def test_noise_range_alone_sets_how_noisy_the_lq_is():
    # Everything else off (pulse kernels, no resize, JPEG 100): the LQ is the HQ plus the first stage's noise.
    batch = hq_batch()
    for name in ("kernel1", "kernel2", "sinc_kernel"):
        batch[name] = torch.from_numpy(kernels.pulse_kernel(21)).expand(4, 21, 21)
    clean = dict(use_sharpener=False, resize_prob=[0, 0, 1], resize_prob2=[0, 0, 1], stage2_scale=1,
                 jpeg_range=[100, 100], jpeg_range2=[100, 100], gaussian_noise_prob=1, gaussian_noise_prob2=1,
                 gray_noise_prob=1, gray_noise_prob2=1)
    scores = []
    for sigma in (2, 8, 20):
        gt, lq = run_degrade(batch, ValDegradation(**clean, noise_range=[sigma, sigma], noise_range2=[0, 0]), (0, 1))
        scores.append(psnr(lq, gt))
    assert scores[0] > scores[1] > scores[2]
    # Gray Gaussian noise of sigma 20/255 (luminance only, which JPEG's chroma subsampling does not average away;
    # a little clipped): PSNR about 20 * log10(255 / 20) = 22 dB.
    assert scores[2] == pytest.approx(20 * math.log10(255 / 20), abs=1.5)


def test_same_seed_and_step_give_the_same_pairs_and_others_differ():
    batch = hq_batch()
    params = RealESRGANTransformParams(queue_size=0)
    first = RealESRGANBatchTransform(params, seed=231, device="cpu")(batch, step=5, slot=1)
    again = RealESRGANBatchTransform(params, seed=231, device="cpu")(batch, step=5, slot=1)
    assert torch.equal(first["LQ"], again["LQ"]) and torch.equal(first["GT"], again["GT"])
    other_step = RealESRGANBatchTransform(params, seed=231, device="cpu")(batch, step=6, slot=1)
    other_slot = RealESRGANBatchTransform(params, seed=231, device="cpu")(batch, step=5, slot=0)
    assert not torch.equal(first["LQ"], other_step["LQ"]) and not torch.equal(first["LQ"], other_slot["LQ"])
    global_before = torch.get_rng_state()
    RealESRGANBatchTransform(params, seed=231, device="cpu")(batch, step=5, slot=1)
    assert torch.equal(torch.get_rng_state(), global_before)  # the global RNG is never drawn from


def test_pool_passes_batches_through_while_filling_then_mixes_them_keeping_pairs_together():
    pool = PairPool(8)
    generator = torch.Generator().manual_seed(0)
    seen = {}
    for index in range(6):
        gt = torch.full((4, 3, 8, 8), float(index * 4)) + torch.arange(4).view(4, 1, 1, 1)
        lq = (gt % 256) / 255  # each pair's LQ is recognisable from its GT
        txt = [f"pair {int(v)}" for v in gt[:, 0, 0, 0]]
        out_gt, out_lq, out_txt = pool.exchange(gt, lq, txt, generator)
        if index < 2:
            assert torch.equal(out_gt, gt) and out_txt == txt
        else:
            assert torch.equal(out_lq, (out_gt % 256) / 255)
            assert out_txt == [f"pair {int(v)}" for v in out_gt[:, 0, 0, 0]]
            seen.update({int(v): index for v in out_gt[:, 0, 0, 0]})
    assert any(v < 8 for v in seen) and any(v >= 8 for v in seen)  # pairs from several earlier batches


def test_pool_handles_batches_that_do_not_divide_it():
    pool = PairPool(10)  # upstream's config pairs queue_size 256 with batch 6
    generator = torch.Generator().manual_seed(0)
    for index in range(5):
        gt = torch.rand(4, 3, 8, 8)
        out_gt, _, out_txt = pool.exchange(gt, (gt * 255).round() / 255, ["x"] * 4, generator)
        assert out_gt.shape[0] == 4 and len(out_txt) == 4
    assert pool.filled == 10


def test_transform_resumed_from_a_saved_pool_gives_the_same_next_batches(tmp_path):
    params = RealESRGANTransformParams(queue_size=8)
    batches = [hq_batch(seed=i) for i in range(7)]
    straight = RealESRGANBatchTransform(params, seed=3, device="cpu")
    outputs = [straight(batch, step=i + 1) for i, batch in enumerate(batches)]
    interrupted = RealESRGANBatchTransform(params, seed=3, device="cpu")
    for i, batch in enumerate(batches[:4]):
        interrupted(batch, step=i + 1)
    torch.save(interrupted.state_dict(), tmp_path / "pool.pth")
    resumed = RealESRGANBatchTransform(params, seed=3, device="cpu")
    resumed.load_state_dict(torch.load(tmp_path / "pool.pth", weights_only=True))
    for i, batch in enumerate(batches[4:], start=4):
        out = resumed(batch, step=i + 1)
        assert torch.equal(out["GT"], outputs[i]["GT"]) and torch.equal(out["LQ"], outputs[i]["LQ"])
        assert out["txt"] == outputs[i]["txt"]
    assert any(o["txt"] != b["txt"] for o, b in zip(outputs[2:], batches[2:]))  # the pool did mix


def test_pool_of_another_size_is_refused():
    saved = PairPool(8).state_dict()
    with pytest.raises(ValueError, match="queue_size"):
        PairPool(16).load_state_dict(saved)


def test_an_all_skipped_batch_passes_through_empty():
    empty = {"GT": torch.empty(0, 3, 0, 0), "LQ": torch.empty(0, 3, 0, 0), "txt": [], "skipped": 4}
    out = RealESRGANBatchTransform(RealESRGANTransformParams(queue_size=8), seed=0, device="cpu")(empty, step=1)
    assert out["skipped"] == 4 and out["GT"].shape[0] == 0 and out["txt"] == []
