"""Config loading: the seed configs load unchanged, overrides work, mistakes give one clear sentence."""

from pathlib import Path

import pytest
import yaml

from hypir_core.config import DEFAULT_LORA_MODULES, config_from_dict, config_to_dict, load_config
from hypir_core.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SEED_CONFIGS = ["sd2_finetune_5k.yaml", "sd2_finetune_5k_improved.yaml"]


def minimal() -> dict:
    """The smallest valid config: only the required keys."""
    return {
        "base_model_path": "demo://tiny-sd2",
        "max_train_steps": 10,
        "data_config": {"train": {"dataset": {"target": "AIOFolderDataset", "params": {"root": "demo://aio/train"}}}},
    }


def write(tmp_path: Path, data, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_original_seed_config_loads_with_documented_values():
    cfg = load_config(CONFIGS / "sd2_finetune_5k.yaml")
    assert cfg.name == "sd2_finetune_5k" and cfg.output_dir == "results/sd2_finetune_5k"
    train = cfg.data_config.train
    assert (train.batch_size, train.dataloader_num_workers) == (4, 4)
    assert train.dataset.kind == "paired_list"
    assert train.dataset.target == "HYPIR.dataset.paired.PairedParquetDataset"
    meta = train.dataset.params.file_meta
    assert (meta.file_list, meta.lq_key, meta.gt_key, meta.prompt_key) == (
        "data/train.parquet", "lq_path", "gt_path", "prompt")
    params = train.dataset.params
    assert (params.out_size, params.crop_type, params.use_hflip, params.use_rot, params.return_file_name) == (
        512, "none", True, True, False)
    assert train.batch_transform.params.hq_key == "GT" and train.batch_transform.params.extra_keys == ["LQ", "txt"]
    val = cfg.data_config.val
    assert val.val_dir == "/data/AIO/Val" and val.num_samples_per_type is None and val.batch_size == 1
    assert val.degradation_types == ["Blur", "Haze", "Lowlight", "Rain", "Snow"]
    assert val.prompt == "high quality, sharp details"  # the users' trainer validates with this prompt
    weights = (cfg.lambda_gan, cfg.lambda_lpips, cfg.lambda_l2, cfg.lambda_l1, cfg.lambda_ssim)
    assert weights == (0.5, 5.0, 1.0, 1.0, 0.0)
    assert (cfg.lr_G, cfg.lr_D) == (1e-5, 1e-5) and isinstance(cfg.lr_G, float)
    # No weight_decay in the file: torch's AdamW default 0.01, as in the users' trainer.
    assert cfg.opt_kwargs.weight_decay == 0.01 and cfg.opt_kwargs.betas == [0.9, 0.999]
    assert cfg.ema_warmup is False  # constant EMA decay, as the users' trainer
    assert (cfg.model_t, cfg.coeff_t, cfg.lora_rank, cfg.seed, cfg.ema_decay) == (200, 200, 256, 231, 0.999)
    assert cfg.lora_modules == DEFAULT_LORA_MODULES and len(cfg.lora_modules) == 13
    assert (cfg.mixed_precision, cfg.report_to, cfg.swanlab_project) == ("bf16", "swanlab", "HYPIR-training")
    assert (cfg.max_train_steps, cfg.validation_steps, cfg.checkpointing_steps, cfg.checkpoints_total_limit) == (
        50000, 500, 500, 2)
    assert (cfg.log_image_steps, cfg.log_grad_steps, cfg.log_grad_modules) == (100, 100, ["conv_out"])
    assert cfg.resume_from_checkpoint is None and cfg.resume_ema is True and cfg.optimizer_type == "adam"
    # Keys the seed files leave out take the documented defaults.
    assert cfg.disc_backbone == "openclip_convnext_xxlarge" and cfg.lpips_weights == "pretrained"


def test_improved_seed_config_loads_with_documented_values():
    cfg = load_config(CONFIGS / "sd2_finetune_5k_improved.yaml")
    assert cfg.name == "sd2_finetune_5k_improved"
    weights = (cfg.lambda_gan, cfg.lambda_lpips, cfg.lambda_l2, cfg.lambda_l1, cfg.lambda_ssim)
    assert weights == (0.3, 3.0, 2.0, 2.0, 1.0)
    assert (cfg.lr_G, cfg.lr_D) == (2e-5, 5e-6)
    assert cfg.opt_kwargs.weight_decay == 1e-4
    assert (cfg.model_t, cfg.coeff_t, cfg.lora_rank, cfg.data_config.train.batch_size) == (200, 200, 256, 4)


def test_defaults_fill_a_minimal_config(tmp_path):
    cfg = load_config(write(tmp_path, minimal(), "tiny_run.yaml"))
    assert cfg.output_dir == "results/tiny_run"
    assert cfg.coeff_t == cfg.model_t == 200
    assert cfg.data_config.train.dataset.kind == "aio_folder"
    assert cfg.data_config.train.dataset.params.degradation_types == ["Blur", "Haze", "Lowlight", "Rain", "Snow"]
    assert cfg.data_config.train.batch_transform.target.endswith("IdentityBatchTransform")
    assert cfg.data_config.val.val_dir is None and cfg.data_config.val.resize == 512
    assert cfg.opt_kwargs.eps == 1e-8 and cfg.lambda_ssim == 0.0


def test_overrides_set_top_level_nested_and_list_values():
    cfg = load_config(CONFIGS / "sd2_finetune_5k.yaml", [
        "lambda_l2=2",
        "data_config.val.val_dir=/mnt/AIO/Val",
        "lora_modules=[to_k,to_q]",
        "data_config.train.dataset.params.out_size=256",
        "data_config.train.dataset.params.file_meta.file_list=other.csv",
        "opt_kwargs.betas=[0.5, 0.99]",
        "lr_G=3e-5",
        "resume_from_checkpoint=latest",
        "data_config.val.num_samples_per_type=50",
    ])
    assert cfg.lambda_l2 == 2.0 and isinstance(cfg.lambda_l2, float)
    assert cfg.data_config.val.val_dir == "/mnt/AIO/Val"
    assert cfg.lora_modules == ["to_k", "to_q"]
    assert cfg.data_config.train.dataset.params.out_size == 256
    assert cfg.data_config.train.dataset.params.file_meta.file_list == "other.csv"
    assert cfg.opt_kwargs.betas == [0.5, 0.99] and cfg.lr_G == 3e-5
    assert cfg.resume_from_checkpoint == "latest" and cfg.data_config.val.num_samples_per_type == 50


def test_override_can_fill_a_section_the_file_lacks(tmp_path):
    cfg = load_config(write(tmp_path, minimal()), ["data_config.val.val_dir=demo://aio/val", "model_t=100"])
    assert cfg.data_config.val.val_dir == "demo://aio/val"
    assert cfg.coeff_t == 100  # follows model_t when not set


def test_bad_overrides_name_the_override(tmp_path):
    path = write(tmp_path, minimal())
    message = error_of(path, ["lamda_l2=2"])
    assert "Unknown key 'lamda_l2'" in message and "override 'lamda_l2=2'" in message
    assert "did you mean 'lambda_l2'?" in message and str(path) in message
    message = error_of(path, ["lora_rank=big"])
    assert "'lora_rank'" in message and "override 'lora_rank=big'" in message and "an integer >= 1" in message
    message = error_of(path, ["lambda_l2"])
    assert "key.sub=value" in message and "'lambda_l2'" in message


@pytest.mark.parametrize("name", SEED_CONFIGS)
def test_config_to_dict_round_trips(tmp_path, name):
    cfg = load_config(CONFIGS / name)
    plain = config_to_dict(cfg)
    assert plain["data_config"]["train"]["dataset"]["target"] == "HYPIR.dataset.paired.PairedParquetDataset"
    assert set(plain["data_config"]["train"]["dataset"]) == {"target", "params"}
    assert config_from_dict(plain, name=cfg.name) == cfg
    # The dict is plain YAML: dumping it and loading the file gives the same config.
    again = load_config(write(tmp_path, yaml.safe_dump(plain), f"{cfg.name}.yaml"))
    assert again == cfg


def with_key(dotted: str, value):
    """Minimal config with one dotted key set (sections created as needed)."""
    data = minimal()
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def without(*dotted: str):
    data = minimal()
    for key in dotted:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]
    return data


