"""analyze.py's handoff: both colour-fix settings per run, the winner under each, and commands that fit the weights."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import ROOT

from hypir_core.config import config_to_dict, load_config
from hypir_core.restore import model_from_source
from hypir_sweep import handoff

TYPES = ["Lowlight", "Blur"]


def final_round(psnr_none: float, psnr_wavelet: float, lowlight_shift: float = -3.0) -> dict[str, float]:
    """A final round's metrics as validation logs them with color_fix: none (the other setting under color_fix/)."""
    metrics = {}
    for prefix, psnr, shift in (("val/", psnr_none, 0.0), ("val/color_fix/wavelet/", psnr_wavelet, lowlight_shift)):
        metrics.update({f"{prefix}PSNR": psnr, f"{prefix}SSIM": 0.5, f"{prefix}LPIPS": 0.1,
                        f"{prefix}Final_Score": psnr + 5 - 0.5, f"{prefix}Lowlight/PSNR": psnr + shift,
                        f"{prefix}Lowlight/SSIM": 0.4, f"{prefix}Lowlight/LPIPS": 0.2, f"{prefix}Blur/PSNR": psnr,
                        f"{prefix}Blur/SSIM": 0.6, f"{prefix}Blur/LPIPS": 0.05})
    return metrics


def sweep_of(rows) -> SimpleNamespace:
    return SimpleNamespace(metric="val/Final_Score", mode="max", rows=rows,
                           spec={"base_resolved": {"data_config": {"val": {"degradation_types": TYPES}}}})


def row(trial, metrics, status="completed"):
    return SimpleNamespace(trial=trial, status=status, final_metrics=metrics)


def test_both_settings_per_run_and_type():
    table = handoff.comparison([("trial a", final_round(20.0, 19.0), "none")], TYPES)
    assert list(table["colour fix"]) == ["none", "wavelet"]
    assert list(table["Lowlight PSNR"]) == [20.0, 16.0] and list(table["PSNR"]) == [20.0, 19.0]
    assert table["Blur Final_Score"][0] == pytest.approx(20.0 + 6.0 - 0.25)
    sentence = handoff.color_fix_sentence(final_round(20.0, 19.0), "none", TYPES)
    assert "Lowlight -4.00 dB, Blur -1.00 dB" in sentence and "from 24.5000 to 23.5000" in sentence


def test_the_sweep_says_when_the_winner_would_change_under_the_other_setting():
    stays = sweep_of([row("a", final_round(20.0, 19.0)), row("b", final_round(19.0, 18.0))])
    assert "trial a is first both without the colour fix" in handoff.winner_change(stays, stays.rows[0])
    # b loses without the fix but wins with it; an early-stopped trial has no final round and does not count
    changes = sweep_of([row("a", final_round(20.0, 18.0)), row("b", final_round(19.5, 19.0)),
                        row("c", {"val/Final_Score": 30.0}, status="early-stopped")])
    sentence = handoff.winner_change(changes, changes.rows[0])
    assert sentence.startswith("The winner would change with the wavelet colour fix")
    assert "trial b would be first (Final_Score 23.5000 against 22.5000 for trial a" in sentence
    assert "data_config.val.color_fix: wavelet" in sentence


def test_handoff_commands_carry_the_trials_shape_and_the_gradio_yaml_restores(tmp_path):
    from hypir_core.models import add_lora, load_sd2, lora_state_dict

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["lora_rank=4", "model_t=150", "coeff_t=120",
                                                         "lora_modules=[to_q,conv1]"])
    parts = load_sd2(cfg.base_model_path)
    add_lora(parts.unet, cfg.lora_rank, cfg.lora_modules)
    weights = tmp_path / "HYPIR_sd2_best.pth"
    torch.save(lora_state_dict(parts.unet), weights)
    warnings = handoff.write_handoff(config_to_dict(cfg), str(weights), "analysis/best_config.yaml", str(tmp_path),
                                     "the colour fix sentence", "t1")
    text = (tmp_path / "HANDOFF.md").read_text()
    commands = [line for line in text.splitlines() if line.startswith(("python", "mkdir"))]
    assert len(commands) == 3 and "the colour fix sentence" in text
    for command in commands[1:]:  # HYPIR's test.py and the fork's inference.py
        words = shlex.split(command.split("&& python")[-1])
        given = dict(zip(words, words[1:]))
        assert (given["--lora_rank"], given["--model_t"], given["--coeff_t"]) == ("4", "150", "120")
        assert given["--lora_modules"] == "to_q,conv1" and given["--upscale"] == "1"
    assert f"--weight_path {weights}" in commands[1] and f"cp {weights} fork_checkpoint/state_dict.pth" in commands[2]
    spec = model_from_source(None, str(tmp_path / "sd2_gradio.yaml"))  # the filled gradio config restores with ours
    assert (spec.lora_rank, spec.model_t, spec.coeff_t, spec.weights) == (4, 150, 120, str(weights))
    fork = yaml.safe_load((tmp_path / "fork_config.yaml").read_text())
    assert fork["lora_rank"] == 4 and fork["optimizer_type"] == "adam"
    assert all(f"#   {w}" in (tmp_path / "fork_config.yaml").read_text() for w in warnings)
