"""The ``data_config`` keys of a training config: the training data (a pair list, an all-in-one folder, or upstream
HYPIR's HQ images degraded on the fly) and the validation set, each key declared once (``hypir_core.schema``);
the degradation settings are in ``hypir_core.config_degradation``, the rest of the config in ``hypir_core.config``."""

import dataclasses
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BeforeValidator, Discriminator, Tag

from hypir_core.config_degradation import (REALESRGAN_DATASET_TARGETS, REALESRGAN_TRANSFORM_TARGETS,
                                           BlurKernelSettings, FileBackendConfig, HQFileMeta,
                                           RealESRGANBatchTransform, ValDegradation)
from hypir_core.schema import (Allowed, Choice, Derived, Flag, Int, Nested, Number, Says, Text, Texts, key, must,
                               nested, refuse_with, section, show_value)

# Dataset names users write in `target:` (HYPIR's own and ours), mapped to our loaders; never imported.
DATASET_TARGETS = {
    "HYPIR.dataset.paired.PairedParquetDataset": "paired_list",
    "PairedListDataset": "paired_list",
    "AIOFolderDataset": "aio_folder",
    **{target: "realesrgan" for target in REALESRGAN_DATASET_TARGETS},  # HQ images, degraded on the fly
}
IDENTITY_TRANSFORM_TARGETS = ("HYPIR.dataset.batch_transform.IdentityBatchTransform", "IdentityBatchTransform")
TRANSFORM_TARGETS = (*IDENTITY_TRANSFORM_TARGETS, *REALESRGAN_TRANSFORM_TARGETS)
DEGRADATION_TYPES = ["Blur", "Haze", "Lowlight", "Rain", "Snow"]
HQ_VAL_TYPE = "RealESRGAN"  # the type a validation set synthesised from HQ images is scored under


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


@section
class RealESRGANParams(Augmentation, BlurKernelSettings):
    file_meta: HQFileMeta = key(..., "the HQ image list and its column names")
    file_backend_cfg: Nested[FileBackendConfig] = nested("how images are read (the hard disk only)")
    use_rot: Flag() = key(False, "random 90-degree rotations (upstream's default: off)")
    p_empty_prompt: Number(ge=0, le=1) = key(0.0, "chance an image trains with the empty prompt")
    return_file_name: Flag() = key(False, "each item also carries its image path")


def _targets(kind: str) -> Any:
    names = [target for target, its_kind in DATASET_TARGETS.items() if its_kind == kind]
    # k is the dataset's target key; where() names the dataset itself (an override of the dataset set it).
    missing = Says(lambda k, where: f"Missing required key '{k}' in {where(k.removesuffix('.target'))}; set it to "
                                    f"one of {', '.join(DATASET_TARGETS)}.", missing_only=True)
    return Annotated[Choice(*names), missing]


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


@section
class RealESRGANDataset:
    kind: ClassVar[str] = "realesrgan"
    target: _targets("realesrgan") = key(..., "HQ images, degraded on the fly (upstream HYPIR's)")
    params: Nested[RealESRGANParams] = nested("the HQ image list, augmentation and per-image blur kernels")


def _check_dataset_target(value: Any) -> Any:
    """The target first: known names map to our loaders, nothing is imported."""
    if dataclasses.is_dataclass(value) or not isinstance(value, dict) or "target" not in value:
        return value  # validated already (dataclasses.replace), not a mapping, or no target (see _targets)
    target, names = value["target"], ", ".join(DATASET_TARGETS)
    if not isinstance(target, str):
        refuse_with(lambda k, where: f"'{k}.target' in {where(k + '.target')} must be a dataset name string such as "
                                     f"{next(iter(DATASET_TARGETS))}, got {show_value(target)}.")
    if target not in DATASET_TARGETS:
        refuse_with(lambda k, where: f"'{k}.target' in {where(k + '.target')} must be one of the known dataset names "
                                     f"{names}, got {show_value(target)}; class paths are never imported.")
    return value


DatasetConfig = Annotated[
    Union[Annotated[PairedListDataset, Tag("paired_list")], Annotated[AIOFolderDataset, Tag("aio_folder")],
          Annotated[RealESRGANDataset, Tag("realesrgan")]],
    # Without a target the folder variant reports it missing (after any misspelt key such as 'targt').
    Discriminator(lambda v: DATASET_TARGETS.get(v.get("target"), "aio_folder") if isinstance(v, dict)
                  else getattr(v, "kind", None)),
    BeforeValidator(_check_dataset_target),
    Allowed("a mapping with 'target' (e.g. HYPIR.dataset.paired.PairedParquetDataset) and 'params'")]


@section
class IdentityTransformParams:
    hq_key: Choice("GT") = key("GT", "the batch key of the target image")
    extra_keys: Annotated[list[Literal["LQ", "txt"]], Allowed("[LQ, txt] (the keys our datasets return)"),
                          BeforeValidator(lambda v: must(v, isinstance(v, list) and sorted(map(str, v)) == [
                              "LQ", "txt"]))] = key(["LQ", "txt"], "the other batch keys passed on")


