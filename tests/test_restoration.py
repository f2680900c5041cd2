"""The restoration path HYPIR deploys: tiles, Gaussian blending, the wavelet colour fix, resize rules."""

from __future__ import annotations

import math

import pytest
import torch

from hypir_core.errors import ConfigError
from hypir_core.models import OneStepGenerator, add_lora, load_sd2
from hypir_core.restoration import (
    RestoreSettings,
    gaussian_weights,
    model_output,
    model_size,
    restore,
    run_tiled,
    tile_starts,
    wavelet_color_fix,
    wavelet_decompose,
)


@pytest.fixture(scope="module")
def generator():
    parts = load_sd2("demo://tiny-sd2")
    params = add_lora(parts.unet, 4, ["to_q", "to_k", "to_v", "conv1", "conv2"])
    torch.manual_seed(0)
    with torch.no_grad():  # a LoRA that changes the output, so the test sees the UNet at work
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    model = OneStepGenerator(parts, 200, 200)
    return model, model.encode_prompt([""])


def test_tiles_cover_the_image_and_the_last_ends_at_the_edge():
    assert tile_starts(64, 64, 32) == [0]
    assert tile_starts(40, 64, 32) == [0]
    assert tile_starts(160, 64, 32) == [0, 32, 64, 96]
    assert tile_starts(150, 64, 32) == [0, 32, 64, 86]  # 86 + 64 = 150: no tile beyond the image


def test_gaussian_weights_are_hypirs_bell_and_blending_restores_any_pointwise_function():
    weights = gaussian_weights(64, 32)[0, 0]
    assert weights.shape == (64, 32)
    assert torch.allclose(weights, weights.flip(0)) and torch.allclose(weights, weights.flip(1))
    # standard deviation 0.1 of the side (6.4 px here): the first row is 31.5 px from the centre, row 31 0.5 px
    column = weights[:, 16].double()
    assert float(column[0] / column[31]) == pytest.approx(math.exp(-0.5 * ((31.5 / 6.4) ** 2 - (0.5 / 6.4) ** 2)),
                                                          rel=1e-4)
    # Overlapping tiles of a pointwise function give it back everywhere: the weights sum correctly where tiles meet.
    x = torch.rand(2, 3, 150, 100)
    blended = run_tiled(lambda tile: 3 * tile + 1, x, tile=64, stride=32)
    assert torch.allclose(blended, 3 * x + 1, atol=1e-5)
    # with a scale (a decoder's x4): each output cell comes from the tiles that cover it
    upsampled = run_tiled(lambda tile: tile.repeat_interleave(4, -1).repeat_interleave(4, -2), x, 64, 32, scale=4)
    assert torch.allclose(upsampled, x.repeat_interleave(4, -1).repeat_interleave(4, -2), atol=1e-5)


def test_an_image_within_one_tile_restores_as_the_untiled_pipeline(generator):
    model, text = generator
    lq = torch.rand(1, 3, 64, 64)
    whole = RestoreSettings(patch_size=None, posterior="mode", color_fix="none")
    within = RestoreSettings(patch_size=64, stride=32, posterior="mode", color_fix="none")
    assert torch.equal(restore(model, lq, text, whole), restore(model, lq, text, within))
    # tiles smaller than the image change the result (the UNet sees less context), but not by much
    split = restore(model, lq, text, RestoreSettings(patch_size=32, stride=16, posterior="mode", color_fix="none"))
    difference = float((split - restore(model, lq, text, whole)).abs().mean())
    assert split.shape == lq.shape and 0 < difference < 0.1


def test_sizes_that_are_not_multiples_of_the_latent_cell_come_back_exact(generator):
    model, text = generator
    for height, width, settings in ((61, 45, RestoreSettings(patch_size=None, posterior="mode")),
                                    (101, 77, RestoreSettings(patch_size=64, stride=32, posterior="mode")),
                                    (30, 50, RestoreSettings(patch_size=None, posterior="mode", upscale=2))):
        out = restore(model, torch.rand(2, 3, height, width), text, settings)
        factor = settings.upscale
        assert out.shape == (2, 3, int(height * factor), int(width * factor))
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, torch.round(out * 255) / 255)  # 8-bit values, what a saved PNG holds


