"""``launch.py --restore``: run trained HYPIR weights on a folder of images, as HYPIR's inference does.

Where the model comes from (``model_from_source``): a ``best_config.yaml`` that analyze.py wrote (its
header names the weights), a run folder (``results/<name>``: summary.json and HYPIR_sd2_best.pth),
a sweep trial folder (config.yaml and HYPIR_sd2_best.pth), or any training config or HYPIR's
``sd2_gradio.yaml`` with ``--weights`` (the released HYPIR_sd2.pth loads too). Each image goes
through hypir_core/restoration.py, the path validation scores; ``--gt`` scores the saved files.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from hypir_core.checkpoint import BEST_WEIGHTS
from hypir_core.config import config_from_dict, load_config, read_yaml
from hypir_core.data import IMAGE_EXTENSIONS, read_image
from hypir_core.errors import ConfigError, DataError, WeightsError
from hypir_core.restoration import RestoreSettings, restore, to_uint8, vae_factor
from hypir_core.scoring import score_folder

WEIGHTS_LINE = "HYPIR-format weights of that trial: "  # analyze.py's best_config.yaml header
JPEG_OPTIONS = dict(quality=96, subsampling=0, optimize=True)  # the fork's inference.py saves so
DEFAULT_PROMPT = "high quality, sharp details"  # the users' trainer's and the fork's inference prompt


@dataclass
class ModelSpec:
    """What inference needs to rebuild a trained generator: the base model, the LoRA shape, the timesteps."""

    base_model_path: str
    model_t: int
    coeff_t: int
    lora_rank: int
    lora_modules: list[str]
    weights: str
    prompt: str = DEFAULT_PROMPT
    mixed_precision: str = "bf16"
    lpips_weights: str = "pretrained"
    source: str = ""

    @classmethod
    def from_config(cls, cfg, weights: str, source: str) -> "ModelSpec":
        """From a validated training config (hypir_core.config.Config)."""
        return cls(base_model_path=cfg.base_model_path, model_t=cfg.model_t, coeff_t=cfg.coeff_t,
                   lora_rank=cfg.lora_rank, lora_modules=list(cfg.lora_modules), weights=weights,
                   prompt=cfg.data_config.val.prompt, mixed_precision=cfg.mixed_precision,
                   lpips_weights=cfg.lpips_weights, source=source)


def _header_weights(path: str) -> str | None:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                return None
            if WEIGHTS_LINE in line:
                named = line.split(WEIGHTS_LINE, 1)[1].strip()
                return named if named.endswith(".pth") else None
    return None


def _gradio_spec(raw: dict, path: str, weights: str | None) -> ModelSpec:
    """HYPIR's sd2_gradio.yaml: base_model_path, model_t, coeff_t, lora_rank, lora_modules, weight_path."""
    minimal = {"data_config": {"train": {"dataset": {"target": "AIOFolderDataset", "params": {"root": "-"}}}},
               "max_train_steps": 1, **{k: raw[k] for k in ("base_model_type", "base_model_path", "model_t",
                                                             "coeff_t", "lora_rank", "lora_modules") if k in raw}}
    cfg = config_from_dict(minimal, source=path)  # the same key checks as a training config
    weights = weights or raw.get("weight_path")
    if not weights or weights == "TODO":
        raise ConfigError(f"'{path}' names no weights (weight_path is {raw.get('weight_path')!r}); set weight_path "
                          f"in it or pass --weights HYPIR_sd2.pth.")
    return ModelSpec.from_config(cfg, weights, path)


