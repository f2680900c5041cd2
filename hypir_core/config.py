"""Training config: a YAML file (plus overrides) validated into a tree of frozen sections.

``load_config(path, overrides)``, ``config_from_dict(d, ...)`` and ``config_to_dict(cfg)`` are the API.
Attribute names equal the YAML keys, so ``cfg.data_config.train.batch_size`` reads like the file. Each key
is declared once, with its type, default, allowed values and meaning (``hypir_core.schema``): the
``data_config`` keys in ``hypir_core.config_data`` (the Real-ESRGAN degradation settings of upstream HYPIR's
HQ-only data in ``hypir_core.config_degradation``), the others below. Every mistake is a ``ConfigError``
with one sentence naming the dotted key, the file, the bad value and what is allowed. The rules that join
several keys (loss weights, the schedule, the HQ-only path) are named functions.
"""

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types as at
import yaml
from pydantic import BeforeValidator, WithJsonSchema

from hypir_core import schedule as schedule_rules
from hypir_core.config_data import DATASET_TARGETS, DEGRADATION_TYPES, DataConfig  # noqa: F401 (re-exported)
from hypir_core.config_degradation import check_hq_only
from hypir_core.errors import ConfigError
from hypir_core.loss_terms import LOSS_WEIGHTS  # noqa: F401 (re-exported for specs)
from hypir_core.schema import (Allowed, Choice, Derived, Flag, Int, Nested, Number, Source, Text, Texts, file_keys,
                               key, must, nested, parse_number, read_yaml, refuse, section, show_value, validate)

__all__ = ["Config", "config_from_dict", "config_to_dict", "load_config", "read_yaml", "show_value",
           "validation_rounds"]

DEFAULT_LORA_MODULES = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut",
                        "conv_out", "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
# SwanLab modes: auto = cloud with an API key, else local (swanlab watch) with the dashboard extra, else offline.
SWANLAB_MODES = ("auto", "cloud", "local", "offline")
DISC_BACKBONES = ("openclip_convnext_xxlarge", "timm_convnext_tiny", "timm_convnext_small", "timm_convnext_base",
                  "tiny")
AUTO_FLAG = Annotated[Union[Flag(), Literal["auto"]], Allowed('true, false or "auto"')]
TIMESTEP = "an integer in [0, 999] (the scheduler's 1000 training timesteps: 0..999)"
ROUNDS_OFF = "an integer >= 0 (0 = off)"


@section
class OptKwargs:
    betas: Annotated[list[Annotated[float, at.Interval(ge=0, lt=1), BeforeValidator(parse_number)]],
                     Allowed("a list of 2 numbers in [0, 1), e.g. [0.9, 0.999]"),
                     BeforeValidator(lambda v: must(v, isinstance(v, list) and len(v) == 2))] = key(
        [0.9, 0.999], "AdamW's betas")
    eps: Number(gt=0) = key(1e-8, "AdamW's epsilon")
    weight_decay: Number(ge=0) = key(0.01, "AdamW's weight decay (torch's default, which HYPIR's configs rely on)")


SCHEDULE_SCHEMA = {"type": "array", "items": {"type": "object", "required": ["from_step", "overrides"],
                                              "additionalProperties": False, "properties": {
                                                  "from_step": {"type": "integer", "minimum": 1},
                                                  "overrides": {"type": "object", "minProperties": 1}}}}


def _check_schedule(value: Any) -> list:
    if value is None:
        return []
    problem = schedule_rules.structure_error(value)
    return schedule_rules.normalised(value) if problem is None else refuse(problem)


# ---- the training config ----

