"""HYPIR's generator loss: L2 + L1 + LPIPS-VGG + (1 - SSIM-Y) + GAN, each weighted, each with gradient.

A weight of 0 skips the term's compute (and, for LPIPS/SSIM, building its network). LPIPS and SSIM
come from pyiqa built with ``as_loss=True`` so they carry gradient (the users' trainer built SSIM as a
metric, so ``lambda_ssim`` changed nothing).

Precision as in HYPIR's ``optimize_generator``: L2, L1, LPIPS (and our SSIM) in float32 outside any
autocast; only the adversarial term runs under the caller's ``disc_autocast`` (HYPIR's discriminator
is an accelerate-prepared module, so its forward autocasts).

The terms' names, weight keys and logged names are in ``loss_terms`` (TERMS, re-exported here).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from hypir_core.loss_terms import LOSS_WEIGHTS, TERMS, weights_of
from hypir_core.metrics import create_lpips, create_ssim_y

__all__ = ["LOSS_WEIGHTS", "TERMS", "GeneratorLoss", "term_grad_norms", "weights_of"]


class GeneratorLoss(nn.Module):
    """Weighted generator loss; ``forward`` returns the weighted terms, keyed by TERMS names."""

    def __init__(self, weights: dict[str, float], device="cpu", lpips_weights: str = "pretrained"):
        super().__init__()
        self.device, self.lpips_weights = device, lpips_weights
        self.lpips = self.ssim = None
        self.set_weights(weights)

    def set_weights(self, weights: dict[str, float]) -> None:
        """Use these weights from now on (a schedule or a PBT exploit changes them mid-run); a term whose
        weight becomes positive gets its network built then."""
        self.weights = {term: float(weights[term]) for term in TERMS if float(weights.get(term, 0.0)) > 0}
        if "lpips" in self.weights and self.lpips is None:
            self.lpips = create_lpips(self.device, as_loss=True, weights=self.lpips_weights)
        if "ssim" in self.weights and self.ssim is None:
            self.ssim = create_ssim_y(self.device, as_loss=True)

    @classmethod
    def from_config(cls, config, device="cpu") -> "GeneratorLoss":
        """Build from a Config's lambda_* keys."""
        return cls(weights_of(config), device=device, lpips_weights=config.lpips_weights)

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, discriminator=None,
                disc_autocast=contextlib.nullcontext) -> dict[str, torch.Tensor]:
        """Weighted terms for prediction and ground truth in [-1, 1]; ``disc`` needs the discriminator."""
        terms: dict[str, torch.Tensor] = {}
        with torch.autocast(pred.device.type, enabled=False):
            pred, gt = pred.float(), gt.float()
            pred01, gt01 = pred * 0.5 + 0.5, gt * 0.5 + 0.5
            if "l2" in self.weights:
                terms["l2"] = F.mse_loss(pred, gt)
            if "l1" in self.weights:
                terms["l1"] = F.l1_loss(pred, gt)
            if "lpips" in self.weights:
                terms["lpips"] = self.lpips(pred01, gt01).mean()
            if "ssim" in self.weights:
                terms["ssim"] = 1.0 - self.ssim(pred01, gt01).mean()
        if "disc" in self.weights:
            with disc_autocast():
                terms["disc"], _ = discriminator.loss(pred, real=True)  # target 0.8, as D's real target
        return {term: value.float() * self.weights[term] for term, value in terms.items()}


def term_grad_norms(terms: dict[str, torch.Tensor], named_params: dict[str, torch.Tensor],
                    modules: list[str]) -> dict[str, torch.Tensor]:
    """``grad_norm/<module>_<term>``: the gradient norm each loss term alone gives the parameters of each module.

    ``named_params`` are the trainable parameters by name; a module matches the names containing
    ``.<module>.``. The norms stay on the device (0-d tensors), read when logged.
    """
    norms = {}
    for module in modules:
        params = [p for name, p in named_params.items() if f".{module}." in f".{name}"]
        if not params:
            continue
        for term, value in terms.items():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            squares = [g.float().pow(2).sum() for g in grads if g is not None]
            norms[f"grad_norm/{module}_{term}"] = (torch.stack(squares).sum().sqrt() if squares
                                                   else torch.zeros((), device=value.device))
    return norms
