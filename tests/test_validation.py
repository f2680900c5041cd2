"""Validation rounds on the demo set: repeatable to the last digit, and caching changes no score."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

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
