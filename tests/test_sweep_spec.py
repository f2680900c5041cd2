"""Sweep specs: the shipped specs load; every mistake is one sentence naming the key and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hypir_sweep.resources import check_gpus
from hypir_sweep.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))


def write_spec(tmp_path, **fields) -> Path:
    spec = {"name": "t", "base_config": TINY, "overrides": {"max_train_steps": 30, "validation_steps": 10},
            "space": {"lambda_gan": {"type": "loguniform", "low": 0.05, "high": 1.0}}, "resources": {"gpu": 0}}
    spec.update(fields)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_specs_load(path):
    spec = load_spec(path)
    assert spec.space and spec.metric == "val/Final_Score" and spec.mode == "max"
    assert spec.search.num_samples >= len(spec.search.points_to_evaluate)


def test_shipped_specs_cover_the_issue_spaces():
    names = {p.stem for p in SHIPPED}
    assert {"loss_weights", "learning_rates", "model_t", "lora_rank", "full", "quickstart"} <= names
    weights = {p.key for p in load_spec(ROOT / "sweeps" / "loss_weights.yaml").space}
    assert weights == {"lambda_gan", "lambda_lpips", "lambda_l2", "lambda_l1", "lambda_ssim"}
    model_t = load_spec(ROOT / "sweeps" / "model_t.yaml")
    assert model_t.ties == {"coeff_t": "model_t"}


def test_users_hand_tuned_configs_are_the_first_points():
    spec = load_spec(ROOT / "sweeps" / "loss_weights.yaml")
    assert spec.search.point_labels[:2] == ("sd2_finetune_5k", "sd2_finetune_5k_improved")
    original, improved = spec.search.points_to_evaluate[:2]
    assert original["lambda_lpips"] == 5.0 and original["lambda_ssim"] == 0.0
    assert improved == {"lambda_gan": 0.3, "lambda_lpips": 3.0, "lambda_l2": 2.0, "lambda_l1": 2.0, "lambda_ssim": 1.0}


def test_tie_follows_the_sampled_value(tmp_path):
    path = write_spec(tmp_path, space={"model_t": {"type": "int", "low": 100, "high": 400, "q": 50}},
                      ties={"coeff_t": "model_t"})
    cfg = load_spec(path).trial_config({"model_t": 350}, str(tmp_path / "out"), "t-1")
    assert (cfg.model_t, cfg.coeff_t) == (350, 350)
    assert cfg.output_dir == str(tmp_path / "out") and cfg.checkpointing_steps == cfg.validation_steps


def test_model_t_drags_coeff_t_along_when_the_base_leaves_it_null(tmp_path):
    space = {"model_t": {"type": "int", "low": 100, "high": 400}}
    follows = load_spec(write_spec(tmp_path, space=space, overrides={"coeff_t": None}))
    assert follows.ties == {"coeff_t": "model_t"}
    fixed = load_spec(write_spec(tmp_path, space=space))  # tiny.yaml sets coeff_t: 200 itself
    assert fixed.ties == {}


@pytest.mark.parametrize("fields, expected", [
    ({"spaec": {}}, "Unknown key 'spaec'"),
    ({"space": {"lambda_gan": {"type": "lognormal", "low": 1, "high": 2}}}, "'space.lambda_gan.type'"),
    ({"space": {"lambda_gan": {"type": "uniform", "low": 2, "high": 1}}}, "needs low < high"),
    ({"space": {"lambda_gan": {"type": "loguniform", "low": 0.1, "high": 1, "q": 0.1}}}, "cannot quantize"),
    ({"space": {"lambda_gann": {"type": "uniform", "low": 0, "high": 1}}}, "did you mean 'lambda_gan'"),
    ({"space": {"lr_G": {"type": "uniform", "low": -1, "high": 1}}}, "training config refuses"),
    ({"space": {"output_dir": {"type": "choice", "values": ["a", "b"]}}}, "the sweep sets output_dir itself"),
    ({"space": {"lambda_gan": {"type": "uniform", "low": 0, "high": 1}}, "ties": {"coeff_t": "model_t"}},
     "'ties.coeff_t'"),
    ({"search": {"num_samples": 0}}, "'search.num_samples'"),
    ({"search": {"points_to_evaluate": [{"lambda_gan": 5.0}]}}, "outside the space"),
    ({"search": {"points_to_evaluate": ["missing.yaml"]}}, "does not exist"),
    ({"scheduler": {"type": "bohb"}}, "'scheduler.type'"),
    ({"scheduler": {"type": "pbt"}}, "'scheduler.hyperparam_mutations'"),
    ({"scheduler": {"type": "pbt", "perturbation_interval": 3, "hyperparam_mutations": {"lambda_gan": {"type": "uniform", "low": 0.1, "high": 1.0}}}}, "'scheduler.perturbation_interval'"),
    ({"scheduler": {"type": "pbt", "hyperparam_mutations": {"model_t": {"type": "int", "low": 100, "high": 400}}}}, "cannot change during a trial"),
    ({"scheduler": {"type": "asha", "perturbation_interval": 2}}, "does not apply to scheduler type asha"),
    ({"search": {"n_startup_trials": -1}}, "'search.n_startup_trials'"),
    ({"search": {"constant_liar": 1}}, "'search.constant_liar' in"),
    ({"scheduler": {"type": "pbt", "synch": "yes", "hyperparam_mutations": {"lambda_gan": {"type": "uniform", "low": 0.1, "high": 1.0}}}}, "must be true or false, got 'yes'"),
    ({"scheduler": {"grace_period": 4}}, "at most the 3 validation rounds"),
    ({"space": {"lambda_gan": {"type": "uniform", "low": 0.25, "high": 1.25, "q": 0.5}}}, "multiples of q"),
    ({"space": {"lora_rank": {"type": "uniform", "low": 4, "high": 8}}}, "Use type: int"),
    ({"metric": "val/Fog/PSNR"}, "with a type of Blur"),
    ({"metric": "val/Blur/Final_Score"}, "'metric'"),
    ({"resources": {"gpu": 1.5}}, "'resources.gpu'"),
    ({"base_config": None}, "'base_config'"),
    ({"name": "has space"}, "'name'"),
    ({"metric": "loss/G_total"}, "'metric'"),
])
def test_spec_mistakes_are_one_sentence(tmp_path, fields, expected):
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, **fields))
    message = str(info.value)
    assert expected in message and "\n" not in message and "spec.yaml" in message


def test_gpu_request_without_gpu_is_an_error_before_anything_starts(tmp_path):
    spec = load_spec(write_spec(tmp_path, resources={"gpu": 1}))
    with pytest.raises(SpecError, match="resources.gpu: 0"):
        check_gpus(spec, cluster_gpus=0)
    check_gpus(load_spec(write_spec(tmp_path, resources={"gpu": 0})), cluster_gpus=0)


def test_messages_with_brackets_reach_the_screen_whole(tmp_path):
    # rich reads [text] as markup: a fix such as pip install -e '.[openclip]' used to lose its extra. Here a
    # validation folder whose name holds brackets must be named whole in the failed check.
    missing = tmp_path / "AIO [Blur, Haze]" / "[val]"
    spec = write_spec(tmp_path, overrides={"max_train_steps": 30, "validation_steps": 10,
                                           "data_config.val.val_dir": str(missing)})
    run = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(spec), "--dry-run"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, env={**os.environ, "COLUMNS": "400"})
    assert run.returncode == 2
    assert f"Validation folder '{missing}' (data_config.val.val_dir) does not exist" in run.stdout, run.stdout[-2000:]


def test_dry_run_shows_space_and_three_configs_and_trains_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(ROOT / "sweeps" / "quickstart.yaml"),
                             "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "trial 1 (tiny)" in out and "trial 3 (sampled)" in out and "lambda_gan" in out
    assert "Ready to sweep" in out
    assert not (tmp_path / "sweep_results").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without GPUs")
def test_sweep_on_a_machine_without_gpus_refuses_before_starting_ray(tmp_path):
    path = write_spec(tmp_path, resources={"gpu": 1})
    result = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "resources.gpu: 0" in result.stderr
    assert not (tmp_path / "sweep_results").exists()


def test_best_config_of_a_model_t_sweep_ties_coeff_t_like_its_trials(tmp_path):
    """The automatic coeff_t tie (base coeff_t null) reaches best_config.yaml through the spec copy."""
    from hypir_sweep.analysis import Sweep, TrialRow, best_config
    from hypir_sweep.spec import spec_copy

    spec = load_spec(write_spec(tmp_path, overrides={"max_train_steps": 30, "validation_steps": 10, "coeff_t": None},
                                space={"model_t": {"type": "int", "low": 100, "high": 400, "q": 100}}))
    assert spec.ties == {"coeff_t": "model_t"}
    trial_cfg = spec.trial_config({"model_t": 300}, output_dir=str(tmp_path / "t"), name="t")
    saved = yaml.safe_load(yaml.safe_dump(spec_copy(spec)))  # as sweep_spec.yaml holds it
    row = TrialRow(trial="abc", status="completed", rounds=3, best=1.0, last=1.0, best_metrics={},
                   params={"model_t": 300}, seconds=1.0, path=str(tmp_path / "t"))
    sweep = Sweep(path=str(tmp_path), name="t", metric=spec.metric, mode=spec.mode, max_rounds=3,
                  param_keys=["model_t"], spec=saved, rows=[row], ray_trials=1, ray_errors=0)
    config, _, _ = best_config(sweep)
    assert config["model_t"] == config["coeff_t"] == trial_cfg.coeff_t == 300


def test_the_launcher_imports_no_ray_before_the_cluster_token_is_set():
    """Ray reads its auth settings when imported; launch.py must reach run_sweep with Ray not yet imported."""
    code = "import sys, launch, hypir_sweep.runner, hypir_sweep.analysis; print('ray' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.stdout.strip() == "False", run.stderr[-2000:]


def test_pb2_is_built_from_the_mutation_bounds(tmp_path):
    from ray.tune.schedulers.pb2 import PB2

    from hypir_sweep.assembly import make_scheduler

    mutations = {"lambda_gan": {"type": "loguniform", "low": 0.05, "high": 1.0}}
    spec = load_spec(write_spec(tmp_path, scheduler={"type": "pb2", "perturbation_interval": 1,
                                                      "hyperparam_mutations": mutations}))
    scheduler = make_scheduler(spec)
    assert isinstance(scheduler, PB2) and scheduler._hyperparam_bounds == {"lambda_gan": [0.05, 1.0]}
    choice = {"lambda_gan": {"type": "choice", "values": [0.1, 0.5]}}
    with pytest.raises(SpecError, match="pb2 models continuous values"):
        load_spec(write_spec(tmp_path, space=choice, scheduler={"type": "pb2", "hyperparam_mutations": choice}))


def test_tpe_settings_reach_the_sampler(tmp_path):
    from hypir_sweep.assembly import make_searcher

    default = make_searcher(load_spec(write_spec(tmp_path, storage_path=str(tmp_path / "a"))))._sampler
    assert (default._n_startup_trials, default._multivariate, default._constant_liar) == (4, True, True)
    spec = load_spec(write_spec(tmp_path, storage_path=str(tmp_path / "b"), search={
        "n_startup_trials": 7, "multivariate": False, "constant_liar": False}))
    sampler = make_searcher(spec)._sampler
    assert (sampler._n_startup_trials, sampler._multivariate, sampler._constant_liar) == (7, False, False)


def test_sampled_values_reach_the_trial_config_as_values(tmp_path):
    """No YAML text on the way: a prompt choice "yes" stays a string, a float keeps every digit."""
    spec = load_spec(write_spec(tmp_path, space={
        "data_config.val.prompt": {"type": "choice", "values": ["yes", "0.5"]},
        "lr_G": {"type": "loguniform", "low": 1e-6, "high": 1e-3}}))
    cfg = spec.trial_config({"data_config.val.prompt": "yes", "lr_G": 1.2345678901234567e-05}, str(tmp_path), "t-1")
    assert cfg.data_config.val.prompt == "yes" and cfg.lr_G == 1.2345678901234567e-05


def test_spec_integers_are_integers_and_null_means_the_documented_default(tmp_path):
    with pytest.raises(SpecError, match=r"'search.num_samples' in .* must be an integer >= 1, got 8.0 \(float\)"):
        load_spec(write_spec(tmp_path, search={"num_samples": 8.0}))
    spec = load_spec(write_spec(tmp_path, name=None, mode=None, tracking={"project": None, "report_to": "none"}))
    assert (spec.name, spec.mode, spec.tracking.project, spec.tracking.report_to) == (
        "spec", "max", "HYPIR-training", "none")


def test_overrides_given_as_texts_or_as_a_mapping_make_the_same_base(tmp_path):
    texts = load_spec(write_spec(tmp_path, overrides=["max_train_steps=30", "validation_steps=10",
                                                      "opt_kwargs.weight_decay=0.001"]))
    mapping = load_spec(write_spec(tmp_path, overrides={"max_train_steps": 30, "validation_steps": 10,
                                                        "opt_kwargs": {"weight_decay": 0.001}}))
    assert texts.base == mapping.base and mapping.base.opt_kwargs.weight_decay == 0.001
    assert mapping.overrides == {"max_train_steps": 30, "validation_steps": 10, "opt_kwargs.weight_decay": 0.001}
    assert mapping.max_rounds == 3


TINY_HQ = str(ROOT / "configs" / "tiny_realesrgan.yaml")
NOISE = "data_config.train.batch_transform.params.noise_range"


def hq_spec(tmp_path, space, **fields) -> Path:
    return write_spec(tmp_path, base_config=TINY_HQ, space=space, **fields)


def test_one_end_of_a_degradation_range_is_searched_with_its_bounds_checked(tmp_path):
    spec = load_spec(hq_spec(tmp_path, {f"{NOISE}.1": {"type": "uniform", "low": 5, "high": 40},
                                        "data_config.train.batch_transform.params.gaussian_noise_prob": {
                                            "type": "uniform", "low": 0.2, "high": 0.9}},
                             metric="val/RealESRGAN/PSNR"))
    assert sorted(p.key for p in spec.space) == ["data_config.train.batch_transform.params.gaussian_noise_prob",
                                                 f"{NOISE}.1"]
    trial = spec.trial_config({f"{NOISE}.1": 17.5, "data_config.train.batch_transform.params.gaussian_noise_prob": 0.3},
                              str(tmp_path / "trial"), name="t-1")
    assert trial.data_config.train.batch_transform.params.noise_range == [1, 17.5]
    assert trial.data_config.val.degradation == spec.base.data_config.val.degradation  # its own, fixed set
    assert spec.warnings == ()


@pytest.mark.parametrize("space, expected", [
    ({f"{NOISE}.1": {"type": "uniform", "low": 0.5, "high": 40}}, "low <= high"),  # below the lower end, 1
    ({f"{NOISE}.2": {"type": "uniform", "low": 5, "high": 40}}, "has 2 elements"),
    ({NOISE: {"type": "uniform", "low": 5, "high": 40}}, f"search one of its elements, e.g. space.{NOISE}.1"),
    ({"data_config.train.batch_transform.params.gaussian_noise_prob": {"type": "uniform", "low": 0, "high": 2}},
     "a number in [0, 1]"),
    ({"data_config.train.batch_transform.params.noise_rang.1": {"type": "uniform", "low": 5, "high": 40}},
     "did you mean"),
    ({"lambda_gan.1": {"type": "uniform", "low": 0.1, "high": 0.5}}, "not a list"),
])
def test_bad_degradation_space_keys_and_bounds_are_one_sentence(tmp_path, space, expected):
    with pytest.raises(SpecError) as info:
        load_spec(hq_spec(tmp_path, space))
    message = str(info.value)
    assert expected in message and "\n" not in message and "spec.yaml" in message


def test_a_sweep_without_a_validation_set_is_refused(tmp_path):
    upstream = str(ROOT / "configs" / "sd2_train_upstream.yaml")  # upstream has no validation
    overrides = {"data_config.train.dataset.params.file_meta.file_list": "demo://hq/train.list"}
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, base_config=upstream, overrides=overrides))
    assert "has no validation set, so no trial would ever report a score" in str(info.value)
    assert "data_config.val.hq_dir" in str(info.value) and "\n" not in str(info.value)
    load_spec(write_spec(tmp_path, base_config=upstream, overrides={**overrides, "data_config.val.hq_dir":
                                                                    "demo://hq/val"}))


def test_a_validation_set_degraded_like_training_is_refused_when_trials_change_the_degradation(tmp_path):
    follows = {"max_train_steps": 30, "validation_steps": 10, "data_config.val.degradation": "train"}
    with pytest.raises(SpecError) as info:
        load_spec(hq_spec(tmp_path, {f"{NOISE}.1": {"type": "uniform", "low": 5, "high": 40}}, overrides=follows))
    message = str(info.value)
    assert f"'{NOISE}.1'" in message and "would not be scored on one set" in message
    assert "give data_config.val.degradation its own mapping" in message
    # A space that leaves the degradation alone keeps every trial on one set: fine.
    load_spec(hq_spec(tmp_path, {"lr_G": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}, overrides=follows))


def test_both_ends_of_one_range_searched_overlapping_are_warned(tmp_path):
    ends = {f"{NOISE}.0": {"type": "uniform", "low": 1, "high": 10}, f"{NOISE}.1": {"type": "uniform", "low": 5,
                                                                                     "high": 40}}
    (warning,) = load_spec(hq_spec(tmp_path, ends)).warnings
    assert f"{NOISE}.0 (up to 10) can be drawn above {NOISE}.1 (from 5)" in warning
    apart = {**ends, f"{NOISE}.0": {"type": "uniform", "low": 1, "high": 5}}
    assert load_spec(hq_spec(tmp_path, apart)).warnings == ()
