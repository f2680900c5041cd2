"""Checkpoints and exported weights that stay true through a full disk, out of memory and resumes."""

from __future__ import annotations

import pytest
from conftest import ROOT, tiny_overrides

from hypir_core import checkpoint as ckpt
from hypir_core.config import load_config
from hypir_core.trainer import train

TINY = ROOT / "configs" / "tiny.yaml"


def config(out, **extra):
    base = {"max_train_steps": 20, "validation_steps": 10, "checkpointing_steps": 10, "checkpoints_total_limit": 3}
    return load_config(TINY, tiny_overrides(out, **{**base, **extra}))


def test_a_full_disk_keeps_earlier_checkpoints_and_resume_works_once_space_is_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPIR_SWEEP_FAULT", "enospc:20")
    monkeypatch.setenv("HYPIR_SWEEP_FAULT_DIR", str(tmp_path / "faults"))
    out = tmp_path / "run"
    with pytest.raises(ckpt.DiskFullError, match=f"disk full at {out / 'checkpoints' / 'checkpoint-20'}"):
        train(config(out), progress_bar=False)
    assert [p.rsplit("/", 1)[1] for p in ckpt.list_checkpoints(str(out))] == ["checkpoint-10"]
    assert not list(out.rglob("*.partial"))
    resumed = train(config(out, resume_from_checkpoint="latest"), progress_bar=False)
    assert resumed.status == "completed" and [r["step"] for r in resumed.rounds] == [10, 20]


def test_out_of_memory_ends_the_run_with_a_status_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPIR_SWEEP_FAULT", "oom:12")
    monkeypatch.setenv("HYPIR_SWEEP_FAULT_DIR", str(tmp_path / "faults"))
    summary = train(config(tmp_path / "run"), progress_bar=False)
    assert summary.status == "out of memory at step 12"
    assert [r["step"] for r in summary.rounds] == [10]


def test_best_weights_always_hold_the_best_round_after_a_resume(tmp_path):
    out = tmp_path / "run"
    train(config(out, max_train_steps=10), progress_bar=False)
    best = out / ckpt.BEST_WEIGHTS
    assert ckpt.weights_step(str(best)) == 10
    # An interrupted attempt ran past the checkpoint and overwrote the best weights with a round that
    # the resumed run will not produce (here: step 15, never validated).
    ckpt.write_json(ckpt.weights_info_path(str(best)), {"step": 15, "metrics": {"val/Final_Score": 99.0}})
    resumed = train(config(out, resume_from_checkpoint="latest"), progress_bar=False)
    if resumed.best_round["step"] == 10:  # the new round did not beat step 10: the stale file must go
        assert "best" not in resumed.weights and not best.exists()
    else:
        assert ckpt.weights_step(str(best)) == resumed.best_round["step"] == 20
        assert resumed.weights["best"] == str(best)
