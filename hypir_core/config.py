"""Training config: a YAML file (plus overrides) validated into a tree of frozen sections.

``load_config(path, overrides)``, ``config_from_dict(d, ...)`` and ``config_to_dict(cfg)`` are the API.
Attribute names equal the YAML keys, so ``cfg.data_config.train.batch_size`` reads like the file. Each
key is declared once below (type, default, allowed values, meaning; ``hypir_core.schema``); every mistake
is a ``ConfigError`` with one sentence naming the dotted key, the file, the bad value and what is allowed.
The rules that join several keys (loss weights, the schedule) are the named functions at the end.
"""

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import annotated_types as at
import yaml
from pydantic import BeforeValidator, Discriminator, Tag, WithJsonSchema

from hypir_core import schedule as schedule_rules
from hypir_core.errors import ConfigError
from hypir_core.schema import (Allowed, Choice, Derived, Flag, Int, Nested, Number, Says, Source, Text, Texts, file_keys,
                               key, nested, parse_number, read_yaml, refuse, refuse_with, section, show_value,
                               validate)

__all__ = ["Config", "config_from_dict", "config_to_dict", "load_config", "read_yaml", "show_value",
           "validation_rounds"]

# Dataset names users write in `target:` (HYPIR's own and ours), mapped to our loaders; never imported.
DATASET_TARGETS = {
    "HYPIR.dataset.paired.PairedParquetDataset": "paired_list",
    "PairedListDataset": "paired_list",
    "AIOFolderDataset": "aio_folder",
}
IDENTITY_TRANSFORM_TARGETS = ("HYPIR.dataset.batch_transform.IdentityBatchTransform", "IdentityBatchTransform")
# HYPIR's on-the-fly degradation pipeline: recognised, refused until supported.
UNSUPPORTED_TARGETS = ("HYPIR.dataset.realesrgan.RealESRGANDataset",
                       "HYPIR.dataset.batch_transform.RealESRGANBatchTransform")
DEGRADATION_TYPES = ["Blur", "Haze", "Lowlight", "Rain", "Snow"]
DEFAULT_LORA_MODULES = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut",
                        "conv_out", "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
# SwanLab modes: auto = cloud with an API key, else local (swanlab watch) with the dashboard extra, else offline.
SWANLAB_MODES = ("auto", "cloud", "local", "offline")
DISC_BACKBONES = ("openclip_convnext_xxlarge", "timm_convnext_tiny", "timm_convnext_small", "timm_convnext_base",
                  "tiny")
LOSS_WEIGHTS = ("lambda_l2", "lambda_l1", "lambda_lpips", "lambda_ssim", "lambda_gan")
AUTO_FLAG = Annotated[Union[Flag(), Literal["auto"]], Allowed('true, false or "auto"')]
TIMESTEP = "an integer in [0, 999] (the scheduler's 1000 training timesteps: 0..999)"
ROUNDS_OFF = "an integer >= 0 (0 = off)"


# ---- training data ----

@section
class FileMeta:
    file_list: Text(allowed="a path ending in .parquet or .csv (the LQ/GT pair list)",
                    pattern=r"\.([Pp][Aa][Rr][Qq][Uu][Ee][Tt]|[Cc][Ss][Vv])$") = key(..., "the LQ/GT pair list")
    lq_key: Text() = key("lq_path", "the list's column of LQ image paths")
    gt_key: Text() = key("gt_path", "the list's column of GT image paths")
    prompt_key: Text() = key("prompt", "the list's column of prompts")


@section
class Augmentation:
    out_size: Int(ge=8) = key(512, "training image size in pixels")
    crop_type: Choice("none", "center", "random") = key("none", "none = resize to out_size; center or random = "
                                                                "crop out_size pixels (reflect-padded if smaller)")
    use_hflip: Flag() = key(True, "random horizontal flips, the same for LQ and GT")
    use_rot: Flag() = key(True, "random 90-degree rotations, the same for LQ and GT")


@section
class PairedListParams(Augmentation):
    file_meta: Nested[FileMeta] = nested("the pair list and its column names")
    return_file_name: Flag() = key(False, "each item also carries its GT path")


@section
class AIOFolderParams(Augmentation):
    root: Text(allowed="a folder path (with <type>/LQ and <type>/GT inside) or demo://aio/train") = key(
        ..., "the all-in-one folder: <type>/LQ/* and <type>/GT/* with the same file names")
    degradation_types: Texts() = key(DEGRADATION_TYPES, "the <type> folders trained on")
    prompt: Text(empty_ok=True) = key("", "the prompt of every training image")


def _targets(kind: str) -> Any:
    names = [target for target, its_kind in DATASET_TARGETS.items() if its_kind == kind]
    return Annotated[Choice(*names), Says(lambda k, where: f"Missing required key '{k}' in {where(k[:-7])}; set it to one "
                                                           f"of {', '.join(DATASET_TARGETS)}.", missing_only=True)]


@section
class PairedListDataset:
    kind: ClassVar[str] = "paired_list"
    target: _targets("paired_list") = key(..., "a LQ/GT pair list")
    params: Nested[PairedListParams] = nested("the pair list and augmentation")


@section
class AIOFolderDataset:
    kind: ClassVar[str] = "aio_folder"
    target: _targets("aio_folder") = key(..., "an all-in-one folder")
    params: Nested[AIOFolderParams] = nested("the folder and augmentation")


def _unsupported(target: str) -> None:
    refuse_with(lambda k, where: f"'{k}.target' in {where(k + '.target')} is '{target}', whose on-the-fly "
                                 f"degradation is not supported yet; use a paired list (target "
                                 f"{next(iter(DATASET_TARGETS))} with a .parquet or .csv file_list) or an AIO folder "
                                 f"(target AIOFolderDataset).")


