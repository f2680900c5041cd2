"""HYPIR training as a function: ``train(config, report) -> RunSummary``.

Read top to bottom: set up models and data, then loop over global steps, validating every
``validation_steps`` and reporting each round to the caller's ``report(metrics, checkpoint_dir)``.
Nothing here knows about Ray or Optuna.

A global step is HYPIR's (trainer/base.py ``run``): a generator step on the next batch (times
gradient accumulation), an EMA update, then a discriminator step on the batch after it, with its
own posterior sample and the generator re-run after its update: two batches per step. PARITY.md
lists each aspect against the users' trainer.

Nothing inside a step waits for the GPU: its losses stay on the device and are read every
``loss_read_steps`` steps (hypir_core/steplog.py), where a NaN/inf ends the run. Gradient
checkpointing and torch.compile are chosen per device (hypir_core/speed.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from hypir_core import checkpoint as ckpt
from hypir_core import faults, fork, schedule, speed
from hypir_core.config import Config, config_to_dict
from hypir_core.config_data import has_validation
from hypir_core.data import build_train_dataset, scan_val_set, train_batches
from hypir_core.degradation.transform import build_batch_transform
from hypir_core.discriminator import Discriminator
from hypir_core.ema import LoraEMA
from hypir_core.errors import OOM_ADVICE, WeightsError
from hypir_core.losses import TERMS, GeneratorLoss, term_grad_norms, weights_of
from hypir_core.metrics import FINAL_SCORE, QualityMetrics, best_round
from hypir_core.models import OneStepGenerator, add_lora, load_lora_weights, load_sd2, lora_state_dict
from hypir_core.steplog import StepLosses
from hypir_core.tracking import make_tracker
from hypir_core.validation import Validator

logger = logging.getLogger("hypir_core")
Report = Callable[[dict, "str | None"], None]
BEST_WEIGHTS, FINAL_WEIGHTS = ckpt.BEST_WEIGHTS, ckpt.FINAL_WEIGHTS
VAL_IMAGES = "val_images"  # the final round's LQ | restored | GT crops per degradation type


@dataclass
class RunSummary:
    """How a run ended: status ("completed", "diverged at step N"), every round, the best round, weights."""

    status: str
    steps: int
    rounds: list[dict] = field(default_factory=list)
    best_round: dict | None = None
    output_dir: str = ""
    weights: dict[str, str] = field(default_factory=dict)
    skipped_images: int = 0
    seconds: float = 0.0

    @property
    def final_metrics(self) -> dict:
        return self.rounds[-1]["metrics"] if self.rounds else {}


class _Run:
    """The state of one training run (models, optimizers, data) and its step functions."""

    def __init__(self, cfg: Config, progress_bar: bool, disc_pretrained: bool = True):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import set_seed

        self.cfg, self.progress_bar, self.disc_pretrained = cfg, progress_bar, disc_pretrained
        self.output_dir = cfg.output_dir
        os.makedirs(self.output_dir, exist_ok=True)
        set_seed(cfg.seed)
        # accelerate keeps one process-wide state that refuses a second mixed precision: a process that trained
        # another run before (a sweep reuses its trial processes) starts this one from a fresh state.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, project_dir=self.output_dir)
        self.device = self.accelerator.device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.accelerator.mixed_precision,
                                                                          torch.float32)
        # Data first: a bad path or layout fails in seconds, before any weights load.
        self.dataset = build_train_dataset(cfg.data_config.train, skip_bad_images=cfg.skip_bad_images)
        # HQ-only data: Real-ESRGAN's degradation on the device, its pair pool saved in every checkpoint.
        self.degrader = build_batch_transform(cfg.data_config.train, cfg.seed, self.device)
        val_pairs = scan_val_set(cfg.data_config.val) if has_validation(cfg.data_config.val) else None
        if val_pairs is None:
            logger.warning("No validation set (data_config.val.val_dir or hq_dir): the run reports no scores and "
                           "writes only its final weights.")
        # Gradient checkpointing and torch.compile: each forced by its key, or chosen here (hypir_core/speed.py).
        self.speed = speed.plan(cfg, self.device)
        for line in self.speed.lines():
            logger.info(line)
        self.init_generator()
        self.init_discriminator()
        if cfg.init_from_fork_checkpoint:  # LoRA, EMA and D heads of a fork checkpoint-N/ (hypir_core/fork.py)
            fork.load_fork_checkpoint(cfg.init_from_fork_checkpoint, self.lora_params, self.lora_names, self.ema,
                                      self.D, cfg.disc_backbone)
        speed.cast_once(self.generator.unet, self.D.backbone, self.dtype, self.device)
        self.init_optimizers()
        self.loss_fn = GeneratorLoss.from_config(cfg, device=self.device)
        self.hyper: dict = {}  # the schedule's values in effect (learning rates, loss weights, ...)
        self.apply_schedule(1)
        # The generator autocasts its UNet itself (unet_autocast), so validation needs no outer autocast.
        self.validator = None if val_pairs is None else Validator(
            cfg.data_config.val, self.generator, QualityMetrics(self.device, cfg.lpips_weights), self.device,
            pairs=val_pairs, progress_bar=progress_bar)
        if self.speed.compile:
            self.compile_regions()
        self.progress = ckpt.TrainProgress()
        self.progress.posterior_rng.manual_seed(cfg.seed)
        self.accelerator.register_for_checkpointing(self.progress)
        if self.ema is not None:
            self.accelerator.register_for_checkpointing(self.ema)
        self.prompt_cache: dict[str, torch.Tensor] = {}

    # ---- setup ---------------------------------------------------------------------------------
    def init_generator(self):
        cfg = self.cfg
        parts = load_sd2(cfg.base_model_path, self.dtype, self.device)
        if self.speed.checkpointing:
            parts.unet.enable_gradient_checkpointing()
        self.lora_params = add_lora(parts.unet, cfg.lora_rank, cfg.lora_modules)
        if cfg.init_lora_from:
            load_lora_weights(parts.unet, cfg.init_lora_from)
        coeff_t = cfg.coeff_t if cfg.coeff_t is not None else cfg.model_t
        self.generator = OneStepGenerator(parts, cfg.model_t, coeff_t)
        self.generator.unet_autocast = self.accelerator.autocast
        self.lora_names = [n for n, p in parts.unet.named_parameters() if p.requires_grad]
        # From the initial LoRA, constant decay unless ema_warmup (hypir_core/ema.py).
        self.ema = LoraEMA(self.lora_params, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.use_ema else None

    def init_discriminator(self):
        self.D = Discriminator(self.cfg.disc_backbone, pretrained=self.disc_pretrained).to(self.device)
        self.D.backbone.to(self.dtype)
        self.D_params = list(self.D.heads.parameters())

    def init_optimizers(self):
        # opt_kwargs defaults are torch's AdamW defaults (weight_decay 0.01), which HYPIR relies on.
        cfg, kwargs = self.cfg, config_to_dict(self.cfg.opt_kwargs)
        kwargs["betas"] = tuple(kwargs["betas"])
        if self.speed.fused_adamw:
            kwargs["fused"] = True  # one kernel for all LoRA tensors (compile on, CUDA)
        opt_G = torch.optim.AdamW(self.lora_params, lr=cfg.lr_G, **kwargs)
        opt_D = torch.optim.AdamW(self.D_params, lr=cfg.lr_D, **kwargs)
        self.opt_G, self.opt_D = self.accelerator.prepare(opt_G, opt_D)

    def compile_regions(self) -> list[torch.nn.Module]:
        """torch.compile UNet blocks, VAE, discriminator backbone and both LPIPS networks, in place."""
        lpips = [self.loss_fn.lpips] + ([self.validator.metrics.lpips] if self.validator is not None else [])
        return speed.compile_regions(self.generator, self.D.backbone, lpips)

    # ---- data ----------------------------------------------------------------------------------
    def batches(self):
        """Endless batches in a seeded order per epoch, starting where the progress says."""
        return train_batches(self.dataset, self.cfg.data_config.train, self.cfg.seed, self.progress,
                             pin_memory=self.device.type == "cuda")

    def text_embed(self, prompts: list[str]) -> torch.Tensor:
        for prompt in set(prompts) - set(self.prompt_cache):
            self.prompt_cache[prompt] = self.generator.encode_prompt([prompt])[0]
        return torch.stack([self.prompt_cache[p] for p in prompts])

    # ---- one global step -------------------------------------------------------------------------
    def train_step(self, data, log_grads: bool, mark: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
        """G on the next batch(es), EMA update, then D on the batch(es) after: HYPIR's alternation.

        Returns the step's logs as 0-d device tensors: nothing in a step waits for the GPU (the loop reads
        them every few steps, hypir_core/steplog.py). ``mark(stage)`` is called as each stage ends
        (prep_G, G, EMA, prep_D, D): bench/gpu_train.py times the stages with it.
        """
        mark = mark or (lambda stage: None)
        accum = self.cfg.gradient_accumulation_steps
        g_batches = [self.prepare_micro_batch(self.degrade(next(data), slot)) for slot in range(accum)]
        mark("prep_G")
        logs = self.generator_step(g_batches, log_grads)
        mark("G")
        if self.ema is not None:
            self.ema.update(self.lora_params)
        mark("EMA")
        d_batches = [self.prepare_micro_batch(self.degrade(next(data), accum + slot)) for slot in range(accum)]
        mark("prep_D")
        logs.update(self.discriminator_step(d_batches))
        mark("D")
        self.last_batch = g_batches[0]
        return logs

    def generator_step(self, micro_batches, log_grads: bool) -> dict[str, torch.Tensor]:
        """One G update over the micro-batches; returns the mean of each loss term (device tensors)."""
        # D's heads in eval mode: G's adversarial forward runs no spectral-norm power iteration.
        self.D.eval()
        self.D.heads.requires_grad_(False)
        sums: dict[str, torch.Tensor] = {}
        accum = len(micro_batches)
        for index, batch in enumerate(micro_batches):
            per_term = log_grads and index == 0
            # Per-term gradients re-run the backward (retain_graph), which compiled backwards refuse: that
            # forward runs eager.
            eager = torch.compiler.set_stance("force_eager") if per_term and self.speed.compile else None
            with eager or contextlib.nullcontext():
                pred = self.generator(batch["z_lq"], batch["text"])
                terms = self.loss_fn(pred, batch["gt"], self.D, disc_autocast=self.accelerator.autocast)
            total = sum(terms.values())
            if per_term:
                sums.update(self.term_grad_norms(terms))
            self.accelerator.backward(total / accum)
            for term, value in terms.items():
                _accumulate(sums, "loss/" + TERMS[term][1], value.detach() / accum)
            _accumulate(sums, "loss/G_total", total.detach() / accum)
            batch["pred"] = pred.detach()
        self.accelerator.clip_grad_norm_(self.lora_params, self.hyper["max_grad_norm"])
        self.opt_G.step()
        self.opt_G.zero_grad(set_to_none=True)
        return sums

    def term_grad_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """grad_norm/<module>_<term>: how hard each loss term pulls on the logged modules' LoRA weights."""
        return term_grad_norms(terms, dict(zip(self.lora_names, self.lora_params)), self.cfg.log_grad_modules)

    def discriminator_step(self, micro_batches) -> dict[str, torch.Tensor]:
        """One D update: real GT against the generator's output (after this step's G update) on D's own batches."""
        self.D.train()
        self.D.heads.requires_grad_(True)
        sums: dict[str, torch.Tensor] = {}
        accum = len(micro_batches)
        for batch in micro_batches:
            with torch.no_grad():
                fake = self.generator(batch["z_lq"], batch["text"])
            with self.accelerator.autocast():
                loss_real, real_logits = self.D.loss(batch["gt"], real=True)
                loss_fake, fake_logits = self.D.loss(fake, real=False)
            loss = loss_real + loss_fake
            self.accelerator.backward(loss / accum)
            _accumulate(sums, "loss/D", loss.detach() / accum)
            for name, logits in (("real", real_logits), ("fake", fake_logits)):
                mean = torch.stack([level.detach().float().mean() for level in logits]).mean()
                _accumulate(sums, f"loss/D_logits_{name}", mean / accum)
        self.accelerator.clip_grad_norm_(self.D_params, self.hyper["max_grad_norm"])
        self.opt_D.step()
        self.opt_D.zero_grad(set_to_none=True)
        return sums

    def degrade(self, batch, slot: int):
        """HQ-only data: the batch's training pairs, drawn from (seed, this step, slot); paired data unchanged."""
        return batch if self.degrader is None else self.degrader(batch, self.progress.global_step + 1, slot)

    def prepare_micro_batch(self, batch) -> dict:
        # Batches come pinned on CUDA (the loader's pin_memory), so the copies need not wait for the GPU.
        lq = (batch["LQ"].to(self.device, non_blocking=True) * 2 - 1).float()
        gt = (batch["GT"].to(self.device, non_blocking=True) * 2 - 1).float()
        with torch.no_grad():  # a posterior sample, as HYPIR trains; its own seeded RNG survives resume
            z = self.generator.encode_lq(lq, sample=True, generator=self.progress.posterior_rng)
        return {"lq": lq, "gt": gt, "z_lq": z, "text": self.text_embed(list(batch["txt"]))}

    # ---- validation, checkpoints, weights --------------------------------------------------------
    def validate(self, final: bool):
        """Score (and export) the EMA weights when use_ema, else the trained ones."""
        averaged = self.ema.swapped_in(self.lora_params) if self.ema is not None else contextlib.nullcontext()
        with averaged:
            result = self.validator.run(with_details=final, progress=self.progress_bar)
            weights = lora_state_dict(self.generator.unet)
        return result, weights

    def save_checkpoint(self) -> str:
        step = self.progress.global_step
        path = os.path.join(self.output_dir, "checkpoints", f"checkpoint-{step}")
        with ckpt.writing(path) as partial:  # a crash or a full disk leaves no half-written checkpoint
            faults.fire("checkpoint", step, self.output_dir, path=partial)
            self.accelerator.save_state(partial)
            torch.save(lora_state_dict(self.generator.unet), os.path.join(partial, ckpt.LORA_FILE))
            torch.save(self.D.trainable_state_dict(), os.path.join(partial, ckpt.DISC_FILE))
            if self.degrader is not None:
                torch.save(self.degrader.state_dict(), os.path.join(partial, ckpt.PAIR_POOL_FILE))
        ckpt.rotate(self.output_dir, self.cfg.checkpoints_total_limit)
        return path

    def apply_schedule(self, step: int, force: bool = False) -> None:
        """Make the values in effect at ``step`` (the config's, changed by its schedule) reach the optimizers and
        the loss. ``force`` after loading a checkpoint: the config's values win over the optimizer state's (a PBT
        exploit continues another trial's state with its own learning rates)."""
        values = schedule.values_at(self.cfg, step)
        if values == self.hyper and not force:
            return
        for optimizer, lr in ((self.opt_G, values["lr_G"]), (self.opt_D, values["lr_D"])):
            for group in optimizer.param_groups:
                group["lr"], group["weight_decay"] = lr, values["opt_kwargs.weight_decay"]
        self.loss_fn.set_weights(weights_of(values))
        changed = {k: v for k, v in values.items() if self.hyper and self.hyper.get(k) != v}
        if changed:
            logger.info("From step %d: %s", step,
                        ", ".join(f"{key} {self.hyper[key]:g} -> {value:g}" for key, value in changed.items()))
        self.hyper = values

    def load_checkpoint(self, path: str) -> None:
        heads = torch.load(os.path.join(path, ckpt.DISC_FILE), weights_only=True)
        if set(heads) != set(self.D.trainable_state_dict()):  # checked first: load_state would fail obscurely
            raise WeightsError(f"The discriminator heads in checkpoint '{path}' do not fit this run's (written by an "
                               "older hypir-sweep, or for another disc_backbone); start the run afresh.")
        self.accelerator.load_state(path)
        load_lora_weights(self.generator.unet, os.path.join(path, ckpt.LORA_FILE))
        self.D.load_state_dict(heads, strict=False)
        if self.degrader is not None:
            self.degrader.load_state_dict(ckpt.load_pair_pool(path))
        if self.ema is not None and not self.cfg.resume_ema:
            # Restart the average from the resumed weights (HYPIR's restarts from its fresh LoRA: PARITY.md).
            self.ema.reset(self.lora_params)

    def averaged_weights(self) -> dict:
        """HYPIR-format weights as validation would score them: the EMA's when use_ema, else the trained ones."""
        with self.ema.swapped_in(self.lora_params) if self.ema is not None else contextlib.nullcontext():
            return lora_state_dict(self.generator.unet)

    def export_weights(self, weights: dict, name: str, round_info: dict | None = None) -> str:
        """Write HYPIR-format weights atomically; ``round_info`` (step, metrics) goes beside them as JSON."""
        return ckpt.export_weights(os.path.join(self.output_dir, name), weights, round_info)


