"""Training config: load a YAML file (plus `key.sub=value` overrides) into a validated dataclass tree.

`load_config(path, overrides)`, `config_from_dict(d, ...)` and `config_to_dict(cfg)` are the API.
Attribute names equal the YAML keys, so `cfg.data_config.train.batch_size` reads like the file.
Every mistake a user can make in a config is a `ConfigError` with one sentence that names the
dotted key, the file, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from hypir_core import schedule as schedule_rules
from hypir_core.errors import ConfigError

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


class _Bad(Exception):
    """A value failed its check; the caller turns it into a ConfigError naming the key."""


class _Ctx:
    """Where values come from: the file (source) and which dotted keys an override set."""

    def __init__(self, source: str, overridden: dict[str, str]):
        self.source, self.overridden = source, overridden

    def where(self, key: str) -> str:
        for set_key, text in self.overridden.items():
            if set_key == key or set_key.startswith(key + "."):
                return f"{self.source} (override '{text}')"
        return self.source

    def fail(self, key: str, allowed: str, value: Any) -> NoReturn:
        _raise(f"'{key}' in {self.where(key)} must be {allowed}, got {show_value(value)}.")


def _raise(message: str) -> NoReturn:
    # One sentence on one line, whatever a YAML value or parser message contained.
    raise ConfigError(" ".join(message.split()))


def show_value(value: Any) -> str:
    """A value as messages quote it: repr (shortened) and its type."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{text[:77] + '...' if len(text) > 80 else text} ({type(value).__name__})"


# ---- value checks: each is check(value, ctx, key) -> value, with .allowed for messages ----

def _checker(allowed: str, ok: Callable[[Any], bool], convert: Callable[[Any], Any] | None = None,
             optional: bool = False):
    if optional and "null" not in allowed:
        allowed += " or null"

    def check(value, ctx: _Ctx, key: str):
        if value is None and optional:
            return None
        try:
            if ok(value):
                return convert(value) if convert else value
        except _Bad:
            pass
        ctx.fail(key, allowed, value)
    check.allowed = allowed
    return check


def _range_text(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return f" {'>' if lo_open else '>='} {lo}" if lo is not None else ""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo=None, hi=None, optional=False, allowed=None):
    return _checker(allowed or "an integer" + _range_text(lo, hi),
                    lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi), optional=optional)


