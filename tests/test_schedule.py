"""Staged training: a schedule of config values by step, applied exactly as a resume with new values would."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT, resumable_scores, tiny_overrides

from hypir_core.config import load_config
from hypir_core.errors import ConfigError
from hypir_core.trainer import train

TINY = ROOT / "configs" / "tiny.yaml"
STAGE = "{lr_G: 2.0e-3, lambda_gan: 0.6, lambda_lpips: 1.0}"


def config(out, *extra):
    return load_config(TINY, tiny_overrides(out, max_train_steps=6, validation_steps=3, checkpointing_steps=3,
                                            checkpoints_total_limit=3) + list(extra))


def test_a_schedule_trains_exactly_what_a_resume_with_the_new_values_trains(tmp_path):
    """What a PBT exploit does (continue a checkpoint with other values) is what the exported schedule replays."""
    staged = train(config(tmp_path / "staged", f"schedule=[{{from_step: 4, overrides: {STAGE}}}]"),
                   progress_bar=False)
    train(config(tmp_path / "split", "max_train_steps=3"), progress_bar=False)
    resumed = train(config(tmp_path / "split", "resume_from_checkpoint=latest", "lr_G=2.0e-3", "lambda_gan=0.6",
                           "lambda_lpips=1.0"), progress_bar=False)
    # (the split run's step 3 was its first attempt's final round: it also holds the other colour fix's scores)
    assert resumable_scores(staged.rounds) == resumable_scores(resumed.rounds)
    assert staged.rounds[-1]["metrics"] == resumed.rounds[-1]["metrics"]
    a = torch.load(staged.weights["final"], weights_only=True)
    b = torch.load(resumed.weights["final"], weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ... and differs from not changing anything (the schedule did something).
    plain = train(config(tmp_path / "plain"), progress_bar=False)
    assert plain.rounds[0]["metrics"] == staged.rounds[0]["metrics"]
    assert plain.rounds[1]["metrics"] != staged.rounds[1]["metrics"]


def test_scheduled_values_reach_the_optimizers_and_the_loss(tmp_path):
    from hypir_core.trainer import _Run

    cfg = config(tmp_path / "run", f"schedule=[{{from_step: 4, overrides: {STAGE}}}]",
                 "opt_kwargs.weight_decay=0.0")
    run = _Run(cfg, progress_bar=False)
    assert run.loss_fn.lpips is None and run.opt_G.param_groups[0]["lr"] == cfg.lr_G
    run.apply_schedule(4)
    assert run.opt_G.param_groups[0]["lr"] == 2.0e-3 and run.opt_D.param_groups[0]["lr"] == cfg.lr_D
    assert run.loss_fn.weights["disc"] == 0.6 and run.loss_fn.lpips is not None  # built when first weighted


@pytest.mark.parametrize("schedule, message", [
    ("[{from_step: 200, overrides: {lr_G: 1.0e-4}}]", "after the run's last step"),
    ("[{from_step: 20, overrides: {model_t: 100}}]", "which cannot change mid-run"),
    ("[{from_step: 20, overrides: {lr_G: -1}}]", "'schedule[0].overrides'"),
    ("[{from_step: 20, overrides: {lr_G: 1.0}}, {from_step: 10, overrides: {lr_D: 1.0}}]", "increasing from_step"),
    ("[{from_step: 20, overrides: {lambda_l2: 0, lambda_l1: 0, lambda_ssim: 0, lambda_gan: 0}}]", "every loss weight"),
    ("[{from_step: 20, overides: {lr_G: 1.0}}]", "exactly from_step and overrides"),
])
def test_a_bad_schedule_is_one_sentence(schedule, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(TINY, [f"schedule={schedule}"])