@section
class Config:
    """A validated training config; see ``load_config``."""

    data_config: Nested[DataConfig] = nested("training and validation data")
    output_dir: Text(null="") = key(None, "where the run writes (null = results/<config file name>)")
    base_model_type: Choice("sd2") = key("sd2", "the base model family")
    base_model_path: Text(allowed="a non-empty string (a diffusers SD2 folder, a hub id such as "
                                  "stabilityai/stable-diffusion-2-1-base, or demo://tiny-sd2)") = key(
        ..., "a diffusers SD2 folder, a hub id, demo://tiny-sd2 or random://sd2-base (benchmarks)")
    model_t: Int(0, 999, allowed=TIMESTEP) = key(200, "the timestep the UNet is run at (one step)")
    coeff_t: Int(0, 999, allowed=TIMESTEP, null="= model_t") = key(None, "the timestep of the DDPM step to z0")
    lora_rank: Int(ge=1) = key(256, "LoRA rank (and alpha)")
    lora_modules: Texts(allowed="a non-empty list of UNet module names") = key(DEFAULT_LORA_MODULES,
                                                                               "UNet modules given LoRA")
    init_lora_from: Text(null="") = key(None, "start from HYPIR-format LoRA weights, e.g. the released HYPIR_sd2.pth")
    init_from_fork_checkpoint: Text(null="") = key(None, "start from a fork checkpoint-N/ folder: its LoRA, EMA and "
                                                         "discriminator heads (hypir_core/fork.py)")
    disc_backbone: Choice(*DISC_BACKBONES) = key(DISC_BACKBONES[0], "discriminator backbone: HYPIR's OpenCLIP "
                                                                    "ConvNeXt-XXLarge, timm ConvNeXts, tiny (CPU demo)")
    use_ema: Flag() = key(True, "validate and export an EMA of the LoRA weights")
    ema_decay: Number(ge=0, lt=1) = key(0.999, "the EMA's decay")
    ema_warmup: Flag() = key(False, "ramp the decay up from 0 (diffusers' EMAModel) instead of HYPIR's constant one")
    resume_ema: Flag() = key(True, "a resumed run continues the EMA (false: restarts it from the resumed weights)")
    lambda_gan: Number(ge=0) = key(0.5, "weight of the adversarial loss")
    lambda_lpips: Number(ge=0) = key(5.0, "weight of LPIPS (VGG)")
    lambda_l2: Number(ge=0) = key(1.0, "weight of the MSE loss")
    lambda_l1: Number(ge=0) = key(0.0, "weight of the L1 loss")
    lambda_ssim: Number(ge=0) = key(0.0, "weight of 1 - SSIM on the Y channel")
    lr_G: Number(gt=0) = key(1e-5, "learning rate of the LoRA generator")
    lr_D: Number(gt=0) = key(1e-5, "learning rate of the discriminator heads")
    optimizer_type: Choice("adamw", "adam", note=" (both mean AdamW, as in HYPIR)") = key("adamw", "the optimizer")
    opt_kwargs: Nested[OptKwargs] = nested("AdamW's settings (torch's defaults for those left out)")
    mixed_precision: Choice("no", "fp16", "bf16") = key("bf16", "autocast precision on CUDA")
    seed: Int(0, 2**32 - 1) = key(231, "seeds LoRA init, data order and noise: the same seed trains the same run")
    max_train_steps: Int(ge=1) = key(..., "global steps (one generator and one discriminator step each)")
    gradient_accumulation_steps: Int(ge=1) = key(1, "batches summed per optimizer step")
    gradient_checkpointing: AUTO_FLAG = key("auto", "auto: off where the run fits its GPU share without it "
                                                    "(hypir_core/speed.py); true/false force it")
    compile: AUTO_FLAG = key("auto", "torch.compile regions and fused AdamW; auto: on for CUDA, off on the CPU")
    loss_read_steps: Int(ge=1) = key(10, "the host reads the step losses every N steps (hypir_core/steplog.py)")
    max_grad_norm: Number(gt=0) = key(1.0, "gradient clipping norm")
    logging_dir: Text() = key("logs", "SwanLab's folder, inside output_dir")
    report_to: Choice("swanlab", "tensorboard", "none") = key("swanlab", "the tracker (tensorboard: event files in "
                                                                         "output_dir/logging_dir, upstream's)")
    swanlab_project: Text() = key("HYPIR-training", "SwanLab project")
    swanlab_mode: Choice(*SWANLAB_MODES) = key("auto", "auto = cloud with an API key, else local with the dashboard "
                                                       "extra, else offline")
    checkpointing_steps: Int(ge=1) = key(500, "steps between checkpoints")
    checkpoints_total_limit: Int(ge=1, null="= keep all") = key(None, "checkpoints kept (the newest)")
    resume_from_checkpoint: Text(allowed='a checkpoint folder, "latest"', null="") = key(
        None, "resume a run: a checkpoint folder or latest")
    log_image_steps: Int(ge=0, allowed=ROUNDS_OFF) = key(0, "steps between logged images")
    log_grad_steps: Int(ge=0, allowed=ROUNDS_OFF) = key(0, "steps between logged gradient norms per loss term")
    log_grad_modules: Texts(empty_ok=True) = key(["conv_out"], "modules whose gradient norms are logged")
    schedule: Annotated[list[dict], BeforeValidator(_check_schedule), WithJsonSchema(SCHEDULE_SCHEMA),
                        Allowed("a list of {from_step, overrides} entries")] = key(
        [], "values that change at given steps: [{from_step: S, overrides: {lr_G: ..., lambda_gan: ...}}] "
            "(hypir_core/schedule.py)")
    validation_steps: Int(ge=1) = key(500, "steps between validation rounds (the last step always validates)")
    skip_bad_images: Flag() = key(False, "skip unreadable training images, counted and reported")
    lpips_weights: Choice("pretrained", "random", note=" (random = seeded random VGG, offline demo only)") = key(
        "pretrained", "random plants seeded random VGG weights (offline demo and tests only)")
    name: Derived[str] = key("config", "the config file's name, the experiment's name")
    source: Derived[str] = dataclasses.field(default="<dict>", compare=False)  # where it came from, for messages

    @property
    def validation_rounds(self) -> int:
        """Validation rounds of the full run."""
        return validation_rounds(self.max_train_steps, self.validation_steps)