def _to_float(v, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    # PyYAML reads `1e-5` (no dot) as a string, so numeric strings are numbers here.
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise _Bad from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad
    v = float(v)
    if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and (v >= hi if hi_open else v > hi):
        raise _Bad
    return v


def _float(lo=None, hi=None, lo_open=False, hi_open=False):
    return _checker("a number" + _range_text(lo, hi, lo_open, hi_open), lambda v: True,
                    lambda v: _to_float(v, lo, hi, lo_open, hi_open))


def _str(optional=False, empty_ok=False, allowed=None):
    return _checker(allowed or ("a string" if empty_ok else "a non-empty string"),
                    lambda v: isinstance(v, str) and (empty_ok or v != ""), optional=optional)


def _choice(options: tuple[str, ...], extra: str = ""):
    return _checker("one of " + ", ".join(options) + extra, lambda v: isinstance(v, str) and v in options)


def _str_list(nonempty=True, allowed=None):
    return _checker(allowed or ("a non-empty list of strings" if nonempty else "a list of strings"),
                    lambda v: isinstance(v, list) and (bool(v) or not nonempty)
                    and all(isinstance(s, str) and s for s in v), list)


_BOOL = _checker("true or false", lambda v: isinstance(v, bool))
_AUTO_BOOL = _checker('true, false or "auto"', lambda v: isinstance(v, bool) or v == "auto")
_FILE_LIST = _checker("a path ending in .parquet or .csv (the LQ/GT pair list)",
                      lambda v: isinstance(v, str) and v.lower().endswith((".parquet", ".csv")))
_RESIZE = _checker('an integer >= 8 or "native"', lambda v: v == "native" or (_is_int(v) and v >= 8))
_BETAS = _checker("a list of 2 numbers in [0, 1), e.g. [0.9, 0.999]", lambda v: isinstance(v, list) and len(v) == 2,
                  lambda v: [_to_float(b, 0.0, 1.0, hi_open=True) for b in v])
_EXTRA_KEYS = _checker("[LQ, txt] (the keys our datasets return)",
                       lambda v: isinstance(v, list) and sorted(map(str, v)) == ["LQ", "txt"], list)


def _f(check, default=MISSING, factory=MISSING):
    """A config field: its check, and a default unless the key is required."""
    return field(default=default, default_factory=factory, metadata={"check": check})


def _section(cls, required=False):
    """A nested mapping built into `cls` (a missing or null section means all defaults)."""
    def check(v, ctx: _Ctx, key: str):
        return _build(cls, {} if v is None else v, key + ".", ctx)
    return field(default_factory=MISSING if required else cls, metadata={"check": check, "section": True})


def _derived(default, compare=True):
    """Not a YAML key: filled in by the loader."""
    return field(default=default, compare=compare, metadata={"derived": True})


# ---- the schema ----

def _check_schedule(value, ctx: _Ctx, key: str):
    if value is None:
        return []
    problem = schedule_rules.structure_error(value)
    if problem:
        ctx.fail(key, problem, value)
    return schedule_rules.normalised(value)


_TIMESTEP = _int(0, 999, allowed="an integer in [0, 999] (the scheduler's 1000 training timesteps: 0..999)")
_OUT_SIZE, _CROP = _int(8), _choice(("none", "center", "random"))


@dataclass(frozen=True, kw_only=True)
class FileMeta:
    file_list: str = _f(_FILE_LIST)
    lq_key: str = _f(_str(), "lq_path")
    gt_key: str = _f(_str(), "gt_path")
    prompt_key: str = _f(_str(), "prompt")


@dataclass(frozen=True, kw_only=True)
class PairedListParams:
    file_meta: FileMeta = _section(FileMeta, required=True)
    out_size: int = _f(_OUT_SIZE, 512)
    crop_type: str = _f(_CROP, "none")
    use_hflip: bool = _f(_BOOL, True)
    use_rot: bool = _f(_BOOL, True)
    return_file_name: bool = _f(_BOOL, False)


@dataclass(frozen=True, kw_only=True)
class AIOFolderParams:
    root: str = _f(_str(allowed="a folder path (with <type>/LQ and <type>/GT inside) or demo://aio/train"))
    degradation_types: list[str] = _f(_str_list(), factory=lambda: list(DEGRADATION_TYPES))
    prompt: str = _f(_str(empty_ok=True), "")
    out_size: int = _f(_OUT_SIZE, 512)
    crop_type: str = _f(_CROP, "none")
    use_hflip: bool = _f(_BOOL, True)
    use_rot: bool = _f(_BOOL, True)


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    target: str  # the name as written in the file, kept for round-tripping
    kind: str  # "paired_list" or "aio_folder"
    params: PairedListParams | AIOFolderParams


@dataclass(frozen=True, kw_only=True)
class IdentityTransformParams:
    hq_key: str = _f(_choice(("GT",)), "GT")
    extra_keys: list[str] = _f(_EXTRA_KEYS, factory=lambda: ["LQ", "txt"])


@dataclass(frozen=True, kw_only=True)
class BatchTransformConfig:
    target: str = _f(_choice(IDENTITY_TRANSFORM_TARGETS), IDENTITY_TRANSFORM_TARGETS[0])
    params: IdentityTransformParams = _section(IdentityTransformParams)


def _unsupported(ctx: _Ctx, key: str, target: str) -> NoReturn:
    _raise(f"'{key}' in {ctx.where(key)} is '{target}', whose on-the-fly degradation is not supported yet; "
           f"use a paired list (target {next(iter(DATASET_TARGETS))} with a .parquet or .csv file_list) "
           f"or an AIO folder (target AIOFolderDataset).")


def _check_dataset(v, ctx: _Ctx, key: str) -> DatasetConfig:
    if not isinstance(v, dict):
        ctx.fail(key, _DATASET_ALLOWED, v)
    _reject_unknown(v, ["target", "params"], key + ".", ctx)
    if "target" not in v:
        _raise(f"Missing required key '{key}.target' in {ctx.where(key)}; set it to one of "
               + ", ".join(DATASET_TARGETS) + ".")
    target = v["target"]
    if not isinstance(target, str):
        ctx.fail(key + ".target", "a dataset name string such as " + next(iter(DATASET_TARGETS)), target)
    if target in UNSUPPORTED_TARGETS:
        _unsupported(ctx, key + ".target", target)
    if target not in DATASET_TARGETS:
        _raise(f"'{key}.target' in {ctx.where(key + '.target')} must be one of the known dataset names "
               f"{', '.join(DATASET_TARGETS)}, got {show_value(target)}; class paths are never imported.")
    kind = DATASET_TARGETS[target]
    params_cls = PairedListParams if kind == "paired_list" else AIOFolderParams
    params = _build(params_cls, v.get("params") or {}, key + ".params.", ctx)
    return DatasetConfig(target=target, kind=kind, params=params)


_DATASET_ALLOWED = "a mapping with 'target' (e.g. HYPIR.dataset.paired.PairedParquetDataset) and 'params'"
_check_dataset.allowed = _DATASET_ALLOWED


def _check_transform(v, ctx: _Ctx, key: str) -> BatchTransformConfig:
    if isinstance(v, dict) and v.get("target") in UNSUPPORTED_TARGETS:
        _unsupported(ctx, key + ".target", v["target"])
    return _build(BatchTransformConfig, {} if v is None else v, key + ".", ctx)


@dataclass(frozen=True, kw_only=True)
class TrainDataConfig:
    batch_size: int = _f(_int(1), 4)
    dataloader_num_workers: int = _f(_int(0), 4)
    dataset: DatasetConfig = _f(_check_dataset)
    batch_transform: BatchTransformConfig = field(default_factory=BatchTransformConfig,
                                                  metadata={"check": _check_transform, "section": True})


@dataclass(frozen=True, kw_only=True)
class ValDataConfig:
    val_dir: str | None = _f(_str(optional=True), None)
    degradation_types: list[str] = _f(_str_list(), factory=lambda: list(DEGRADATION_TYPES))
    batch_size: int = _f(_int(1), 1)
    num_samples_per_type: int | None = _f(_int(1, optional=True, allowed="an integer >= 1 or null (= all)"), None)
    prompt: str = _f(_str(empty_ok=True), "high quality, sharp details")  # the users' trainer's validation prompt
    resize: int | str = _f(_RESIZE, 512)
    quantize: bool = _f(_BOOL, True)
    # What HYPIR's inference does after the model (hypir_core/restoration.py); none = as the users' trainer validates.
    color_fix: str = _f(_choice(("none", "wavelet")), "none")
    tile_size: int | None = _f(_int(8, optional=True, allowed="an integer >= 8 (pixels) or null (= the whole image)"),
                               None)
    tile_stride: int = _f(_int(8), 256)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    train: TrainDataConfig = _section(TrainDataConfig, required=True)
    val: ValDataConfig = _section(ValDataConfig)


@dataclass(frozen=True, kw_only=True)
class OptKwargs:
    betas: list[float] = _f(_BETAS, factory=lambda: [0.9, 0.999])
    eps: float = _f(_float(0, lo_open=True), 1e-8)
    weight_decay: float = _f(_float(0), 0.01)  # torch's AdamW default, which HYPIR's configs rely on


@dataclass(frozen=True, kw_only=True)
class Config:
    """A validated training config; see `load_config`."""

    data_config: DataConfig = _section(DataConfig, required=True)
    output_dir: str | None = _f(_str(optional=True), None)  # None -> "results/<name>" after loading
    base_model_type: str = _f(_choice(("sd2",)), "sd2")
    base_model_path: str = _f(_str(allowed="a non-empty string (a diffusers SD2 folder, a hub id such as "
                                           "stabilityai/stable-diffusion-2-1-base, or demo://tiny-sd2)"))
    model_t: int = _f(_TIMESTEP, 200)
    coeff_t: int | None = _f(_int(0, 999, optional=True, allowed=_TIMESTEP.allowed + " or null (= model_t)"), None)
    lora_rank: int = _f(_int(1), 256)
    lora_modules: list[str] = _f(_str_list(allowed="a non-empty list of UNet module names"),
                                 factory=lambda: list(DEFAULT_LORA_MODULES))
    init_lora_from: str | None = _f(_str(optional=True), None)
    # A fork checkpoint-N/ folder: LoRA, EMA and discriminator heads to start from (hypir_core/fork.py).
    init_from_fork_checkpoint: str | None = _f(_str(optional=True, allowed="a fork checkpoint-N folder or null"), None)
    disc_backbone: str = _f(_choice(DISC_BACKBONES), DISC_BACKBONES[0])
    use_ema: bool = _f(_BOOL, True)
    ema_decay: float = _f(_float(0, 1, hi_open=True), 0.999)
    ema_warmup: bool = _f(_BOOL, False)  # true: ramp the decay as diffusers' EMAModel (HYPIR's is constant)
    resume_ema: bool = _f(_BOOL, True)
    lambda_gan: float = _f(_float(0), 0.5)
    lambda_lpips: float = _f(_float(0), 5.0)
    lambda_l2: float = _f(_float(0), 1.0)
    lambda_l1: float = _f(_float(0), 0.0)
    lambda_ssim: float = _f(_float(0), 0.0)
    lr_G: float = _f(_float(0, lo_open=True), 1e-5)
    lr_D: float = _f(_float(0, lo_open=True), 1e-5)
    optimizer_type: str = _f(_choice(("adamw", "adam"), " (both mean AdamW, as in HYPIR)"), "adamw")
    opt_kwargs: OptKwargs = _section(OptKwargs)
    mixed_precision: str = _f(_choice(("no", "fp16", "bf16")), "bf16")
    seed: int = _f(_int(0, 2**32 - 1), 231)
    max_train_steps: int = _f(_int(1))
    gradient_accumulation_steps: int = _f(_int(1), 1)
    # auto: off where the run fits its GPU share without it, on otherwise (hypir_core/speed.py); true/false force it.
    gradient_checkpointing: bool | str = _f(_AUTO_BOOL, "auto")
    compile: bool | str = _f(_AUTO_BOOL, "auto")  # torch.compile regions; auto: on for CUDA, off on the CPU
    loss_read_steps: int = _f(_int(1), 10)  # the host reads the step losses every N steps (hypir_core/steplog.py)
    max_grad_norm: float = _f(_float(0, lo_open=True), 1.0)
    logging_dir: str = _f(_str(), "logs")
    report_to: str = _f(_choice(("swanlab", "none")), "swanlab")
    swanlab_project: str = _f(_str(), "HYPIR-training")
    swanlab_mode: str = _f(_choice(SWANLAB_MODES), "auto")
    checkpointing_steps: int = _f(_int(1), 500)
    checkpoints_total_limit: int | None = _f(_int(1, optional=True, allowed="an integer >= 1 or null (= keep all)"),
                                             None)
    resume_from_checkpoint: str | None = _f(_str(optional=True, allowed='a checkpoint folder, "latest" or null'), None)
    log_image_steps: int = _f(_int(0, allowed="an integer >= 0 (0 = off)"), 0)
    log_grad_steps: int = _f(_int(0, allowed="an integer >= 0 (0 = off)"), 0)
    log_grad_modules: list[str] = _f(_str_list(nonempty=False), factory=lambda: ["conv_out"])
    schedule: list[dict] = field(default_factory=list, metadata={"check": _check_schedule})  # hypir_core.schedule
    validation_steps: int = _f(_int(1), 500)
    skip_bad_images: bool = _f(_BOOL, False)
    lpips_weights: str = _f(_choice(("pretrained", "random"), " (random = seeded random VGG, offline demo only)"),
                            "pretrained")
    name: str = _derived("config")  # config file stem, used as the experiment name
    source: str = _derived("<dict>", compare=False)  # where the config came from, for messages


# ---- building and checking ----

def _reject_unknown(raw: dict, known: list[str], prefix: str, ctx: _Ctx) -> None:
    for k in raw:
        if k in known:
            continue
        dotted = prefix + str(k)
        close = difflib.get_close_matches(str(k), known, n=1)
        hint = f"did you mean '{prefix}{close[0]}'?" if close else "allowed keys here: " + ", ".join(known) + "."
        _raise(f"Unknown key '{dotted}' in {ctx.where(dotted)}; {hint}")


def _build(cls, raw: Any, prefix: str, ctx: _Ctx):
    if not isinstance(raw, dict):
        ctx.fail(prefix[:-1], "a mapping of keys", raw)
    own = [f for f in fields(cls) if not f.metadata.get("derived")]
    _reject_unknown(raw, [f.name for f in own], prefix, ctx)
    values = {}
    for f in own:
        key = prefix + f.name
        if f.name in raw or f.metadata.get("section"):
            values[f.name] = f.metadata["check"](raw.get(f.name), ctx, key)
        elif f.default is MISSING and f.default_factory is MISSING:
            _raise(f"Missing required key '{key}' in {ctx.where(key)}; set it to {f.metadata['check'].allowed}.")
    return cls(**values)


def _apply_override(raw: dict, text: str, source: str) -> str:
    key, sep, value_text = str(text).partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        _raise(f"Override '{text}' for {source} must look like key.sub=value, e.g. lambda_l2=2.")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        _raise(f"Override '{text}' for {source} has a value that is not valid YAML; quote it or fix its syntax.")
    *parents, last = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            _raise(f"Override '{text}' for {source} cannot set '{key}' because '{'.'.join(parents[:i + 1])}' "
                   f"is {show_value(node)}, not a section of keys.")
    node[last] = value
    return key


LOSS_WEIGHTS = ("lambda_l2", "lambda_l1", "lambda_lpips", "lambda_ssim", "lambda_gan")


def config_from_dict(d: dict, source: str = "<dict>", name: str = "config", overrides: Iterable[str] = ()) -> Config:
    """Validate a plain dict (as read from YAML) plus `key.sub=value` overrides into a Config."""
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(d, dict):
        _raise(f"The top level of {source} must be a mapping of config keys (key: value lines), got {show_value(d)}.")
    raw = copy.deepcopy(d)
    overridden = {_apply_override(raw, text, source): str(text) for text in overrides}
    cfg = _build(Config, raw, "", _Ctx(source, overridden))
    if not any(getattr(cfg, key) > 0 for key in LOSS_WEIGHTS):
        _raise(f"All loss weights are 0 in {source} ({', '.join(LOSS_WEIGHTS)}), so the generator would learn "
               f"nothing; set at least one of them above 0.")
    _check_schedule_values(cfg, raw, source)
    if cfg.init_lora_from and cfg.init_from_fork_checkpoint:
        _raise(f"{source} sets both init_lora_from and init_from_fork_checkpoint; keep one (the fork checkpoint "
               f"also brings its EMA and discriminator heads).")
    val = cfg.data_config.val
    if val.tile_size is not None and val.tile_stride > val.tile_size:
        _raise(f"'data_config.val.tile_stride' in {source} is {val.tile_stride}, larger than tile_size {val.tile_size}, "
               f"which leaves gaps between tiles; set it to at most {val.tile_size} (HYPIR: 512 / 256).")
    return replace(cfg, name=name, source=source,
                   coeff_t=cfg.model_t if cfg.coeff_t is None else cfg.coeff_t,
                   output_dir=f"results/{name}" if cfg.output_dir is None else cfg.output_dir)


def _check_schedule_values(cfg, raw: dict, source: str) -> None:
    """Each schedule entry within the run and, applied on top of the earlier ones, a config that loads."""
    staged = {k: v for k, v in copy.deepcopy(raw).items() if k != "schedule"}
    for index, entry in enumerate(cfg.schedule):
        if entry["from_step"] > cfg.max_train_steps:
            _raise(f"'schedule[{index}].from_step' in {source} is {entry['from_step']}, after the run's last step "
                   f"(max_train_steps {cfg.max_train_steps}); drop the entry or raise max_train_steps.")
        for key, value in entry["overrides"].items():
            *parents, last = key.split(".")
            node = staged
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        try:
            staged_cfg = _build(Config, copy.deepcopy(staged), "", _Ctx(source, {}))
        except ConfigError as exc:
            _raise(f"'schedule[{index}].overrides' in {source}: {exc}")
        if not any(getattr(staged_cfg, key) > 0 for key in LOSS_WEIGHTS):
            _raise(f"'schedule[{index}]' in {source} sets every loss weight to 0 from step {entry['from_step']}; "
                   f"keep at least one above 0.")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would otherwise resolve silently to the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            except TypeError:  # unhashable key: let SafeLoader report it
                pass
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path, what: str = "Config file") -> Any:
    """Parse a YAML file (duplicate keys refused); a missing file or bad syntax is a one-sentence ConfigError."""
    source, p = str(path), Path(path)
    if not p.is_file():
        what_is = "is a directory, not a file" if p.is_dir() else "does not exist"
        _raise(f"{what} '{source}' {what_is}; pass the path of a YAML file such as "
               f"{'configs/sd2_finetune_5k.yaml' if what == 'Config file' else 'sweeps/quickstart.yaml'}.")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except UnicodeDecodeError:
        _raise(f"{what} '{source}' is not UTF-8 text; save it as UTF-8 YAML.")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        _raise(f"{what} '{source}' is not valid YAML{line}: {getattr(exc, 'problem', None) or exc}; "
               f"fix the syntax there.")
    if raw is None:
        _raise(f"{what} '{source}' is empty; write its keys in it, as in "
               f"{'configs/sd2_finetune_5k.yaml' if what == 'Config file' else 'sweeps/quickstart.yaml'}.")
    return raw


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load a training config YAML file, apply `key.sub=value` overrides and validate it."""
    raw = read_yaml(path)
    return config_from_dict(raw, source=str(path), name=Path(path).stem, overrides=overrides)


def config_to_dict(cfg: Any) -> Any:
    """A plain, YAML-safe dict of a Config (or any part of it) that `config_from_dict` loads back equal."""
    if isinstance(cfg, DatasetConfig):
        return {"target": cfg.target, "params": config_to_dict(cfg.params)}
    if is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in fields(cfg) if not f.metadata.get("derived")}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return cfg