def test_resize_rules_are_hypirs():
    assert model_size(300, 800, 512) == (512, 1365)  # short side up to the patch size, aspect kept
    assert model_size(600, 800, 512) == (600, 800)  # above it: the image's own size
    assert model_size(300, 800, None) == (300, 800)  # no tiles: the own size always
    lq = torch.rand(1, 3, 40, 100)
    settings = RestoreSettings(scale_by="longest_side", target_longest_side=50, patch_size=None)
    from hypir_core.restoration import scaled_reference
    assert scaled_reference(lq, settings).shape[-2:] == (20, 50)


def test_a_seeded_posterior_sample_repeats_and_the_mode_ignores_the_seed(generator):
    model, text = generator
    lq = torch.rand(1, 3, 64, 64)
    sample = RestoreSettings(patch_size=None, posterior="sample")
    first = restore(model, lq, text, sample, torch.Generator().manual_seed(7))
    assert torch.equal(first, restore(model, lq, text, sample, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, restore(model, lq, text, sample, torch.Generator().manual_seed(8)))
    mode = RestoreSettings(patch_size=None, posterior="mode")
    assert torch.equal(restore(model, lq, text, mode, torch.Generator().manual_seed(7)),
                       restore(model, lq, text, mode, torch.Generator().manual_seed(8)))


def test_colour_fix_takes_the_lq_low_band_and_keeps_the_outputs_detail():
    """A dark, tinted LQ (Lowlight) and a bright output with fine texture: the fix is the texture on the LQ's tint."""
    size = 160
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = ((rows + cols) % 2 * 2 - 1).float()[None, None].expand(1, 3, size, size)  # the finest detail there is
    tint = torch.tensor([0.10, 0.15, 0.05]).view(1, 3, 1, 1)
    lq = tint + 0.02 * checker  # dark, with its own (noise-like) detail
    output = torch.tensor([0.6, 0.5, 0.7]).view(1, 3, 1, 1) + 0.2 * checker
    fixed = wavelet_color_fix(output, lq)
    inside = (..., slice(40, 120), slice(40, 120))  # beyond the blurs' reach of the replicate-padded border
    assert torch.allclose(fixed[inside], (tint + 0.2 * checker)[inside], atol=1e-5)
    # and in general: the result's bands are the output's high band plus the LQ's low band
    output, lq = torch.rand(2, 3, 96, 80), torch.rand(2, 3, 96, 80)
    high, _ = wavelet_decompose(output)
    _, low = wavelet_decompose(lq)
    assert torch.allclose(wavelet_color_fix(output, lq), high + low)
    assert torch.allclose(sum(wavelet_decompose(output)), output, atol=1e-6)


def test_model_output_is_one_pass_for_both_colour_fix_settings(generator):
    model, text = generator
    lq = torch.rand(1, 3, 64, 64)
    output, reference = model_output(model, lq, text, RestoreSettings(patch_size=None, posterior="mode"))
    assert torch.equal(reference, lq)  # upscale 1: the reference is the LQ itself
    fixed = restore(model, lq, text, RestoreSettings(patch_size=None, posterior="mode", color_fix="wavelet"))
    assert torch.equal(fixed, torch.round(wavelet_color_fix(output, lq).clamp(0, 1) * 255) / 255)


@pytest.mark.parametrize("settings, words", [
    (RestoreSettings(patch_size=62, stride=32), "patch_size is 62; use a multiple of 4 .*such as 60"),
    (RestoreSettings(patch_size=64, stride=128), "stride 128 is larger than patch_size 64"),
    (RestoreSettings(color_fix="colour"), "color_fix is 'colour'; use one of none, wavelet"),
    (RestoreSettings(scale_by="longest_side"), "needs target_longest_side"),
])
def test_bad_settings_are_one_sentence(settings, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        settings.check(4)
