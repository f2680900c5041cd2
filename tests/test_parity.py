"""The training step against the users' trainer (HYPIR, Anduin9527 fork), aspect by aspect; see PARITY.md.

Each test states the reference's behaviour and checks ours against it: from first principles (a
closed form, a re-derivation) or, where vision-aided-loss is installed, against the package's code.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, tiny_overrides
from torch import nn

from hypir_core.config import load_config
from hypir_core.discriminator import BlurPool, Discriminator, MultiLevelHeads, _ConvNextFeatures
from hypir_core.ema import LoraEMA
from hypir_core.losses import GeneratorLoss
from hypir_core.models import OneStepGenerator, add_lora, load_sd2

TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny-model training run, set up but not trained (tests drive its steps)."""
    from hypir_core.trainer import _Run

    cfg = load_config(TINY, tiny_overrides(tmp_path_factory.mktemp("parity") / "run"))
    return _Run(cfg, progress_bar=False)


def _tagged_batches(run):
    """The run's batches, each tagged with its position in the stream; the tags also count consumption."""
    for index, batch in enumerate(run.batches()):
        batch["tag"] = index
        yield batch


def _spy_steps(run, monkeypatch):
    seen = {"G": [], "D": [], "lora_at_D": [], "lora_after_G": []}
    prepare, g_step, d_step, forward = (run.prepare_micro_batch, run.generator_step, run.discriminator_step,
                                        run.generator.forward)
    monkeypatch.setattr(run, "prepare_micro_batch", lambda batch: {**prepare(batch), "tag": batch["tag"]})

    def generator_step(micro, log_grads):
        seen["G"].append([b["tag"] for b in micro])
        logs = g_step(micro, log_grads)
        seen["lora_after_G"].append([p.detach().clone() for p in run.lora_params])
        return logs

    def discriminator_step(micro):
        seen["D"].append([b["tag"] for b in micro])
        return d_step(micro)

    def generator_forward(*args):
        if not torch.is_grad_enabled():  # D's own generator pass
            seen["lora_at_D"].append([p.detach().clone() for p in run.lora_params])
        return forward(*args)

    monkeypatch.setattr(run, "generator_step", generator_step)
    monkeypatch.setattr(run, "discriminator_step", discriminator_step)
    monkeypatch.setattr(run.generator, "forward", generator_forward)
    return seen


# ---- G/D order and batches (reference: trainer/base.py run(), lines 649-685) ----

@pytest.mark.parametrize("accum", [1, 2])
def test_global_step_is_G_on_a_batch_then_D_on_the_next(run, monkeypatch, accum):
    monkeypatch.setattr(run, "cfg", replace(run.cfg, gradient_accumulation_steps=accum))
    seen = _spy_steps(run, monkeypatch)
    data = _tagged_batches(run)
    for _ in range(2):
        run.train_step(data, log_grads=False)
    first = list(range(4 * accum))
    assert seen["G"] == [first[:accum], first[2 * accum:3 * accum]]
    assert seen["D"] == [first[accum:2 * accum], first[3 * accum:]]
    assert next(data)["tag"] == 4 * accum, "one global step consumes 2 x gradient_accumulation_steps batches"
    # D's fakes come from the generator after this step's G update.
    assert len(seen["lora_at_D"]) == 2 * accum
    for step in range(2):
        for at_d in seen["lora_at_D"][step * accum:(step + 1) * accum]:
            assert all(torch.equal(a, b) for a, b in zip(at_d, seen["lora_after_G"][step]))


# ---- EMA (reference: utils/ema.py, updated after each G step, base.py lines 671-674) ----

def test_ema_after_n_generator_steps_is_the_closed_form(run, monkeypatch):
    decay = 0.9
    monkeypatch.setattr(run, "ema", LoraEMA(run.lora_params, decay))
    start = [p.detach().double().clone() for p in run.lora_params]
    seen = _spy_steps(run, monkeypatch)
    data = _tagged_batches(run)
    steps = 3
    for _ in range(steps):
        run.train_step(data, log_grads=False)
    # decay**n * w_0 + (1 - decay) * sum_k decay**(n - k) * w_k, w_k the weights after the k-th G step
    for index, average in enumerate(run.ema.shadow):
        expected = decay ** steps * start[index]
        for k, weights in enumerate(seen["lora_after_G"], start=1):
            expected = expected + (1 - decay) * decay ** (steps - k) * weights[index].double()
        assert torch.allclose(average.double(), expected, rtol=0, atol=1e-6)
    assert run.ema.num_updates == steps