def _check_dataset_target(value: Any) -> Any:
    """The target first: known names map to our loaders, HYPIR's degradation pipeline is refused, nothing imported."""
    if dataclasses.is_dataclass(value) or not isinstance(value, dict) or "target" not in value:
        return value  # validated already (dataclasses.replace), not a mapping, or a missing target (_TARGET_MISSING)
    target, names = value["target"], ", ".join(DATASET_TARGETS)
    if not isinstance(target, str):
        refuse_with(lambda k, where: f"'{k}.target' in {where(k + '.target')} must be a dataset name string such as "
                                     f"{next(iter(DATASET_TARGETS))}, got {show_value(target)}.")
    if target in UNSUPPORTED_TARGETS:
        _unsupported(target)
    if target not in DATASET_TARGETS:
        refuse_with(lambda k, where: f"'{k}.target' in {where(k + '.target')} must be one of the known dataset names "
                                     f"{names}, got {show_value(target)}; class paths are never imported.")
    return value


DatasetConfig = Annotated[
    Union[Annotated[PairedListDataset, Tag("paired_list")], Annotated[AIOFolderDataset, Tag("aio_folder")]],
    # Without a target the folder variant reports it missing (after any misspelt key such as 'targt').
    Discriminator(lambda v: DATASET_TARGETS.get(v.get("target"), "aio_folder") if isinstance(v, dict)
                  else getattr(v, "kind", None)),
    BeforeValidator(_check_dataset_target),
    Allowed("a mapping with 'target' (e.g. HYPIR.dataset.paired.PairedParquetDataset) and 'params'")]


def _must(value: Any, ok: bool) -> Any:
    if not ok:
        raise ValueError("not allowed")  # the message quotes the key's Allowed words
    return value


@section
class IdentityTransformParams:
    hq_key: Choice("GT") = key("GT", "the batch key of the target image")
    extra_keys: Annotated[list[Literal["LQ", "txt"]], Allowed("[LQ, txt] (the keys our datasets return)"),
                          BeforeValidator(lambda v: _must(v, isinstance(v, list) and sorted(map(str, v)) == [
                              "LQ", "txt"]))] = key(["LQ", "txt"], "the other batch keys passed on")


def _check_transform_target(value: Any) -> Any:
    if isinstance(value, dict) and value.get("target") in UNSUPPORTED_TARGETS:
        _unsupported(value["target"])
    return value


@section
class BatchTransformConfig:
    target: Choice(*IDENTITY_TRANSFORM_TARGETS) = key(IDENTITY_TRANSFORM_TARGETS[0], "pairs are used as they are")
    params: Nested[IdentityTransformParams] = nested("the identity transform's keys")


@section
class TrainDataConfig:
    batch_size: Int(ge=1) = key(4, "images per batch (the generator and the discriminator each take a batch a step)")
    dataloader_num_workers: Int(ge=0) = key(4, "data loading processes (0 = in the training process)")
    dataset: DatasetConfig = key(..., "the training pairs: a pair list or an all-in-one folder")
    batch_transform: Annotated[Nested[BatchTransformConfig], BeforeValidator(_check_transform_target)] = nested(
        "what is done to a batch before the step (HYPIR's key; only the identity)")


@section
class ValDataConfig:
    val_dir: Text(null="") = key(None, "validation folder: <type>/LQ/* and <type>/GT/*, same file names "
                                       "(demo://aio/val for the demo)")
    degradation_types: Texts() = key(DEGRADATION_TYPES, "the <type> folders validated, each also scored on its own")
    batch_size: Int(ge=1) = key(1, "validation images per batch")
    num_samples_per_type: Int(ge=1, null="= all") = key(None, "the first N sorted images of each type")
    prompt: Text(empty_ok=True) = key("high quality, sharp details", "the prompt used for validation (the users' "
                                                                     "trainer's)")
    resize: Annotated[Union[Int(ge=8), Literal["native"]], Allowed('an integer >= 8 or "native"')] = key(
        512, "validation size, or native (padded to the VAE's multiple, cropped back)")
    quantize: Flag() = key(True, "metrics on outputs rounded to 8 bits (as on saved PNGs); false = the users' float "
                                 "computation")


@section
class DataConfig:
    train: Nested[TrainDataConfig] = nested("training data")
    val: Nested[ValDataConfig] = nested("validation data")


@section
class OptKwargs:
    betas: Annotated[list[Annotated[float, at.Interval(ge=0, lt=1), BeforeValidator(parse_number)]],
                     Allowed("a list of 2 numbers in [0, 1), e.g. [0.9, 0.999]"),
                     BeforeValidator(lambda v: _must(v, isinstance(v, list) and len(v) == 2))] = key(
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
    report_to: Choice("swanlab", "none") = key("swanlab", "the tracker")
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
    """Set ``a.b.c`` in a YAML mapping, creating the sections it lacks."""
    *parents, last = dotted.split(".")
    node = raw
    for i, part in enumerate(parents):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            Source(source).fail(f"Override '{text}' for {source} cannot set '{dotted}' because "
                                f"'{'.'.join(parents[:i + 1])}' is {show_value(node)}, not a section of keys.")
    node[last] = value


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
    for dotted, value, text in items:
        set_dotted(raw, dotted, copy.deepcopy(value), text, source)
    cfg = validate(Config, raw, Source(source, {dotted: text for dotted, _, text in items}))
    check_loss_weights(cfg, source)
    check_schedule(cfg, raw, source)
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
