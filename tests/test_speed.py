"""Speed without changing the numbers: checkpointing auto, no host reads in a step, casts once, compile (issue 12)."""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import replace

import pytest
import torch
from conftest import ROOT, tiny_overrides

from hypir_core.config import load_config
from hypir_core.memory import CALIBRATION, estimate_peak_gib
from hypir_core.speed import choose_checkpointing, choose_compile, plan
from hypir_core.steplog import StepLosses

TINY = ROOT / "configs" / "tiny.yaml"
IMPROVED = ROOT / "configs" / "sd2_finetune_5k_improved.yaml"


# ---- gradient_checkpointing: auto, and compile: auto ----

def test_seed_configs_force_checkpointing_and_auto_is_the_default(tmp_path):
    assert load_config(IMPROVED).gradient_checkpointing is True
    assert load_config(TINY).gradient_checkpointing is False
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("base_model_path: demo://tiny-sd2\nmax_train_steps: 1\ndata_config:\n  train:\n"
                       "    dataset: {target: AIOFolderDataset, params: {root: demo://aio/train}}\n")
    cfg = load_config(minimal)
    assert cfg.gradient_checkpointing == "auto" and cfg.compile == "auto" and cfg.loss_read_steps == 10
    forced = load_config(IMPROVED, ["gradient_checkpointing=false"])
    assert choose_checkpointing(forced, "cuda", 20.0)[0] is False  # false forces it off even where it does not fit


def test_memory_model_reproduces_its_calibration_and_scales_with_batch_size_and_rank():
    cfg = load_config(IMPROVED)  # batch 4, 512x512, LoRA 256, bf16, ConvNeXt-XXLarge: the calibration run
    for checkpointing, measured in CALIBRATION["peak_gib"].items():
        assert estimate_peak_gib(cfg, checkpointing) == pytest.approx(measured, abs=1e-6)
    assert estimate_peak_gib(replace(cfg, lora_rank=32), False) < estimate_peak_gib(cfg, False) - 4
    bigger = load_config(IMPROVED, ["data_config.train.batch_size=8"])
    assert estimate_peak_gib(bigger, False) > estimate_peak_gib(cfg, False) + 25


@pytest.mark.parametrize("total_gib, share, expected", [
    (140.4, 1.0, False),   # H200, one trial: fits without checkpointing
    (140.4, 0.5, False),   # H200 shared by two trials: 70 GiB each still fits
    (79.2, 1.0, False),    # H100 80GB, one trial
    (79.2, 0.5, True),     # H100 shared by two: only with checkpointing
    (39.4, 1.0, True),     # A100 40GB
])
def test_auto_checkpointing_is_off_where_the_run_fits_its_share_of_the_gpu(total_gib, share, expected):
    cfg = load_config(IMPROVED, ["gradient_checkpointing=auto"])
    on, why = choose_checkpointing(cfg, "cuda", total_gib, share, "GPU")
    assert on is expected
    assert "GiB" in why and (f"{share:g} of" in why) == (share < 1)


def test_auto_is_off_on_the_cpu_and_says_why():
    cfg = load_config(TINY, ["gradient_checkpointing=auto"])
    chosen = plan(cfg, "cpu")
    assert (chosen.checkpointing, chosen.compile, chosen.fused_adamw) == (False, False, False)
    assert "CPU" in chosen.checkpointing_reason and "CPU" in chosen.compile_reason
    # Eager on CUDA too until a GPU benchmark shows compiling pays; true forces it, and says so.
    on, why = choose_compile(cfg, "cuda")
    assert on is False and "until a GPU benchmark" in why and "compile: true" in why
    assert choose_compile(replace(cfg, compile=True), "cuda") == (True, "compile: true in the config")
    assert choose_compile(replace(cfg, compile=False), "cuda") == (False, "compile: false in the config")


