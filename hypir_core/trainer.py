"""HYPIR training as a function: ``train(config, report) -> RunSummary``.

Read top to bottom: set up models and data, then loop over global steps (one generator step and
one discriminator step each), validating every ``validation_steps`` and reporting each round to
the caller's ``report(metrics, checkpoint_dir)``. Nothing here knows about Ray or Optuna.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from hypir_core import checkpoint as ckpt
from hypir_core.config import Config, config_to_dict
from hypir_core.data import build_train_dataset, scan_val_set, train_collate
from hypir_core.discriminator import Discriminator
from hypir_core.losses import TERMS, GeneratorLoss
from hypir_core.metrics import QualityMetrics
from hypir_core.models import OneStepGenerator, add_lora, load_lora_weights, load_sd2, lora_state_dict
from hypir_core.tracking import make_tracker
from hypir_core.validation import Validator

logger = logging.getLogger("hypir_core")
Report = Callable[[dict, "str | None"], None]
FINAL_WEIGHTS, BEST_WEIGHTS = "HYPIR_sd2_final.pth", "HYPIR_sd2_best.pth"


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


def _best(rounds: list[dict]) -> dict | None:
    return max(rounds, key=lambda r: r["metrics"]["val/Final_Score"]) if rounds else None


class _Run:
    """The state of one training run (models, optimizers, data) and its step functions."""

    def __init__(self, cfg: Config, progress_bar: bool, disc_pretrained: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg, self.progress_bar, self.disc_pretrained = cfg, progress_bar, disc_pretrained
        self.output_dir = cfg.output_dir
        os.makedirs(self.output_dir, exist_ok=True)
        set_seed(cfg.seed)
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, project_dir=self.output_dir)
        self.device = self.accelerator.device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.accelerator.mixed_precision,
                                                                          torch.float32)
        # Data first: a bad path or layout fails in seconds, before any weights load.
        self.dataset = build_train_dataset(cfg.data_config.train, skip_bad_images=cfg.skip_bad_images)
        val_pairs = scan_val_set(cfg.data_config.val)
        self.init_generator()
        self.init_discriminator()
        self.init_optimizers()
        self.loss_fn = GeneratorLoss.from_config(cfg, device=self.device)
        self.validator = Validator(cfg.data_config.val, self.generator,
                                   QualityMetrics(self.device, cfg.lpips_weights), self.device,
                                   autocast=self.accelerator.autocast, pairs=val_pairs)
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
        if cfg.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        self.lora_params = add_lora(parts.unet, cfg.lora_rank, cfg.lora_modules)
        if cfg.init_lora_from:
            load_lora_weights(parts.unet, cfg.init_lora_from)
        coeff_t = cfg.coeff_t if cfg.coeff_t is not None else cfg.model_t
        self.generator = OneStepGenerator(parts, cfg.model_t, coeff_t)
        self.lora_names = [n for n, p in parts.unet.named_parameters() if p.requires_grad]
        self.ema = None
        if cfg.use_ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.lora_params, decay=cfg.ema_decay)

    def init_discriminator(self):
        self.D = Discriminator(self.cfg.disc_backbone, pretrained=self.disc_pretrained).to(self.device)
        self.D.backbone.to(self.dtype)
        self.D_params = list(self.D.heads.parameters())

    def init_optimizers(self):
        cfg, kwargs = self.cfg, config_to_dict(self.cfg.opt_kwargs)
        kwargs["betas"] = tuple(kwargs["betas"])
        opt_G = torch.optim.AdamW(self.lora_params, lr=cfg.lr_G, **kwargs)
        opt_D = torch.optim.AdamW(self.D_params, lr=cfg.lr_D, **kwargs)
        self.opt_G, self.opt_D = self.accelerator.prepare(opt_G, opt_D)

    # ---- data ----------------------------------------------------------------------------------
    def batches(self):
        """Endless batches in a seeded order per epoch, starting where the progress says."""
        cfg = self.cfg.data_config.train
        while True:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(
                self.cfg.seed * 100_003 + self.progress.epoch)).tolist()
            usable = len(order) // cfg.batch_size * cfg.batch_size
            batch_indices = [order[i:i + cfg.batch_size] for i in range(0, usable, cfg.batch_size)]
            if not batch_indices:
                from hypir_core.errors import DataError

                raise DataError(f"The training set has {len(order)} pairs, fewer than one batch of "
                                f"{cfg.batch_size}; lower data_config.train.batch_size or add data.")
            self.dataset.set_epoch(self.progress.epoch, self.cfg.seed)
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=batch_indices[self.progress.batches_in_epoch:],
                num_workers=cfg.dataloader_num_workers, collate_fn=train_collate,
                pin_memory=self.device.type == "cuda", persistent_workers=False,
                generator=torch.Generator().manual_seed(self.cfg.seed + self.progress.epoch))
            for batch in loader:
                self.progress.batches_in_epoch += 1
                self.progress.skipped_images += batch.get("skipped", 0)
                yield batch
            self.progress.epoch += 1
            self.progress.batches_in_epoch = 0

    def text_embed(self, prompts: list[str]) -> torch.Tensor:
        for prompt in set(prompts) - set(self.prompt_cache):
            self.prompt_cache[prompt] = self.generator.encode_prompt([prompt])[0]
        return torch.stack([self.prompt_cache[p] for p in prompts])

    # ---- one global step -------------------------------------------------------------------------
    def generator_step(self, micro_batches, log_grads: bool) -> dict[str, float]:
        """One G update over the micro-batches; returns the mean of each loss term."""
        self.D.heads.requires_grad_(False)
        sums: dict[str, float] = {}
        accum = len(micro_batches)
        for index, batch in enumerate(micro_batches):
            with self.accelerator.autocast():
                pred = self.generator(batch["z_lq"], batch["text"])
                terms = self.loss_fn(pred, batch["gt"], self.D)
            total = sum(terms.values())
            if not torch.isfinite(total):
                raise _Diverged(self.progress.global_step + 1)
            if log_grads and index == 0:
                sums.update(self.term_grad_norms(terms))
            self.accelerator.backward(total / accum)
            for term, value in terms.items():
                key = "loss/" + TERMS[term][1]
                sums[key] = sums.get(key, 0.0) + value.item() / accum
            sums["loss/G_total"] = sums.get("loss/G_total", 0.0) + total.item() / accum
            batch["pred"] = pred.detach()
        self.accelerator.clip_grad_norm_(self.lora_params, self.cfg.max_grad_norm)
        self.opt_G.step()
        self.opt_G.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.lora_params)
        return sums

    def term_grad_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """grad_norm/<module>_<term>: how hard each loss term pulls on the logged modules' LoRA weights."""
        norms = {}
        for module in self.cfg.log_grad_modules:
            params = [p for n, p in zip(self.lora_names, self.lora_params) if f".{module}." in f".{n}"]
            if not params:
                continue
            for term, value in terms.items():
                grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                norm = math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads if g is not None))
                norms[f"grad_norm/{module}_{term}"] = norm
        return norms

    def discriminator_step(self, micro_batches) -> dict[str, float]:
        """One D update: real GT against the generator's output after this step's G update."""
        self.D.heads.requires_grad_(True)
        sums = {"loss/D": 0.0, "loss/D_logits_real": 0.0, "loss/D_logits_fake": 0.0}
        accum = len(micro_batches)
        for batch in micro_batches:
            with torch.no_grad(), self.accelerator.autocast():
                fake = self.generator(batch["z_lq"], batch["text"])
            with self.accelerator.autocast():
                loss_real, real_logits = self.D.loss(batch["gt"], real=True)
                loss_fake, fake_logits = self.D.loss(fake.detach(), real=False)
            loss = loss_real + loss_fake
            if not torch.isfinite(loss):
                raise _Diverged(self.progress.global_step + 1)
            self.accelerator.backward(loss / accum)
            sums["loss/D"] += loss.item() / accum
            sums["loss/D_logits_real"] += float(np.mean([level.mean().item() for level in real_logits])) / accum
            sums["loss/D_logits_fake"] += float(np.mean([level.mean().item() for level in fake_logits])) / accum
        self.accelerator.clip_grad_norm_(self.D_params, self.cfg.max_grad_norm)
        self.opt_D.step()
        self.opt_D.zero_grad(set_to_none=True)
        return sums

    def prepare_micro_batch(self, batch) -> dict:
        lq = (batch["LQ"].to(self.device) * 2 - 1).float()
        gt = (batch["GT"].to(self.device) * 2 - 1).float()
        with torch.no_grad():  # a posterior sample, as HYPIR trains; its own seeded RNG survives resume
            z = self.generator.encode_lq(lq, sample=True, generator=self.progress.posterior_rng)
        return {"lq": lq, "gt": gt, "z_lq": z, "text": self.text_embed(list(batch["txt"]))}

    # ---- validation, checkpoints, weights --------------------------------------------------------
    def validate(self, final: bool):
        if self.ema is not None:
            self.ema.store(self.lora_params)
            self.ema.copy_to(self.lora_params)
        try:
            result = self.validator.run(with_details=final, progress=self.progress_bar)
            weights = lora_state_dict(self.generator.unet)
        finally:
            if self.ema is not None:
                self.ema.restore(self.lora_params)
        return result, weights

    def save_checkpoint(self) -> str:
        path = os.path.join(self.output_dir, "checkpoints", f"checkpoint-{self.progress.global_step}")
        self.accelerator.save_state(path)
        torch.save(lora_state_dict(self.generator.unet), os.path.join(path, ckpt.LORA_FILE))
        torch.save(self.D.trainable_state_dict(), os.path.join(path, ckpt.DISC_FILE))
        ckpt.rotate(self.output_dir, self.cfg.checkpoints_total_limit)
        return path

    def load_checkpoint(self, path: str) -> None:
        self.accelerator.load_state(path)
        load_lora_weights(self.generator.unet, os.path.join(path, ckpt.LORA_FILE))
        self.D.load_state_dict(torch.load(os.path.join(path, ckpt.DISC_FILE), weights_only=True), strict=False)
        if self.ema is not None and not self.cfg.resume_ema:
            # resume_ema: false restarts the average from the resumed weights, as HYPIR does.
            self.ema.shadow_params = [p.detach().clone() for p in self.lora_params]
            self.ema.optimization_step = 0

    def export_weights(self, weights: dict, name: str) -> str:
        path = os.path.join(self.output_dir, name)
        torch.save(weights, path + ".tmp")
        os.replace(path + ".tmp", path)
        return path


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

    ``report`` may raise ``StopTraining`` to end the run after that round (status ``stopped early at
    step N``, or ``completed`` at the last step).
    Returns how the run ended. A NaN/inf loss ends it with status ``diverged at step N``. Weights in
    HYPIR format (the UNet's LoRA keys) are written for the best and the final validation round.
    ``group`` and ``tracker_config`` (merged into the logged config) go to the experiment tracker,
    e.g. a sweep's name and the trial's sampled parameters.
    """
    cfg, started = config, time.time()
    run = _Run(cfg, progress_bar)
    resume = ckpt.resolve_resume(cfg.resume_from_checkpoint, run.output_dir)
    if resume:
        run.load_checkpoint(resume)
        logger.info("Resumed from %s at step %d", resume, run.progress.global_step)
    tracker = make_tracker(cfg.report_to, cfg.swanlab_project, cfg.name,
                           os.path.join(run.output_dir, cfg.logging_dir),
                           {**config_to_dict(cfg), **(tracker_config or {})}, group=group, mode=cfg.swanlab_mode)
    progress, weights_paths, status = run.progress, {}, "completed"
    best = _best(progress.rounds)
    if progress.rounds and os.path.exists(os.path.join(run.output_dir, BEST_WEIGHTS)):
        weights_paths["best"] = os.path.join(run.output_dir, BEST_WEIGHTS)
    data = run.batches()
    bar = tqdm(total=cfg.max_train_steps, initial=progress.global_step, desc="Training", disable=not progress_bar)
    last_checkpoint = resume
    try:
        while progress.global_step < cfg.max_train_steps:
            step = progress.global_step + 1
            micro = [run.prepare_micro_batch(next(data)) for _ in range(cfg.gradient_accumulation_steps)]
            log_grads = cfg.log_grad_steps > 0 and step % cfg.log_grad_steps == 0
            logs = run.generator_step(micro, log_grads)
            logs.update(run.discriminator_step(micro))
            progress.global_step = step
            bar.update(1)
            bar.set_postfix(G=f"{logs['loss/G_total']:.3f}", D=f"{logs['loss/D']:.3f}")
            tracker.log(logs, step)
            if cfg.log_image_steps > 0 and step % cfg.log_image_steps == 0:
                tracker.log_images({"train/LQ|pred|GT": _image_grid(micro[0])}, step)
            final = step == cfg.max_train_steps
            result = None
            if step % cfg.validation_steps == 0 or final:
                result, weights = run.validate(final)
                progress.rounds.append({"step": step, "metrics": result.metrics})
                tracker.log(result.metrics, step)
                if best is None or result.metrics["val/Final_Score"] > best["metrics"]["val/Final_Score"]:
                    best = progress.rounds[-1]
                    weights_paths["best"] = run.export_weights(weights, BEST_WEIGHTS)
                if final:
                    weights_paths["final"] = run.export_weights(weights, FINAL_WEIGHTS)
                    result.write_csv(os.path.join(run.output_dir, "val_per_image.csv"))
                    tracker.log_images({f"val/{t}": g for t, g in result.grids.items()}, step,
                                       caption="LQ | restored | GT")
                bar.write(f"step {step}: Final_Score {result.metrics['val/Final_Score']:.4f} "
                          f"(PSNR {result.metrics['val/PSNR']:.3f}, SSIM {result.metrics['val/SSIM']:.4f}, "
                          f"LPIPS {result.metrics['val/LPIPS']:.4f})")
            # Checkpoint after validation so the saved history includes this step's round.
            if step % cfg.checkpointing_steps == 0:
                last_checkpoint = run.save_checkpoint()
            if final:
                # Before the last report: a caller may end the process as soon as it has the result.
                tracker.finish("success")
            if result is not None and report is not None:
                tracker.flush()  # the round on disk first: a caller may end the process when it has the result
                report({**result.metrics, "step": step}, last_checkpoint)
    except StopTraining:
        stopped_at = progress.global_step
        status = "completed" if stopped_at >= cfg.max_train_steps else f"stopped early at step {stopped_at}"
    except _Diverged as exc:
        status = str(exc)
        logger.warning("Training %s: a loss became NaN/inf; lower the learning rates or loss weights.", status)
    except BaseException:
        tracker.finish("crashed")
        bar.close()
        raise
    bar.close()
    tracker.finish("crashed" if status.startswith("diverged") else "success")
    return RunSummary(status=status, steps=progress.global_step, rounds=list(progress.rounds), best_round=best,
                      output_dir=run.output_dir, weights=weights_paths, skipped_images=progress.skipped_images,
                      seconds=time.time() - started)