def model_from_source(source: str | None, config: str | None = None, weights: str | None = None) -> ModelSpec:
    """The model a restore runs: from SOURCE (a best_config.yaml, run or trial folder) or --config/--weights."""
    path = config or source
    if path is None:
        raise ConfigError("Nothing to restore with: pass a best_config.yaml, a run or trial folder, or "
                          "--config CONFIG.yaml --weights WEIGHTS.pth.")
    if not os.path.exists(path):
        raise ConfigError(f"Restore source '{path}' does not exist; pass analyze.py's best_config.yaml, a run folder "
                          f"(results/<name>), a sweep trial folder, or --config X.yaml --weights W.pth.")
    if os.path.isdir(path):
        folder = Path(path)
        if (folder / "config.yaml").is_file():  # a sweep trial folder
            cfg = load_config(folder / "config.yaml")
        elif (folder / "summary.json").is_file():  # a launch.py --single run folder
            with open(folder / "summary.json") as handle:
                cfg = config_from_dict(json.load(handle)["config"], source=str(folder / "summary.json"))
        else:
            raise ConfigError(f"Folder '{path}' holds neither config.yaml (a sweep trial) nor summary.json (a run); "
                              f"pass a trial or run folder, a best_config.yaml, or --config X.yaml --weights W.pth.")
        return ModelSpec.from_config(cfg, weights or str(folder / BEST_WEIGHTS), path)
    raw = read_yaml(path)
    if isinstance(raw, dict) and "data_config" not in raw and "weight_path" in raw:
        return _gradio_spec(raw, path, weights)
    cfg = load_config(path)
    weights = weights or _header_weights(path)
    if weights is None:
        raise ConfigError(f"'{path}' names no weights file (a best_config.yaml whose trial's weights were not kept, "
                          f"or a training config); pass --weights WEIGHTS.pth.")
    return ModelSpec.from_config(cfg, weights, path)


def check_weights(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The weights file's LoRA tensors, refused in one sentence when missing or of another rank or module list."""
    if not os.path.isfile(spec.weights):
        raise WeightsError(f"Weights file '{spec.weights}' does not exist; pass --weights with a HYPIR .pth "
                           f"(HYPIR_sd2_best.pth of a run or trial, or the released HYPIR_sd2.pth).")
    try:
        state = torch.load(spec.weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: say which
        raise WeightsError(f"Weights file '{spec.weights}' is not a torch state dict ({type(exc).__name__}); pass a "
                           f"HYPIR .pth file (the UNet's LoRA weights).") from None
    ranks = {int(t.shape[0]) for k, t in state.items() if "lora_A" in k}
    if ranks and ranks != {spec.lora_rank}:
        raise WeightsError(f"Weights '{spec.weights}' have LoRA rank {sorted(ranks)[0]} but {spec.source} says "
                           f"lora_rank {spec.lora_rank}; use the config the weights were trained with (or set "
                           f"lora_rank: {sorted(ranks)[0]} in it).")
    return state


def load_generator(spec: ModelSpec, device: torch.device):
    """The trained one-step generator on ``device``: base model, LoRA of the spec's shape, weights loaded strictly."""
    from hypir_core.models import OneStepGenerator, add_lora, load_lora_weights, load_sd2

    check_weights(spec)
    dtype = torch.float32
    if device.type == "cuda":
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.mixed_precision, torch.float32)
    parts = load_sd2(spec.base_model_path, dtype, device)
    add_lora(parts.unet, spec.lora_rank, spec.lora_modules)
    load_lora_weights(parts.unet, spec.weights)
    generator = OneStepGenerator(parts, spec.model_t, spec.coeff_t)
    if dtype != torch.float32:  # the UNet under autocast with its fp32 LoRA, as in training
        generator.unet_autocast = lambda: torch.autocast(device.type, dtype=dtype)
    return generator.eval()


def find_images(input_path: str) -> tuple[Path, list[Path]]:
    """(root, images): one file, or every image under a folder (sorted; ``GT`` folders skipped)."""
    path = Path(input_path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"Input '{path}' is not an image ({', '.join(IMAGE_EXTENSIONS)}); pass an image or a "
                            f"folder.")
        return path.parent, [path]
    if not path.is_dir():
        raise DataError(f"Input '{path}' does not exist; pass a folder of images or one image file.")
    images = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                     and "GT" not in p.relative_to(path).parts[:-1]), key=lambda p: str(p.relative_to(path)))
    if not images:
        raise DataError(f"Input folder '{path}' holds no images ({', '.join(IMAGE_EXTENSIONS)}, GT folders skipped); "
                        f"pass the folder of the LQ images.")
    return path, images


@dataclass
class RestoreRun:
    """What a restore wrote: output files by input, and (with --gt) the scores."""

    outputs: dict[str, str] = field(default_factory=dict)
    seconds_per_image: float = 0.0
    per_image: list[dict] = field(default_factory=list)
    per_type: list[dict] = field(default_factory=list)