def validation_rounds(max_train_steps: int, validation_steps: int) -> int:
    """Validation rounds in a run of ``max_train_steps`` (every ``validation_steps``, and the last step always)."""
    return math.ceil(max_train_steps / validation_steps)


# ---- loading ----

def shown(value: Any) -> str:
    """A value as an override's text shows it (floats exactly, the rest as flow YAML)."""
    if isinstance(value, float):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip().removesuffix("...").strip()


def parse_override(text: str, source: str) -> tuple[str, Any]:
    """``key.sub=value`` (the CLI's) as the dotted key and its value, parsed as YAML."""
    dotted, sep, value_text = str(text).partition("=")
    dotted = dotted.strip()
    if not sep or not dotted or any(not part for part in dotted.split(".")):
        Source(source).fail(f"Override '{text}' for {source} must look like key.sub=value, e.g. lambda_l2=2.")
    try:
        return dotted, yaml.safe_load(value_text)
    except yaml.YAMLError:
        Source(source).fail(f"Override '{text}' for {source} has a value that is not valid YAML; quote it or fix "
                            f"its syntax.")


def set_dotted(raw: dict, dotted: str, value: Any, text: str, source: str) -> None:
    """Set ``a.b.c`` in a YAML mapping, creating the sections it lacks; ``a.b.1`` sets one element of a list."""
    *parents, last = dotted.split(".")
    node = raw
    for i, part in enumerate(parents):
        if i == len(parents) - 1 and last.isdigit() and node.get(part) is not None:
            set_element(node[part], int(last), value, text, source, ".".join(parents))
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            Source(source).fail(f"Override '{text}' for {source} cannot set '{dotted}' because "
                                f"'{'.'.join(parents[:i + 1])}' is {show_value(node)}, not a section of keys.")
    node[last] = value  # an element of a key the config lacks: validation names the key (unknown, or not a list)


def set_element(items: Any, index: int, value: Any, text: str, source: str, dotted: str) -> None:
    """Set element ``index`` of the list at ``dotted`` (``noise_range.1=20``)."""
    if not isinstance(items, list):
        Source(source).fail(f"Override '{text}' for {source} sets element {index} of '{dotted}', which is "
                            f"{show_value(items)}, not a list.")
    if index >= len(items):
        Source(source).fail(f"Override '{text}' for {source} sets element {index} of '{dotted}', which has "
                            f"{len(items)} elements (numbered from 0).")
    items[index] = value


def _sets_an_unwritten_element(raw: dict, dotted: str) -> bool:
    """Whether ``dotted`` is one element of a list the mapping does not write (its default then applies)."""
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return last.isdigit() and node is None