def test_dry_run_prints_the_choices_and_why(capsys):
    from hypir_core.single import dry_run

    assert dry_run(str(TINY), ["gradient_checkpointing=auto"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "gradient checkpointing" in out and "off: auto: off on the CPU" in out
    assert "torch.compile" in out


# ---- no host synchronisation inside a step ----

def test_step_losses_are_read_at_once_and_a_nan_names_the_step_it_appeared():
    losses = StepLosses(read_every=4)
    for step in range(1, 5):
        bad = float("nan") if step >= 2 else 1.0
        losses.add(step, {"loss/G_total": torch.tensor(bad), "loss/D": torch.tensor(0.5)})
    assert losses.due(4) and not losses.due(3)
    rows, diverged_at = losses.read()
    assert [step for step, _ in rows] == [1, 2, 3, 4] and rows[0][1] == {"loss/G_total": 1.0, "loss/D": 0.5}
    assert diverged_at == 2
    assert losses.read() == ([], None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hypir_core.trainer import _Run

    cfg = load_config(TINY, tiny_overrides(tmp_path_factory.mktemp("speed") / "run"))
    return _Run(cfg, progress_bar=False)


def test_a_training_step_reads_nothing_on_the_host(tiny_run, monkeypatch):
    """Every way a step could read a tensor's value on the host raises here (on a GPU each would be a sync)."""
    run = tiny_run
    data = run.batches()
    g_batches, d_batches = [run.prepare_micro_batch(next(data))], [run.prepare_micro_batch(next(data))]

    def forbid(name):
        original = getattr(torch.Tensor, name)

        def read(tensor, *args, **kwargs):
            # AdamW's step counter is a CPU tensor on a GPU too (not fused): reading it waits for nothing.
            if any(f"torch{os.sep}optim{os.sep}" in frame.filename for frame in inspect.stack(0)[1:4]):
                return original(tensor, *args, **kwargs)
            raise AssertionError(f"a training step read a tensor on the host (Tensor.{name})")
        return read

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    logs = run.generator_step(g_batches, log_grads=True)
    logs.update(run.discriminator_step(d_batches))
    run.ema.update(run.lora_params)
    monkeypatch.undo()
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in logs.values())
    assert {"loss/G_total", "loss/D", "loss/D_logits_real", "grad_norm/conv_out_l2"} <= set(logs)


def test_divergence_is_reported_at_the_step_the_loss_first_became_nan(tmp_path, monkeypatch):
    """Read every step or every 4: the run ends as diverged at the same step, and no step from it on is logged."""
    from hypir_core import trainer

    statuses, logged = [], []
    for every in (1, 4):
        recorder = _recorder(monkeypatch)
        cfg = load_config(TINY, tiny_overrides(tmp_path / f"every{every}", lr_G=1e30, lr_D=1e30,
                                               max_train_steps=6, loss_read_steps=every))
        statuses.append(trainer.train(cfg, progress_bar=False).status)
        logged.append(sorted(recorder.logged))
    assert statuses[0].startswith("diverged at step ") and statuses[0] == statuses[1]
    diverged_at = int(statuses[0].rsplit(" ", 1)[1])
    assert logged[0] == logged[1] == list(range(1, diverged_at))


def test_ssim_loss_equals_pyiqas_bit_for_bit():
    import pyiqa

    from hypir_core.metrics import SSIMYLoss

    torch.manual_seed(0)
    pred = torch.rand(2, 3, 48, 48, requires_grad=True)
    gt = torch.rand(2, 3, 48, 48)
    reference = pyiqa.create_metric("ssim", as_loss=True, device="cpu", test_y_channel=True, color_space="ycbcr")
    ours, theirs = SSIMYLoss("cpu")(pred, gt).mean(), reference(pred, gt)
    assert torch.equal(ours, theirs)
    assert torch.equal(torch.autograd.grad(ours, pred)[0], torch.autograd.grad(theirs, pred)[0])


# ---- the compiled path against plain eager ----

def _recorder(monkeypatch):
    """Make the trainer log into a recorder: ``.logged`` maps step -> metrics."""
    from hypir_core import trainer
    from hypir_core.tracking import NullTracker

    class Recorder(NullTracker):
        def __init__(self):
            self.logged: dict[int, dict] = {}

        def log(self, metrics, step):
            self.logged.setdefault(step, {}).update(metrics)

    recorder = Recorder()
    monkeypatch.setattr(trainer, "make_tracker", lambda *args, **kwargs: recorder)
    return recorder


def _losses_and_score(tmp_path, monkeypatch, name, **extra):
    """20 tiny steps with a round at the end: (every step's logged losses, Final_Score, seconds)."""
    from hypir_core import trainer

    recorder = _recorder(monkeypatch)
    start = time.perf_counter()
    # Validation batches of 4, as training's: the compiled run reuses the D step's no-grad graphs.
    cfg = load_config(TINY, tiny_overrides(tmp_path / name, max_train_steps=20, validation_steps=20,
                                           checkpointing_steps=100, log_grad_steps=10,
                                           **{"data_config.val.batch_size": 4}, **extra))
    summary = trainer.train(cfg, progress_bar=False)
    assert summary.status == "completed"
    losses = {step: {k: v for k, v in m.items() if k.startswith("loss/")} for step, m in recorder.logged.items()
              if any(k.startswith("loss/") for k in m)}
    return losses, summary.rounds[-1]["metrics"]["val/Final_Score"], time.perf_counter() - start


@pytest.mark.slow
def test_compiled_run_matches_eager_within_tolerance(tmp_path, monkeypatch):
    """torch.compile (UNet blocks, VAE, D backbone, LPIPS) on CPU: losses within 1e-3, Final_Score within 0.01."""
    eager, eager_score, eager_s = _losses_and_score(tmp_path, monkeypatch, "eager", compile="false")
    fast, fast_score, fast_s = _losses_and_score(tmp_path, monkeypatch, "compiled", compile="true")
    assert sorted(fast) == sorted(eager) == list(range(1, 21))
    worst = max(abs(fast[step][key] - value) / max(abs(value), 1e-6)
                for step in eager for key, value in eager[step].items())
    print(f"eager {eager_s:.0f} s, compiled {fast_s:.0f} s; Final_Score {eager_score:.4f} / {fast_score:.4f}; "
          f"largest relative loss difference {worst:.2e}")
    for step in eager:
        for key, value in eager[step].items():
            assert fast[step][key] == pytest.approx(value, rel=1e-3, abs=1e-6), (step, key)
    assert abs(fast_score - eager_score) < 0.01