def test_ema_decay_is_constant_from_the_initial_weights_unless_warmup():
    weights = [nn.Parameter(torch.zeros(5))]
    ema = LoraEMA(weights, decay=0.999)
    with torch.no_grad():
        weights[0].fill_(1.0)
    for _ in range(500):
        ema.update(weights)
    # The initial weights (0) keep weight decay**500 = 0.606: validation at step 500 scores mostly them.
    assert ema.shadow[0] == pytest.approx(torch.full((5,), 1 - 0.999 ** 500), abs=1e-5)
    assert ema.decay_at(1) == ema.decay_at(10_000) == 0.999
    warm = LoraEMA(weights, decay=0.999, warmup=True)  # diffusers EMAModel's ramp
    assert [warm.decay_at(k) for k in (1, 2, 3)] == [0.0, 2 / 11, 3 / 12]
    assert warm.decay_at(100_000) == 0.999


def test_ema_update_rounds_as_the_reference_expression():
    torch.manual_seed(0)
    weights, decay = [nn.Parameter(torch.randn(1000))], 0.999
    reference = weights[0].detach().clone()
    ema = LoraEMA(weights, decay)
    for _ in range(5):
        with torch.no_grad():
            weights[0].add_(torch.randn(1000) * 0.01)
        ema.update(weights)
        reference = decay * reference + (1 - decay) * weights[0].clone().detach()  # HYPIR utils/ema.py line 35
    assert torch.equal(ema.shadow[0], reference)


# ---- discriminator heads and loss (reference: model/D.py; vision_aided_loss blurpool.py, cv_losses.py) ----