def config_from_dict(d: dict, source: str = "<dict>", name: str = "config",
                     overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Validate a plain dict (as read from YAML) plus overrides into a Config.

    ``overrides``: ``key.sub=value`` texts (the CLI's; values parsed as YAML) or dotted keys mapped to values.
    """
    if not isinstance(d, dict):
        Source(source).fail(f"The top level of {source} must be a mapping of config keys (key: value lines), "
                            f"got {show_value(d)}.")
    if isinstance(overrides, Mapping):
        items = [(k, v, f"{k}={shown(v)}") for k, v in overrides.items()]
    else:
        items = [(*parse_override(text, source), str(text)) for text in ([overrides] if isinstance(overrides, str)
                                                                           else overrides)]
    raw = copy.deepcopy(d)
    for index, (dotted, value, text) in enumerate(items):
        if _sets_an_unwritten_element(raw, dotted):  # e.g. noise_range.1 on a file that leaves noise_range out
            raw = config_to_dict(validate(Config, raw, Source(source, {k: t for k, _, t in items[:index]})))
        set_dotted(raw, dotted, copy.deepcopy(value), text, source)
    cfg = validate(Config, raw, Source(source, {dotted: text for dotted, _, text in items}))
    check_loss_weights(cfg, source)
    check_schedule(cfg, raw, source)
    check_starting_weights(cfg, source)
    check_tiles(cfg.data_config.val, source)
    cfg = check_hq_only(cfg, source)
    return dataclasses.replace(cfg, name=name, source=source,
                               coeff_t=cfg.model_t if cfg.coeff_t is None else cfg.coeff_t,
                               output_dir=f"results/{name}" if cfg.output_dir is None else cfg.output_dir)


def load_config(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Load a training config YAML file, apply overrides (see ``config_from_dict``) and validate it."""
    return config_from_dict(read_yaml(path), source=str(path), name=Path(path).stem, overrides=overrides)


def config_to_dict(cfg: Any) -> Any:
    """A plain, YAML-safe dict of a Config (or any part of it) that ``config_from_dict`` loads back equal."""
    if dataclasses.is_dataclass(cfg):
        return {name: config_to_dict(getattr(cfg, name)) for name in file_keys(type(cfg))}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


# ---- rules across keys ----

def check_loss_weights(cfg: Config, source: str) -> None:
    """At least one loss weight above 0: otherwise the generator learns nothing."""
    if not any(getattr(cfg, k) > 0 for k in LOSS_WEIGHTS):
        Source(source).fail(f"All loss weights are 0 in {source} ({', '.join(LOSS_WEIGHTS)}), so the generator would "
                            f"learn nothing; set at least one of them above 0.")


def check_starting_weights(cfg: Config, source: str) -> None:
    """One place to start the LoRA from, not two."""
    if cfg.init_lora_from and cfg.init_from_fork_checkpoint:
        Source(source).fail(f"{source} sets both init_lora_from and init_from_fork_checkpoint; keep one (the fork "
                            f"checkpoint also brings its EMA and discriminator heads).")


def check_tiles(val, source: str) -> None:
    """Validation tiles that overlap or touch: a stride above the tile size would leave gaps."""
    if val.tile_size is not None and val.tile_stride > val.tile_size:
        Source(source).fail(f"'data_config.val.tile_stride' in {source} is {val.tile_stride}, larger than tile_size "
                            f"{val.tile_size}, which leaves gaps between tiles; set it to at most {val.tile_size} "
                            f"(HYPIR: 512 / 256).")


def check_schedule(cfg: Config, raw: dict, source: str) -> None:
    """Each schedule entry within the run and, applied on top of the earlier ones, a config that loads."""
    staged = {k: v for k, v in copy.deepcopy(raw).items() if k != "schedule"}
    for index, entry in enumerate(cfg.schedule):
        if entry["from_step"] > cfg.max_train_steps:
            Source(source).fail(f"'schedule[{index}].from_step' in {source} is {entry['from_step']}, after the run's "
                                f"last step (max_train_steps {cfg.max_train_steps}); drop the entry or raise "
                                f"max_train_steps.")
        for dotted, value in entry["overrides"].items():
            set_dotted(staged, dotted, value, f"schedule[{index}]", source)
        try:
            staged_cfg = validate(Config, copy.deepcopy(staged), Source(source))
        except ConfigError as exc:
            Source(source).fail(f"'schedule[{index}].overrides' in {source}: {exc}")
        if not any(getattr(staged_cfg, k) > 0 for k in LOSS_WEIGHTS):
            Source(source).fail(f"'schedule[{index}]' in {source} sets every loss weight to 0 from step "
                                f"{entry['from_step']}; keep at least one above 0.")