def _accumulate(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    sums[key] = value if key not in sums else sums[key] + value


class StopTraining(Exception):
    """Raised by a ``report`` callback to end the run cleanly after this round (e.g. a sweep's early stop)."""


class _Diverged(Exception):
    def __init__(self, step: int):
        super().__init__(f"diverged at step {step}")
        self.step = step


def _image_grid(batch) -> np.ndarray:
    rows = [torch.cat([batch[k][i] for k in ("lq", "pred", "gt")], dim=-1) for i in range(min(4, len(batch["lq"])))]
    grid = (torch.cat(rows, dim=-2).clamp(-1, 1) + 1) * 127.5
    return grid.permute(1, 2, 0).round().byte().cpu().numpy()


def train(config: Config, report: Report | None = None, progress_bar: bool = True, *, group: str | None = None,
          tracker_config: dict | None = None) -> RunSummary:
    """Train one HYPIR config; call ``report(metrics, checkpoint_dir)`` after every validation round.

    ``checkpoint_dir`` is the checkpoint saved at that round's step, or None when that step saved none.

    ``report`` may raise ``StopTraining`` to end the run after that round (status ``stopped early at
    step N``, or ``completed`` at the last step).
    Returns how the run ended. A NaN/inf loss ends it with status ``diverged at step N``, running out of
    (GPU) memory with ``out of memory at step N``; a full disk raises ``DiskFullError``. Weights in
    HYPIR format (the UNet's LoRA keys) are written for the best and the final validation round.
    ``group`` and ``tracker_config`` (merged into the logged config) go to the experiment tracker,
    e.g. a sweep's name and the trial's sampled parameters.
    """
    cfg, started = config, time.time()
    run = _Run(cfg, progress_bar)
    resume = ckpt.resolve_resume(cfg.resume_from_checkpoint, run.output_dir)
    if resume:
        run.load_checkpoint(resume)
        run.apply_schedule(run.progress.global_step + 1, force=True)
        logger.info("Resumed from %s at step %d", resume, run.progress.global_step)
    tracker = make_tracker(cfg.report_to, cfg.swanlab_project, cfg.name,
                           os.path.join(run.output_dir, cfg.logging_dir),
                           {**config_to_dict(cfg), **(tracker_config or {})}, group=group, mode=cfg.swanlab_mode)
    progress, weights_paths, status = run.progress, {}, "completed"
    best = best_round(progress.rounds)
    best_path = os.path.join(run.output_dir, BEST_WEIGHTS)
    if best is not None and ckpt.weights_step(best_path) == best["step"]:
        weights_paths["best"] = best_path  # else it holds a round of an interrupted attempt, after the resume point
    data = run.batches()
    bar = tqdm(total=cfg.max_train_steps, initial=progress.global_step, desc="Training", disable=not progress_bar)
    losses = StepLosses(cfg.loss_read_steps)

    def read_losses():
        """Log every step since the last read (one transfer); a NaN/inf ends the run at the step it appeared."""
        rows, diverged_at = losses.read()
        for logged_step, values in rows:
            if diverged_at is not None and logged_step >= diverged_at:
                raise _Diverged(diverged_at)
            tracker.log(values, logged_step)
        if rows:
            bar.set_postfix(G=f"{rows[-1][1]['loss/G_total']:.3f}", D=f"{rows[-1][1]['loss/D']:.3f}")

    try:
        while progress.global_step < cfg.max_train_steps:
            step = progress.global_step + 1
            faults.fire("step", step, run.output_dir)
            run.apply_schedule(step)
            log_grads = cfg.log_grad_steps > 0 and step % cfg.log_grad_steps == 0
            losses.add(step, run.train_step(data, log_grads))
            progress.global_step = step
            bar.update(1)
            final = step == cfg.max_train_steps
            validating = run.validator is not None and (step % cfg.validation_steps == 0 or final)
            saving = step % cfg.checkpointing_steps == 0
            logging_images = cfg.log_image_steps > 0 and step % cfg.log_image_steps == 0
            if losses.due(step) or validating or saving or logging_images:
                read_losses()  # before a round, a checkpoint or images: a diverged run must not reach them
            if logging_images:
                tracker.log_images({"train/LQ|pred|GT": _image_grid(run.last_batch)}, step)
            result = None
            if validating:
                result, weights = run.validate(final)
                progress.rounds.append({"step": step, "metrics": result.metrics})
                tracker.log(result.metrics, step)
                if best_round(progress.rounds) is progress.rounds[-1]:  # a new best (a tie keeps the earlier)
                    best = progress.rounds[-1]
                    weights_paths["best"] = run.export_weights(weights, BEST_WEIGHTS, best)
                if final:
                    weights_paths["final"] = run.export_weights(weights, FINAL_WEIGHTS, progress.rounds[-1])
                    result.write_csv(os.path.join(run.output_dir, "val_per_image.csv"))
                    result.save_crops(os.path.join(run.output_dir, VAL_IMAGES))
                    tracker.log_images({f"val/{t}": g for t, g in result.grids.items()}, step,
                                       caption="LQ | restored | GT")
                bar.write(f"step {step}: Final_Score {result.metrics[FINAL_SCORE]:.4f} "
                          f"(PSNR {result.metrics['val/PSNR']:.3f}, SSIM {result.metrics['val/SSIM']:.4f}, "
                          f"LPIPS {result.metrics['val/LPIPS']:.4f})")
            if final and run.validator is None:  # no validation set: the final weights, unscored
                weights_paths["final"] = run.export_weights(run.averaged_weights(), FINAL_WEIGHTS, {"step": step})
            # Checkpoint after validation so the saved history includes this step's round.
            saved = run.save_checkpoint() if saving else None
            if final:
                # Before the last report: a caller may end the process as soon as it has the result.
                tracker.finish("success")
            if result is not None and report is not None:
                tracker.flush()  # the round on disk first: a caller may end the process when it has the result
                report({**result.metrics, "step": step}, saved)
    except StopTraining:
        stopped_at = progress.global_step
        status = "completed" if stopped_at >= cfg.max_train_steps else f"stopped early at step {stopped_at}"
    except _Diverged as exc:
        status = str(exc)
        logger.warning("Training %s: a loss became NaN/inf; lower the learning rates or loss weights.", status)
    except torch.OutOfMemoryError:
        status = f"out of memory at step {progress.global_step + 1}"
        logger.warning("Training ran %s: %s", status, OOM_ADVICE)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except BaseException:
        tracker.finish("crashed")
        bar.close()
        raise
    bar.close()
    tracker.finish("success" if status == "completed" or status.startswith("stopped") else "crashed")
    if best is not None and weights_paths.get("best") is None and os.path.exists(best_path):
        # Written by a round that an interrupted attempt ran past the resume point and this attempt did not
        # reach again: it is not this run's best round, so it must not pass for it.
        logger.warning("Removed %s: it held step %s of an interrupted attempt, not the best round (step %d), "
                       "whose weights that attempt had overwritten.", best_path, ckpt.weights_step(best_path),
                       best["step"])
        for path in (best_path, ckpt.weights_info_path(best_path)):
            if os.path.exists(path):
                os.remove(path)
    return RunSummary(status=status, steps=progress.global_step, rounds=list(progress.rounds), best_round=best,
                      output_dir=run.output_dir, weights=weights_paths, skipped_images=progress.skipped_images,
                      seconds=time.time() - started)
