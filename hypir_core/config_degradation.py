"""Upstream HYPIR's HQ-only data keys (its configs/sd2_train.yaml): the Real-ESRGAN degradation settings, each
declared once (``hypir_core.schema``), and the rules that join them with the rest of ``data_config``.

HQ images are read from a file list (``hypir_core.hq_data``) by ``RealESRGANDataset``, which also draws each
image's blur kernels (``BlurKernelSettings``), and degraded on the device by ``RealESRGANBatchTransform``
(``DegradationSettings``, ``hypir_core.degradation``). Defaults are upstream's sd2_train.yaml values. Every
range is ``[low, high]``; one end is reachable as an override with its index, e.g.
``data_config.train.batch_transform.params.noise_range.1=20``. ``hypir_core.config_data`` puts these sections
into the dataset and transform variants; the rules at the end run after the whole config has validated.
"""

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Union

import annotated_types as at
from pydantic import AfterValidator, BeforeValidator

from hypir_core.schema import (Allowed, Choice, Flag, Int, Nested, Number, Source, Text, file_keys, key, must, nested,
                               parse_number, section)

REALESRGAN_DATASET_TARGETS = ("HYPIR.dataset.realesrgan.RealESRGANDataset", "RealESRGANDataset")
REALESRGAN_TRANSFORM_TARGETS = ("HYPIR.dataset.batch_transform.RealESRGANBatchTransform", "RealESRGANBatchTransform")
FILE_BACKEND_TARGETS = ("HYPIR.dataset.file_backend.HardDiskBackend", "HardDiskBackend")
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def Numbers(allowed: str, length: int | None = None,  # noqa: N802
            ok: Callable[[list[float]], bool] = lambda v: True) -> Any:
    """A list of ``length`` numbers (any non-empty list if None) that ``ok`` accepts, as ``allowed`` says."""
    item = Annotated[float, BeforeValidator(parse_number)]
    size = at.MinLen(1) if length is None else at.Len(length, length)
    return Annotated[list[item], size, AfterValidator(lambda v: must(v, ok(v))), Allowed(allowed)]


def Span(lo: float, hi: float | None = None, *, lo_open: bool = False, what: str = "numbers") -> Any:  # noqa: N802
    """A ``[low, high]`` list with low <= high inside the given bounds (``lo_open``: low > lo)."""
    bounds = f"{'>' if lo_open else '>='} {lo}" if hi is None else f"in {'(' if lo_open else '['}{lo}, {hi}]"

    def inside(v: list[float]) -> bool:
        return v[0] <= v[1] and (v[0] > lo if lo_open else v[0] >= lo) and (hi is None or v[1] <= hi)
    return Numbers(f"a list [low, high] of {what} {bounds} with low <= high", 2, inside)


def _stage2_scale(value: Any) -> Any:
    if isinstance(value, list):
        scales = [parse_number(v) for v in value]
        return must(scales, len(scales) == 2 and 1 <= scales[0] <= scales[1])
    return must(parse_number(value), parse_number(value) >= 1)


Probability = Number(ge=0, le=1)
KernelSize = Annotated[Int(ge=3, allowed="an odd integer >= 3 (kernel sizes 7, 9, ... up to it are drawn)"),
                       AfterValidator(lambda v: must(v, v % 2 == 1))]
KernelList = Annotated[list[Literal[KERNEL_TYPES]], at.MinLen(1),
                       Allowed("a non-empty list of kernel types from " + ", ".join(KERNEL_TYPES))]
KernelWeights = Numbers("a list of numbers >= 0, not all 0 (one weight per kernel_list entry)",
                        ok=lambda v: min(v) >= 0 and sum(v) > 0)
ResizeDirections = Numbers("a list of 3 weights >= 0 [up, down, keep], not all 0", 3,
                           lambda v: min(v) >= 0 and sum(v) > 0)
ResizeScales = Numbers("a list [low, high] with 0 < low <= 1 <= high (down- and up-scaling factors)", 2,
                       lambda v: 0 < v[0] <= 1 <= v[1])
BlurSigmas, ShapeBetas = Span(0, lo_open=True, what="blur sigmas"), Span(0, lo_open=True, what="shape betas")
NoiseSigmas, PoissonScales = Span(0, what="noise sigmas (0-255 scale)"), Span(0, what="Poisson scales")
JpegQualities = Span(1, 100, what="JPEG qualities")
Stage2Scale = Annotated[Union[float, list[float]], BeforeValidator(_stage2_scale),
                        Allowed("a number >= 1 or a list [low, high] with 1 <= low <= high")]
UPSTREAM_KERNEL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


@section
class HQFileMeta:
    # TODO (upstream's placeholder) loads, so that --dry-run names every TODO value at once (preflight.check_todo).
    file_list: Text(allowed="a path ending in .parquet, .txt or .list (the HQ image list)",
                    pattern=r"(\.([Pp][Aa][Rr][Qq][Uu][Ee][Tt]|[Tt][Xx][Tt]|[Ll][Ii][Ss][Tt])|^TODO)$") = key(
        ..., "the HQ image list: a parquet table, or one path a line (.txt, .list; demo://hq/train.list)")
    image_path_prefix: Text(empty_ok=True) = key("", "joined before each listed path (\"\" = the list's folder)")
    image_path_key: Text() = key("image_path", "the parquet column of image paths")
    prompt_key: Text() = key("prompt", "the parquet column of prompts; none = empty prompts")


