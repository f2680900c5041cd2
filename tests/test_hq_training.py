"""Training on HQ-only data (upstream HYPIR's path) on the tiny model: resume, upstream's config, TensorBoard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, resumable_scores, tiny_overrides

from hypir_core.config import load_config
from hypir_core.errors import WeightsError
from hypir_core.trainer import train

TINY_HQ = ROOT / "configs" / "tiny_realesrgan.yaml"
UPSTREAM = ROOT / "configs" / "sd2_train_upstream.yaml"
# A pool of 8 pairs fills in the first step (two batches of 4), so every later step trains on pooled pairs.
FAST = {"max_train_steps": 4, "validation_steps": 2, "checkpointing_steps": 2, "checkpoints_total_limit": 3,
        "data_config.train.batch_transform.params.queue_size": 8, "data_config.val.num_samples_per_type": 8}


def tiny_hq(output_dir, **extra):
    return load_config(TINY_HQ, tiny_overrides(output_dir, **{**FAST, **extra}))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hq") / "run"
    return train(tiny_hq(out), progress_bar=False)


def test_tiny_hq_config_trains_validates_and_checkpoints_its_pool(straight_run):
    summary = straight_run
    assert summary.status == "completed" and [r["step"] for r in summary.rounds] == [2, 4]
    metrics = summary.rounds[-1]["metrics"]
    assert "val/RealESRGAN/PSNR" in metrics and 10 < metrics["val/PSNR"] < 40  # the synthesised LQ set is scored
    for step in (2, 4):
        pool = torch.load(f"{summary.output_dir}/checkpoints/checkpoint-{step}/pair_pool.pth", weights_only=True)
        assert pool["pool"]["filled"] == 8 and pool["pool"]["lq"].dtype == torch.uint8


def test_resumed_hq_run_equals_the_uninterrupted_one(straight_run, tmp_path):
    first = train(tiny_hq(tmp_path / "run", max_train_steps=2), progress_bar=False)
    assert first.steps == 2
    resumed = train(tiny_hq(tmp_path / "run", resume_from_checkpoint="latest"), progress_bar=False)
    # Bit-exact: the same data and kernels (seed, epoch, index), the same degradations (seed, step, slot) and the
    # pool restored from the checkpoint, so steps 3-4 train on the pairs the straight run trained on.
    # The first attempt's last round (step 2) also scored the other colour-fix setting, as every run's final round
    # does; the rest is equal.
    assert resumable_scores(resumed.rounds) == resumable_scores(straight_run.rounds)
    assert resumed.rounds[-1]["metrics"] == straight_run.rounds[-1]["metrics"]
    w_straight = torch.load(straight_run.weights["final"], weights_only=True)
    w_resumed = torch.load(resumed.weights["final"], weights_only=True)
    assert all(torch.equal(w_straight[k], w_resumed[k]) for k in w_straight)


def test_a_checkpoint_without_the_pool_cannot_resume_an_hq_run(straight_run, tmp_path):
    copy = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    shutil.copytree(f"{straight_run.output_dir}/checkpoints/checkpoint-2", copy)
    (copy / "pair_pool.pth").unlink()
    with pytest.raises(WeightsError, match="holds no training-pair pool"):
        train(tiny_hq(tmp_path / "run", resume_from_checkpoint=str(copy)), progress_bar=False)


def test_upstream_config_trains_without_validation_and_logs_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    meta = "data_config.train.dataset.params.file_meta."
    overrides = [  # upstream's config as it is, its TODO paths filled and the model and images made tiny
        f"output_dir={tmp_path / 'run'}", meta + "file_list=demo://hq/train.list", meta + "image_path_prefix=''",
        meta + "image_path_key=image_path", meta + "prompt_key=none", "data_config.train.dataset.params.out_size=64",
        "data_config.train.batch_size=2", "data_config.train.dataloader_num_workers=0",
        "base_model_path=demo://tiny-sd2", "lora_rank=4", "disc_backbone=tiny", "lpips_weights=random",
        "max_train_steps=2", "checkpointing_steps=2", "log_image_steps=1", "log_grad_steps=0"]
    cfg = load_config(UPSTREAM, overrides)
    assert cfg.report_to == "tensorboard" and cfg.mixed_precision == "bf16" and cfg.data_config.val.hq_dir is None
    # Its own process: accelerate fixes the mixed precision (bf16 here) once per process.
    run = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--single", str(UPSTREAM), "--no-progress",
                          *overrides], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == [] and "final" in summary["weights"]
    assert "No validation set" in run.stderr
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "pair_pool.pth").is_file()
    (events,) = (tmp_path / "run" / "logs").glob("events.out.tfevents.*")
    logged = EventAccumulator(str(events)).Reload()
    assert [e.step for e in logged.Scalars("loss/G_total")] == [1, 2]
    assert "train/LQ|pred|GT" in logged.Tags()["images"]