def _blur_by_hand(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Each output pixel: the zero-padded input's 4x4 window weighted by [1,3,3,1] x [1,3,3,1] / 64."""
    taps = [1.0, 3.0, 3.0, 1.0]
    padded = F.pad(x.double(), [pad] * 4)
    height, width = padded.shape[-2] - 3, padded.shape[-1] - 3
    out = torch.zeros(*x.shape[:2], height, width, dtype=torch.float64)
    for a in range(4):
        for b in range(4):
            out += taps[a] * taps[b] / 64 * padded[..., a:a + height, b:b + width]
    return out


@pytest.mark.parametrize("pad_off", [0, 1])
def test_blurpool_is_the_binomial_blur_with_zero_padding(pad_off):
    x = torch.randn(2, 3, 11, 9)
    out = BlurPool(3, pad_off=pad_off)(x)
    assert out.shape[-2:] == ((10, 8) if pad_off == 0 else (12, 10))
    assert torch.allclose(out.double(), _blur_by_hand(x, 1 + pad_off), atol=1e-6)


def _normalized(module: nn.Module) -> torch.Tensor:
    """A spectral-norm layer's weight in eval mode: weight_orig / (u^T W v), from its stored u and v."""
    w = module.weight_orig.detach().double()
    sigma = module.weight_u.double() @ w.reshape(w.shape[0], -1) @ module.weight_v.double()
    return w / sigma


def test_map_head_is_blur_conv3s2_lrelu_blur_conv1s2():
    torch.manual_seed(0)
    heads = MultiLevelHeads([8], pooled_dim=6, width=5).eval()
    feat, pooled = torch.randn(2, 8, 16, 16), torch.randn(2, 6)
    maps, logit = heads([feat, pooled])
    conv3, conv1 = heads.decoder[0][1], heads.decoder[0][4]
    hidden = F.conv2d(_blur_by_hand(feat, 2), _normalized(conv3), conv3.bias.double(), stride=2)
    hidden = F.leaky_relu(hidden, 0.2)
    expected = F.conv2d(_blur_by_hand(hidden, 1), _normalized(conv1), conv1.bias.double(), stride=2).squeeze(1)
    assert maps.shape == (2, 4, 4) and torch.allclose(maps.double(), expected, atol=1e-5)
    lin, out = heads.decoder[1][0], heads.out
    hidden = F.leaky_relu(pooled.double() @ _normalized(lin).T + lin.bias.double(), 0.2)
    assert torch.allclose(logit.double(), hidden @ _normalized(out).T + out.bias.double(), atol=1e-5)


def test_tiny_backbone_logits_are_32_16_8_for_a_512_input():
    disc = Discriminator("tiny", pretrained=False)
    logits = disc.logits(torch.zeros(1, 3, 512, 512))
    assert [tuple(level.shape) for level in logits] == [(1, 32, 32), (1, 16, 16), (1, 8, 8), (1, 1)]


def test_convnext_xxlarge_logits_are_32_16_8_for_a_512_input():
    """HYPIR's backbone architecture (timm convnext_xxlarge, OpenCLIP's trunk) on the meta device: shapes only."""
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        trunk = timm.create_model("convnext_xxlarge", pretrained=False, num_classes=0)
        features = _ConvNextFeatures(trunk, nn.Linear(trunk.num_features, 1024), pooled_dim=1024)
        heads = MultiLevelHeads(features.channels, features.pooled_dim, width=512)
        feats = features(torch.empty(2, 3, 512, 512))
        logits = heads(feats)
    assert features.channels == [384, 768, 1536]  # HYPIR's MultiLevelDConv in_ch1
    assert [tuple(f.shape[-2:]) for f in feats[:3]] == [(128, 128), (64, 64), (32, 32)]
    assert [tuple(level.shape) for level in logits] == [(2, 32, 32), (2, 16, 16), (2, 8, 8), (2, 1)]


def test_discriminator_targets_are_08_real_and_0_fake_and_G_aims_at_08():
    torch.manual_seed(0)
    disc = Discriminator("tiny", pretrained=False).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    logits = [level.double() for level in disc.logits(x)]

    def bce(target):  # binary cross-entropy with logits, written out; mean per level, levels summed
        return sum((F.softplus(level) - target * level).mean() for level in logits)

    assert disc.loss(x, real=True)[0].item() == pytest.approx(bce(0.8).item(), rel=1e-5)
    assert disc.loss(x, real=False)[0].item() == pytest.approx(bce(0.0).item(), rel=1e-5)
    adversarial = GeneratorLoss({"disc": 0.5})(x, x, disc)["disc"]
    assert adversarial.item() == pytest.approx(0.5 * bce(0.8).item(), rel=1e-5)


def _vision_aided_modules():
    """blurpool.py and cv_losses.py of an installed vision-aided-loss, loaded by path.

    The package's __init__ imports gdown and its bundled CLIP, which need pkg_resources (gone from
    setuptools >= 81); these two files import only torch and numpy.
    """
    spec = importlib.util.find_spec("vision_aided_loss")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vision-aided-loss is not installed (pip install --no-deps vision-aided-loss==0.1.0)")
    folder = Path(list(spec.submodule_search_locations)[0])
    modules = []
    for name in ("blurpool", "cv_losses"):
        file_spec = importlib.util.spec_from_file_location(f"_vision_aided_{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        modules.append(module)
    return modules


def test_heads_and_loss_equal_vision_aided_loss_on_the_same_weights():
    blurpool, cv_losses = _vision_aided_modules()
    from torch.nn.utils import spectral_norm  # what vision_aided_loss.cv_discriminator re-exports

    channels, pooled_dim, width = [8, 12, 16], 10, 6
    act = nn.LeakyReLU(0.2, inplace=True)
    # HYPIR model/D.py MultiLevelDConv(level=4, down=2), from the package's parts.
    reference = nn.Module()
    reference.decoder = nn.ModuleList(
        nn.Sequential(blurpool.BlurPool(ch, pad_type="zero", stride=1, pad_off=1),
                      spectral_norm(nn.Conv2d(ch, width, kernel_size=3, stride=2, padding=0)), act,
                      blurpool.BlurPool(width, pad_type="zero", stride=1),
                      spectral_norm(nn.Conv2d(width, 1, kernel_size=1, stride=2)))
        for ch in channels)
    reference.decoder.append(nn.Sequential(spectral_norm(nn.Linear(pooled_dim, width)), act))
    reference.out = spectral_norm(nn.Linear(width, 1))
    ours = MultiLevelHeads(channels, pooled_dim, width)
    reference.load_state_dict(ours.state_dict(), strict=True)  # same modules, names and buffers
    feats = [torch.randn(2, ch, 32 // 2 ** i, 32 // 2 ** i) for i, ch in enumerate(channels)]
    feats.append(torch.randn(2, pooled_dim))
    loss_fn = cv_losses.multilevel_loss(alpha=0.8)
    for _ in range(2):  # train mode: both run a power iteration per forward
        ref_logits = [reference.decoder[i](f).squeeze(1) for i, f in enumerate(feats[:-1])]
        ref_logits.append(reference.out(reference.decoder[-1](feats[-1].float())))
        our_logits = ours(feats)
        assert all(torch.equal(a, b) for a, b in zip(our_logits, ref_logits))
    disc = Discriminator("tiny", pretrained=False)
    disc.logits = lambda x: our_logits
    for real in (True, False):
        assert torch.equal(disc.loss(None, real=real)[0], loss_fn(ref_logits, for_real=real).mean())
    assert torch.equal(disc.loss(None, real=True)[0], loss_fn(ref_logits, for_G=True).mean())


# ---- D mode during the G step (reference: base.py line 570 eval, line 622 train) ----

def test_generator_step_runs_no_power_iteration_and_gives_D_no_gradient(run, monkeypatch):
    monkeypatch.setattr(run, "ema", None)
    data = _tagged_batches(run)
    vectors = lambda: [b.clone() for n, b in run.D.heads.named_buffers() if n.endswith("weight_u")]  # noqa: E731
    before = vectors()
    run.generator_step([run.prepare_micro_batch(next(data))], log_grads=False)
    assert all(torch.equal(a, b) for a, b in zip(before, vectors()))
    assert all(p.grad is None for p in run.D_params)
    run.discriminator_step([run.prepare_micro_batch(next(data))])
    assert not all(torch.equal(a, b) for a, b in zip(before, vectors()))


# ---- optimizer defaults (reference: base.py lines 287-306, AdamW(**opt_kwargs)) ----

def test_adamw_weight_decay_defaults_to_torchs_when_opt_kwargs_omit_it(run):
    cfg = load_config(ROOT / "configs" / "sd2_finetune_5k.yaml")  # the users' config names only betas
    torch_default = inspect.signature(torch.optim.AdamW).parameters["weight_decay"].default
    assert cfg.opt_kwargs.weight_decay == torch_default == 0.01
    assert run.opt_G.param_groups[0]["weight_decay"] == run.cfg.opt_kwargs.weight_decay  # tiny.yaml's 1e-4
    assert run.opt_G.param_groups[0]["eps"] == inspect.signature(torch.optim.AdamW).parameters["eps"].default


# ---- generator forward, LoRA and precision (reference: trainer/sd2.py, base.py lines 568-603) ----

@pytest.fixture(scope="module")
def tiny_generator():
    cfg = load_config(TINY)
    parts = load_sd2(cfg.base_model_path)
    params = add_lora(parts.unet, cfg.lora_rank, cfg.lora_modules)
    return OneStepGenerator(parts, cfg.model_t, cfg.coeff_t), params, cfg


def test_x0_is_ddpm_schedulers_pred_original_sample(tiny_generator):
    generator, _, cfg = tiny_generator
    torch.manual_seed(0)
    eps, z = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    expected = generator.scheduler.step(eps, cfg.coeff_t, z).pred_original_sample
    assert torch.equal(generator.pred_x0(eps, z), expected)


def test_lora_is_peft_gaussian_alpha_equal_rank_in_fp32(tiny_generator):
    generator, params, cfg = tiny_generator
    config = generator.unet.peft_config["default"]
    assert (config.r, config.lora_alpha, config.init_lora_weights) == (cfg.lora_rank, cfg.lora_rank, "gaussian")
    assert set(config.target_modules) == set(cfg.lora_modules) and all(p.dtype == torch.float32 for p in params)


def test_only_the_unet_runs_under_autocast(tiny_generator, monkeypatch):
    generator, _, _ = tiny_generator
    seen = {}
    for name, module in (("unet", generator.unet), ("vae_decoder", generator.vae.decoder)):
        module.register_forward_pre_hook(
            lambda _m, _a, name=name: seen.__setitem__(name, torch.is_autocast_enabled("cpu")))
    monkeypatch.setattr(generator, "unet_autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    z = torch.randn(1, 4, 8, 8)
    out = generator(z, generator.encode_prompt([""]))
    assert seen == {"unet": True, "vae_decoder": False} and out.dtype == torch.float32


def test_lpips_loss_is_fp32_outside_autocast():
    loss_fn = GeneratorLoss({"lpips": 1.0}, lpips_weights="random")
    torch.manual_seed(0)
    pred, gt = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    plain = loss_fn(pred, gt)["lpips"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = loss_fn(pred, gt)["lpips"]
        bf16 = loss_fn.lpips(pred * 0.5 + 0.5, gt * 0.5 + 0.5).mean()  # what an autocast VGG would give
    assert torch.equal(plain, inside) and plain.dtype == torch.float32
    assert not math.isclose(plain.item(), bf16.item(), rel_tol=1e-6)