@section
class FileBackendConfig:
    target: Choice(*FILE_BACKEND_TARGETS, note=" (files on a local or mounted disk; other backends are not "
                                                "supported)") = key(FILE_BACKEND_TARGETS[0], "how images are read")


@section
class BlurKernelSettings:
    """The per-image kernels of both stages and the final sinc (the dataset draws them)."""

    blur_kernel_size: KernelSize = key(21, "the largest blur kernel of the first stage (odd sizes from 7 up to it)")
    kernel_list: KernelList = key(list(KERNEL_TYPES), "the first stage's kernel families")
    kernel_prob: KernelWeights = key(UPSTREAM_KERNEL_PROB, "how often each kernel_list family is drawn")
    sinc_prob: Probability = key(0.1, "chance of a sinc (ringing) kernel instead, first stage")
    blur_sigma: BlurSigmas = key([0.2, 3.0], "Gaussian blur sigma range, first stage")
    betag_range: ShapeBetas = key([0.5, 4.0], "generalized Gaussian shape range, first stage")
    betap_range: ShapeBetas = key([1.0, 2.0], "plateau shape range, first stage")
    blur_kernel_size2: KernelSize = key(21, "the largest blur kernel of the second stage")
    kernel_list2: KernelList = key(list(KERNEL_TYPES), "the second stage's kernel families")
    kernel_prob2: KernelWeights = key(UPSTREAM_KERNEL_PROB, "how often each kernel_list2 family is drawn")
    sinc_prob2: Probability = key(0.1, "chance of a sinc kernel instead, second stage")
    blur_sigma2: BlurSigmas = key([0.2, 1.5], "Gaussian blur sigma range, second stage")
    betag_range2: ShapeBetas = key([0.5, 4.0], "generalized Gaussian shape range, second stage")
    betap_range2: ShapeBetas = key([1.0, 2.0], "plateau shape range, second stage")
    final_sinc_prob: Probability = key(0.8, "chance of the final sinc filter")


@section
class DegradationSettings:
    """The batch-level degradation of both stages (the batch transform applies it on the device)."""

    use_sharpener: Flag() = key(True, "USM-sharpen the HQ image into the training target")
    resize_prob: ResizeDirections = key([0.2, 0.7, 0.1], "first stage: chances to resize up, down or keep")
    resize_range: ResizeScales = key([0.15, 1.5], "first stage: the resize factor's range")
    gaussian_noise_prob: Probability = key(0.5, "first stage: chance of Gaussian (else Poisson) noise")
    noise_range: NoiseSigmas = key([1.0, 30.0], "first stage: Gaussian noise sigma range (0-255 scale)")
    poisson_scale_range: PoissonScales = key([0.05, 3.0], "first stage: Poisson noise scale range")
    gray_noise_prob: Probability = key(0.4, "first stage: chance the noise is gray (the same in every channel)")
    jpeg_range: JpegQualities = key([30.0, 95.0], "first stage: JPEG quality range")
    stage2_scale: Stage2Scale = key(4.0, "the second stage runs at 1/stage2_scale of the HQ size (or a [low, "
                                         "high] range of it)")
    second_blur_prob: Probability = key(0.8, "chance the second stage blurs")
    resize_prob2: ResizeDirections = key([0.3, 0.4, 0.3], "second stage: chances to resize up, down or keep")
    resize_range2: ResizeScales = key([0.3, 1.2], "second stage: the resize factor's range")
    gaussian_noise_prob2: Probability = key(0.5, "second stage: chance of Gaussian (else Poisson) noise")
    noise_range2: NoiseSigmas = key([1.0, 25.0], "second stage: Gaussian noise sigma range (0-255 scale)")
    poisson_scale_range2: PoissonScales = key([0.05, 2.5], "second stage: Poisson noise scale range")
    gray_noise_prob2: Probability = key(0.4, "second stage: chance the noise is gray")
    jpeg_range2: JpegQualities = key([30.0, 95.0], "second stage: JPEG quality range")
    resize_back: Flag() = key(True, "resize the LQ back to the HQ size (false: it stays 1/stage2_scale)")


@section
class RealESRGANTransformParams(DegradationSettings):
    hq_key: Choice("hq", note=" (what RealESRGANDataset returns)") = key("hq", "the batch key of the HQ image")
    extra_keys: Annotated[list[Literal["txt"]], Allowed("[txt] (the prompt, passed through)"),
                          BeforeValidator(lambda v: must(v, v == ["txt"]))] = key(["txt"], "the other batch keys "
                                                                                           "passed on")
    queue_size: Int(ge=0, allowed="an integer >= 0 (0 = no pair pool)") = key(
        256, "the training-pair pool that mixes pairs across batches (0 or at least batch_size)")