@section
class IdentityBatchTransform:
    kind: ClassVar[str] = "identity"
    target: Choice(*IDENTITY_TRANSFORM_TARGETS) = key(IDENTITY_TRANSFORM_TARGETS[0], "pairs are used as they are")
    params: Nested[IdentityTransformParams] = nested("the identity transform's keys")


def _check_transform_target(value: Any) -> Any:
    """A known transform name or none (the identity); class paths are never imported."""
    target = value.get("target") if isinstance(value, dict) else None
    if isinstance(target, str) and target not in TRANSFORM_TARGETS:
        refuse_with(lambda k, where: f"'{k}.target' in {where(k + '.target')} must be one of "
                                     f"{', '.join(TRANSFORM_TARGETS)}, got {show_value(target)}.")
    return value


BatchTransform = Annotated[
    Union[Annotated[IdentityBatchTransform, Tag("identity")], Annotated[RealESRGANBatchTransform, Tag("realesrgan")]],
    Discriminator(lambda v: ("realesrgan" if v.get("target") in REALESRGAN_TRANSFORM_TARGETS else "identity")
                  if isinstance(v, dict) else getattr(v, "kind", None)),
    BeforeValidator(_check_transform_target),
    Allowed("a mapping with 'target' (IdentityBatchTransform, or RealESRGANBatchTransform for HQ images) and "
            "'params'")]


@section
class TrainDataConfig:
    batch_size: Int(ge=1) = key(4, "images per batch (the generator and the discriminator each take a batch a step)")
    dataloader_num_workers: Int(ge=0) = key(4, "data loading processes (0 = in the training process)")
    dataset: DatasetConfig = key(..., "the training data: a pair list, an all-in-one folder or HQ images")
    batch_transform: Nested[BatchTransform] = nested(
        "what is done to a batch before the step: nothing (pairs), or Real-ESRGAN's degradation (HQ images)")


# "train", or a mapping of settings (a mistake inside it is named by its key).
ValDegradationSetting = Annotated[
    Union[Annotated[Literal["train"], Tag("train")], Annotated[ValDegradation, Tag("settings")]],
    Discriminator(lambda v: "settings" if isinstance(v, dict) or dataclasses.is_dataclass(v) else "train")]


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
    color_fix: Choice("none", "wavelet") = key("none", "after the model, as HYPIR's inference does: wavelet keeps the "
                                                       "output's high frequencies and the LQ's low band; none = as "
                                                       "the users' trainer validates")
    tile_size: Int(ge=8, null="= the whole image") = key(None, "Gaussian-weighted tiles of this many pixels for VAE "
                                                              "encode, UNet and decode (HYPIR: 512)")
    tile_stride: Int(ge=8) = key(256, "pixels between tile starts (HYPIR: 256)")
    # HQ-only validation: LQ synthesised once from hq_dir's images (hypir_core.hq_val).
    hq_dir: Text(allowed="a folder of HQ images (or demo://hq/val)", null="") = key(
        None, "HQ validation images, degraded once with degradation and degradation_seed (not with val_dir)")
    degradation: Annotated[Optional[ValDegradationSetting], Allowed(
        '"train" (the training data\'s settings), a mapping of degradation settings (those of RealESRGANDataset and '
        'RealESRGANBatchTransform) or null')] = key(None, "hq_dir's degradation: train (null = train), or its own "
                                                          "settings (the rest upstream's)")
    degradation_seed: Int(0, 2**32 - 1) = key(0, "seeds hq_dir's degradation: the same seed, the same set")
    # Whether the loader resolved degradation from the training settings ("train" or null): a sweep that changes
    # them must not score its trials on such a set (hypir_sweep.spec.check_validation).
    degradation_from_train: Derived[bool] = dataclasses.field(default=False, compare=False)


@section
class DataConfig:
    train: Nested[TrainDataConfig] = nested("training data")
    val: Nested[ValDataConfig] = nested("validation data")


def _value(val_cfg: Any, name: str) -> Any:
    return val_cfg.get(name) if isinstance(val_cfg, dict) else getattr(val_cfg, name, None)


def has_validation(val_cfg: Any) -> bool:
    """Whether data_config.val (a section, or its dict) names a validation set (val_dir, or hq_dir for one
    synthesised from HQ images)."""
    return _value(val_cfg, "val_dir") is not None or _value(val_cfg, "hq_dir") is not None


def reported_types(val_cfg: Any) -> list[str]:
    """The degradation types data_config.val (a section, or its dict) is scored by, each as val/<type>/PSNR, ...:
    RealESRGAN for a set synthesised from hq_dir, else degradation_types."""
    if _value(val_cfg, "hq_dir") is not None:
        return [HQ_VAL_TYPE]
    return list(_value(val_cfg, "degradation_types") or DEGRADATION_TYPES)