def _prompt_for(image: Path, root: Path, prompt: str, txt_dir: str | None) -> str:
    if txt_dir is None:
        return prompt
    path = Path(txt_dir) / image.relative_to(root).with_suffix(".txt")
    if not path.is_file():
        raise DataError(f"Prompt file '{path}' for image '{image}' does not exist; --txt-dir needs one .txt per image "
                        f"at the image's relative path, or drop --txt-dir to use --prompt for all.")
    return path.read_text(encoding="utf-8").strip()


def restore_images(spec: ModelSpec, input_path: str, output_dir: str, settings: RestoreSettings, *,
                   prompt: str | None = None, txt_dir: str | None = None, seed: int = 231,
                   image_format: str = "png", gt_dir: str | None = None, device: str | None = None,
                   progress: bool = True) -> RestoreRun:
    """Restore every image under ``input_path`` into ``output_dir`` (same relative paths); score them with ``gt_dir``.

    Each image's posterior sample is seeded with ``seed`` alone, so an image restores the same in
    any folder and order.
    """
    if image_format not in ("png", "jpg"):
        raise ConfigError(f"format is {image_format!r}; use png or jpg.")
    root, images = find_images(input_path)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = load_generator(spec, target)
    settings.check(vae_factor(generator.vae))
    prompt = spec.prompt if prompt is None else prompt
    embeddings: dict[str, torch.Tensor] = {}
    run = RestoreRun()
    out_root = Path(output_dir)
    started = time.perf_counter()
    for image in tqdm(images, desc="Restoring", unit="image", disable=not progress):
        text = _prompt_for(image, root, prompt, txt_dir)
        if text not in embeddings:
            embeddings[text] = generator.encode_prompt([text])
        lq = torch.from_numpy(read_image(image)).permute(2, 0, 1)[None].float().to(target) / 255
        rng = torch.Generator().manual_seed(seed)
        restored = to_uint8(restore(generator, lq, embeddings[text], settings, rng))[0]
        destination = out_root / image.relative_to(root).with_suffix("." + image_format)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if image_format == "jpg":
            Image.fromarray(restored).save(destination, format="JPEG", **JPEG_OPTIONS)
        else:
            Image.fromarray(restored).save(destination)
        run.outputs[str(image)] = str(destination)
    if target.type == "cuda":
        torch.cuda.synchronize()
    run.seconds_per_image = (time.perf_counter() - started) / len(images)
    _write_record(out_root, spec, settings, prompt, txt_dir, seed, image_format, run)
    if gt_dir is not None:
        run.per_image, run.per_type = score_folder(run.outputs, root, gt_dir, target, spec.lpips_weights, out_root)
    return run


def _write_record(out_root: Path, spec: ModelSpec, settings: RestoreSettings, prompt: str, txt_dir, seed: int,
                  image_format: str, run: RestoreRun) -> None:
    """restore.json: what produced these images (model, weights, every setting), to repeat or compare them."""
    record = {"model": asdict(spec), "settings": asdict(settings), "prompt": None if txt_dir else prompt,
              "txt_dir": txt_dir, "seed": seed, "format": image_format, "images": len(run.outputs),
              "seconds_per_image": round(run.seconds_per_image, 4)}
    with open(out_root / "restore.json", "w") as handle:
        json.dump(record, handle, indent=2)



def print_run(run: RestoreRun, output_dir: str) -> None:
    """Where the images went, seconds per image, and with --gt the per-type scores as a table."""
    from rich.table import Table

    from hypir_core.terminal import make_console

    console = make_console()
    if run.per_type:
        table = Table(title="Restored images against their GT (metrics.csv, metrics_per_type.csv)")
        for column in ("type", "images", "PSNR", "SSIM", "LPIPS", "Final_Score"):
            table.add_column(column, justify="left" if column == "type" else "right")
        for row in run.per_type:
            table.add_row(row["type"], str(row["images"]), f"{row['PSNR']:.3f}", f"{row['SSIM']:.4f}",
                          f"{row['LPIPS']:.4f}", f"{row['Final_Score']:.4f}")
        console.print(table)
    console.print(f"Restored {len(run.outputs)} images into {output_dir}: {run.seconds_per_image:.3f} s/image "
                  f"(model loading excluded)")