BAD_CONFIGS = {
    "unknown key": (with_key("lamda_l2", 2), ["Unknown key 'lamda_l2'", "did you mean 'lambda_l2'?"]),
    "unknown nested key": (with_key("data_config.val.val_dri", "x"),
                           ["'data_config.val.val_dri'", "did you mean 'data_config.val.val_dir'?"]),
    "string for int": (with_key("lora_rank", "big"), ["'lora_rank'", "must be an integer >= 1", "'big' (str)"]),
    "float for int": (with_key("lora_rank", 256.0), ["'lora_rank'", "must be an integer >= 1", "256.0 (float)"]),
    "rank below 1": (with_key("lora_rank", 0), ["'lora_rank'", "an integer >= 1", "got 0 (int)"]),
    "negative weight": (with_key("lambda_gan", -0.5), ["'lambda_gan'", "a number >= 0", "-0.5"]),
    "negative weight as string": (with_key("lambda_l1", "-1e-3"), ["'lambda_l1'", "a number >= 0", "'-1e-3'"]),
    "model_t too big": (with_key("model_t", 1000), ["'model_t'", "the scheduler's 1000 training timesteps: 0..999",
                                                    "got 1000"]),
    "coeff_t negative": (with_key("coeff_t", -1), ["'coeff_t'", "0..999"]),
    "ema_decay of 1": (with_key("ema_decay", 1.0), ["'ema_decay'", "a number in [0, 1)", "1.0 (float)"]),
    "mixed precision": (with_key("mixed_precision", "fp8"), ["'mixed_precision'", "one of no, fp16, bf16", "'fp8'"]),
    "report_to": (with_key("report_to", "wandb"), ["'report_to'", "one of swanlab, tensorboard, none", "'wandb'"]),
    "string for bool": (with_key("use_ema", "true"), ["'use_ema'", "true or false", "'true' (str)"]),
    "zero lr": (with_key("lr_G", 0), ["'lr_G'", "a number > 0"]),
    "opt_kwargs key": (with_key("opt_kwargs.momentum", 0.9),
                       ["Unknown key 'opt_kwargs.momentum'", "betas, eps, weight_decay"]),
    "betas": (with_key("opt_kwargs.betas", [0.9]), ["'opt_kwargs.betas'", "a list of 2 numbers in [0, 1)"]),
    "empty lora_modules": (with_key("lora_modules", []), ["'lora_modules'", "a non-empty list of UNet module names"]),
    "file_list suffix": (with_key("data_config.train.dataset",
                                  {"target": "PairedListDataset", "params": {"file_meta": {"file_list": "pairs.txt"}}}),
                         ["'data_config.train.dataset.params.file_meta.file_list'", ".parquet or .csv", "'pairs.txt'"]),
    "val resize": (with_key("data_config.val.resize", 4), ["'data_config.val.resize'", 'an integer >= 8 or "native"']),
    "missing base_model_path": (without("base_model_path"), ["Missing required key 'base_model_path'",
                                                             "stabilityai/stable-diffusion-2-1-base"]),
    "missing max_train_steps": (without("max_train_steps"), ["Missing required key 'max_train_steps'",
                                                             "an integer >= 1"]),
    "missing dataset": (without("data_config.train.dataset"),
                        ["Missing required key 'data_config.train.dataset'", "'target'"]),
    "missing data_config": (without("data_config"), ["Missing required key 'data_config.train.dataset'"]),
    "missing AIO root": (with_key("data_config.train.dataset.params", {}),
                         ["Missing required key 'data_config.train.dataset.params.root'", "folder"]),
    "section not a mapping": (with_key("opt_kwargs", 5), ["'opt_kwargs'", "a mapping of keys", "5 (int)"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_gives_one_sentence_naming_key_file_and_allowed(tmp_path, case):
    data, expected = BAD_CONFIGS[case]
    path = write(tmp_path, data)
    message = error_of(path)
    assert str(path) in message
    for part in expected:
        assert part in message, (part, message)


def test_missing_file_invalid_yaml_and_non_mapping(tmp_path):
    message = error_of(tmp_path / "nope.yaml")
    assert message.startswith(f"Config file '{tmp_path / 'nope.yaml'}' does not exist;")
    message = error_of(write(tmp_path, "lambda_l2: 1\nlora_rank: [256\nseed: 1\n"))
    assert "is not valid YAML at line" in message and "bad.yaml" in message
    message = error_of(write(tmp_path, "seed: 1\nseed: 2\n"))
    assert "line 2" in message and "duplicate key 'seed'" in message
    message = error_of(write(tmp_path, "- a\n- b\n"))
    assert "top level of" in message and "mapping of config keys" in message and "['a', 'b'] (list)" in message
    message = error_of(write(tmp_path, "# nothing yet\n"))
    assert "bad.yaml' is empty" in message


def test_unknown_target_lists_known_names_and_is_never_imported(tmp_path):
    data = with_key("data_config.train.dataset", {"target": "os.system", "params": {}})
    message = error_of(write(tmp_path, data))
    assert "'data_config.train.dataset.target'" in message and "'os.system'" in message
    for known in ["HYPIR.dataset.paired.PairedParquetDataset", "PairedListDataset", "AIOFolderDataset"]:
        assert known in message
    data = with_key("data_config.train.batch_transform", {"target": "my.Transform"})
    message = error_of(write(tmp_path, data))
    assert "IdentityBatchTransform" in message and "'my.Transform'" in message


def test_a_misspelt_required_key_is_named_with_its_spelling_not_as_missing(tmp_path):
    """The unknown key comes first among its siblings, so the user sees the typo and the fix."""
    data = without("max_train_steps")
    data["max_train_step"] = 10
    assert "Unknown key 'max_train_step'" in error_of(write(tmp_path, data))
    assert "did you mean 'max_train_steps'?" in error_of(write(tmp_path, data))
    data = minimal()
    data["data_config"]["train"] = {"datset": data["data_config"]["train"]["dataset"]}
    assert "did you mean 'data_config.train.dataset'?" in error_of(write(tmp_path, data))
    data = with_key("data_config.train.dataset", {"targt": "AIOFolderDataset", "params": {"root": "x"}})
    assert "did you mean 'data_config.train.dataset.target'?" in error_of(write(tmp_path, data))


def test_override_values_are_taken_as_given_and_override_texts_as_yaml(tmp_path):
    """A sweep passes values (a string that looks like a number stays a string); the CLI passes YAML text."""
    path = write(tmp_path, minimal())
    cfg = config_from_dict(minimal(), source=str(path), overrides={"swanlab_project": "0.5",
                                                                   "lr_G": 1.2345678901234567e-05})
    assert cfg.swanlab_project == "0.5" and cfg.lr_G == 1.2345678901234567e-05
    message = error_of(path, ["swanlab_project=0.5"])
    assert "'swanlab_project'" in message and "override 'swanlab_project=0.5'" in message and "0.5 (float)" in message
    message = error_of(path, {"lora_rank": "big"})
    assert "'lora_rank'" in message and "override 'lora_rank=big'" in message


def test_reference_and_json_schemas_are_generated_from_the_current_declaration():
    from hypir_sweep.reference import generated

    for path, text in generated().items():
        assert path.is_file() and path.read_text() == text, f"{path} is out of date: python -m hypir_sweep.reference"


def test_every_key_in_the_reference_says_what_it_means_and_allows():
    from hypir_sweep.reference import rows

    from hypir_core.config import Config
    from hypir_sweep.spec_schema import SweepSpec

    for cls in (Config, SweepSpec):
        for key, _, allowed, meaning in rows(cls):
            assert meaning and allowed, key


def _yaml_as_editors_read_it(text: str):
    """YAML 1.2 floats (1e-5 is a number, as editors read it; PyYAML's 1.1 rules make it a string)."""
    import re

    class Loader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)


def test_editors_json_schema_accepts_the_shipped_files_and_flags_mistakes():
    import json

    import jsonschema

    root = CONFIGS.parent
    for folder, schema_name in (("configs", "config"), ("sweeps", "sweep")):
        schema = json.loads((root / "docs" / "schema" / f"{schema_name}.schema.json").read_text())
        validator = jsonschema.Draft202012Validator(schema)
        for path in sorted((root / folder).glob("*.yaml")):
            text = path.read_text()
            assert text.startswith(f"# yaml-language-server: $schema=../docs/schema/{schema_name}.schema.json\n"), path
            errors = [e.message for e in validator.iter_errors(_yaml_as_editors_read_it(text))]
            assert not errors, (path.name, errors)
    validator = jsonschema.Draft202012Validator(json.loads((root / "docs/schema/config.schema.json").read_text()))
    for key, value in [("lora_rank", "big"), ("lamda_l2", 2), ("mixed_precision", "fp8"), ("lr_G", 0),
                       ("data_config.val.resize", 4), ("data_config.train.dataset.target", "os.system")]:
        assert list(validator.iter_errors(with_key(key, value))), key
    assert not list(validator.iter_errors(minimal()))