@section
class RealESRGANBatchTransform:
    kind: ClassVar[str] = "realesrgan"
    target: Choice(*REALESRGAN_TRANSFORM_TARGETS) = key(..., "Real-ESRGAN's second-order degradation of HQ images")
    params: Nested[RealESRGANTransformParams] = nested("the degradation settings and the pair pool")


@section
class ValDegradation(BlurKernelSettings, DegradationSettings):
    """The degradation that synthesises an HQ-only validation set (the pool plays no part there)."""


# ---- rules across keys of the HQ-only path ----

def check_hq_pairing(cfg: Any, source: str) -> None:
    """RealESRGANDataset and RealESRGANBatchTransform come together: HQ images need degrading, pairs do not."""
    train = cfg.data_config.train
    hq_data, degrading = train.dataset.kind == "realesrgan", train.batch_transform.kind == "realesrgan"
    where = "'data_config.train.batch_transform.target' in " + source
    if hq_data and not degrading:
        Source(source).fail(f"{where} must be {REALESRGAN_TRANSFORM_TARGETS[0]} with the RealESRGANDataset (its HQ "
                            f"images are degraded by that transform), got {train.batch_transform.target}.")
    if degrading and not hq_data:
        Source(source).fail(f"{where} is {train.batch_transform.target}, which degrades HQ images: use it with the "
                            f"dataset {REALESRGAN_DATASET_TARGETS[0]}, or IdentityBatchTransform with paired data.")


def check_kernel_weights(cfg: Any, source: str) -> None:
    """One kernel_prob weight per kernel_list type, in both stages."""
    params = cfg.data_config.train.dataset.params
    for suffix in ("", "2"):
        kinds, weights = getattr(params, "kernel_list" + suffix), getattr(params, "kernel_prob" + suffix)
        if len(kinds) != len(weights):
            Source(source).fail(f"'data_config.train.dataset.params.kernel_prob{suffix}' in {source} has "
                                f"{len(weights)} weights for the {len(kinds)} types of kernel_list{suffix}; give one "
                                f"weight per type.")


def check_pair_pool(cfg: Any, source: str) -> None:
    """A pool is off (0) or holds at least a batch: a full pool hands out a whole batch of its pairs."""
    train = cfg.data_config.train
    queue = train.batch_transform.params.queue_size
    if 0 < queue < train.batch_size:
        Source(source).fail(f"'data_config.train.batch_transform.params.queue_size' in {source} is {queue}, smaller "
                            f"than data_config.train.batch_size {train.batch_size}; use 0 (no pool) or at least "
                            f"{train.batch_size}.")


def check_val_source(cfg: Any, source: str) -> None:
    """One validation source (val_dir pairs or hq_dir images); degradation settings only for hq_dir."""
    val, hq_data = cfg.data_config.val, cfg.data_config.train.dataset.kind == "realesrgan"
    if val.hq_dir is not None and val.val_dir is not None:
        Source(source).fail(f"'data_config.val' in {source} sets both val_dir (LQ/GT pairs) and hq_dir (HQ images "
                            f"degraded once); keep one of them.")
    if val.hq_dir is None and val.degradation is not None:
        Source(source).fail(f"'data_config.val.degradation' in {source} degrades HQ validation images, but "
                            f"data_config.val.hq_dir is not set; set it, or remove degradation.")
    if val.hq_dir is not None and val.degradation in (None, "train") and not hq_data:
        Source(source).fail(f"'data_config.val.degradation' in {source} is the training data's, but the training data "
                            f"is not degraded on the fly; give data_config.val.degradation a mapping of settings.")


def resolve_val_degradation(cfg: Any) -> Any:
    """``cfg`` with data_config.val.degradation "train" (or null, with hq_dir) replaced by the training settings."""
    train, val = cfg.data_config.train, cfg.data_config.val
    if val.hq_dir is None or val.degradation not in (None, "train"):
        return cfg
    settings = {name: getattr(train.dataset.params, name) for name in file_keys(BlurKernelSettings)}
    settings.update({name: getattr(train.batch_transform.params, name) for name in file_keys(DegradationSettings)})
    val = dataclasses.replace(val, degradation=ValDegradation(**settings), degradation_from_train=True)
    return dataclasses.replace(cfg, data_config=dataclasses.replace(cfg.data_config, val=val))


def is_degradation_setting(dotted: str) -> bool:
    """Whether a dotted config key is a setting of the training degradation (or one element of one)."""
    parts = dotted.split(".")
    if parts[-1].isdigit():
        parts = parts[:-1]
    section, name = ".".join(parts[:-1]), parts[-1]
    return (section == "data_config.train.dataset.params" and name in file_keys(BlurKernelSettings)
            or section == "data_config.train.batch_transform.params" and name in file_keys(DegradationSettings))


def check_hq_only(cfg: Any, source: str) -> Any:
    """Every rule of the HQ-only path on a validated config; returns it with its validation degradation resolved."""
    check_hq_pairing(cfg, source)
    if cfg.data_config.train.dataset.kind == "realesrgan":
        check_kernel_weights(cfg, source)
        check_pair_pool(cfg, source)
    check_val_source(cfg, source)
    return resolve_val_degradation(cfg)
