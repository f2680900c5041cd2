"""Validation rounds on the demo set: repeatable to the last digit, and caching changes no score."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hypir_core.errors import ConfigError
from hypir_core.metrics import QualityMetrics
from hypir_core.models import OneStepGenerator, load_sd2
from hypir_core.validation import Validator


@pytest.fixture(scope="module")
def validator():
    parts = load_sd2("demo://tiny-sd2")
    val_cfg = SimpleNamespace(val_dir="demo://aio/val", degradation_types=["Blur", "Haze", "Lowlight", "Rain", "Snow"],
                              num_samples_per_type=None, batch_size=16, prompt="", resize=64, quantize=True)
    return Validator(val_cfg, OneStepGenerator(parts, 200, 200), QualityMetrics("cpu", "random"), "cpu")


def test_same_weights_give_the_same_score_to_the_last_digit(validator):
    first, second = validator.run().metrics, validator.run().metrics
    assert first == second
    assert {f"val/{t}/PSNR" for t in ("Blur", "Haze", "Lowlight", "Rain", "Snow")} <= set(first)


def test_cached_gt_features_change_no_score(validator):
    cached = validator.run().metrics
    assert validator.lpips_references, "the demo set is small enough to cache its GT features"
    validator.lpips_references, validator.reference_budget = {}, 0
    uncached = validator.run().metrics
    assert cached == pytest.approx(uncached, rel=1e-6, abs=1e-9)


def test_final_round_details_name_every_image(validator):
    result = validator.run(with_details=True)
    assert len(result.per_image) == len(validator.pairs) == 40
    assert set(result.grids) == {"Blur", "Haze", "Lowlight", "Rain", "Snow"}
    grid = result.grids["Rain"]
    assert grid.shape == (3 * 64, 3 * 64, 3)  # 3 images per type, each LQ | restored | GT


def _validator_with(validator, **keys):
    """Another validator over the same cached set and generator, with other data_config.val keys."""
    val_cfg = SimpleNamespace(val_dir="demo://aio/val", degradation_types=["Blur", "Haze", "Lowlight", "Rain", "Snow"],
                              num_samples_per_type=None, batch_size=16, prompt="", resize=64, quantize=True, **keys)
    return Validator(val_cfg, validator.generator, validator.metrics, "cpu", pairs=validator.pairs)


def test_the_final_round_also_scores_the_other_colour_fix_on_the_same_outputs(validator):
    plain = validator.run().metrics
    assert not any("color_fix" in key for key in plain), "rounds before the last cost what they did"
    final = validator.run(with_details=True).metrics
    fixed = _validator_with(validator, color_fix="wavelet").run(with_details=True).metrics
    # Each setting's own score is what the other reports for it, to the last digit.
    for name in ("PSNR", "SSIM", "LPIPS", "Final_Score", "Lowlight/PSNR", "Haze/SSIM", "Blur/LPIPS"):
        assert final[f"val/color_fix/wavelet/{name}"] == fixed[f"val/{name}"]
        assert fixed[f"val/color_fix/none/{name}"] == final[f"val/{name}"] == plain[f"val/{name}"]
    assert final["val/color_fix/wavelet/Lowlight/PSNR"] != final["val/Lowlight/PSNR"]


def test_tiled_validation_at_the_image_size_is_the_whole_image_and_smaller_tiles_are_not(validator):
    whole = validator.run().metrics
    assert _validator_with(validator, tile_size=64, tile_stride=32).run().metrics == whole
    tiled = _validator_with(validator, tile_size=32, tile_stride=16).run().metrics
    assert tiled["val/PSNR"] != whole["val/PSNR"] and abs(tiled["val/PSNR"] - whole["val/PSNR"]) < 3


def test_tile_keys_are_checked_with_the_key_named(tmp_path):
    from conftest import ROOT, tiny_overrides

    from hypir_core.config import load_config

    tiny = ROOT / "configs" / "tiny.yaml"
    cfg = load_config(tiny, tiny_overrides(tmp_path, **{"data_config.val.color_fix": "wavelet",
                                                        "data_config.val.tile_size": 64,
                                                        "data_config.val.tile_stride": 32}))
    assert cfg.data_config.val.color_fix == "wavelet" and cfg.data_config.val.tile_size == 64
    with pytest.raises(ConfigError, match="'data_config.val.tile_stride' .* is 256, larger than tile_size 64"):
        load_config(tiny, ["data_config.val.tile_size=64"])
    with pytest.raises(ConfigError, match="'data_config.val.color_fix' .* must be one of none, wavelet"):
        load_config(tiny, ["data_config.val.color_fix=yes"])


def test_a_tile_size_the_vae_cannot_cut_names_the_key(validator):
    with pytest.raises(ConfigError, match="data_config.val.tile_size is 30; use a multiple of 4 .* such as 28"):
        _validator_with(validator, tile_size=30, tile_stride=16)
