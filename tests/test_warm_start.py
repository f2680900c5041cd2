"""A sweep that starts from an earlier one (search.warm_start) and learns from the configs that failed.

The earlier sweep is the session's quickstart sweep (tests/conftest.py); the new one is a real, small
sweep through launch.py. Only what every scheduling order guarantees is asserted: which earlier trials
fit is computed from the earlier study itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from hypir_core.schema import Source
from hypir_sweep.spec import SpecError, load_spec
from hypir_sweep.warm_start import WARM_START_ATTR, earlier_sweeps

ROOT = Path(__file__).resolve().parent.parent
States = optuna.trial.TrialState


def stage_two(tmp_path: Path, earlier: Path, **changes) -> Path:
    """The quickstart spec as a second stage: lambda_l2 and lr_G searched (lr_G up to where training diverges),
    the other loss weights fixed at the base config's values, warm-started from ``earlier``."""
    raw = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    raw.update(name="stage2", base_config=str(ROOT / "configs" / "tiny.yaml"), tracking={"report_to": "none"},
               space={"lambda_l2": raw["space"]["lambda_l2"],
                      "lr_G": {"type": "loguniform", "low": 1.0e-4, "high": 1.0}},
               keep_top_k=1)
    # lr_G 0.5 makes the tiny model's loss NaN within its first steps.
    raw["search"].update(num_samples=3, warm_start=[str(earlier)], points_to_evaluate=[{"lambda_l2": 2.0,
                                                                                       "lr_G": 0.5}])
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    path = tmp_path / "stage2.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def fitting(earlier: Path) -> list:
    """The earlier study's trials that train a config the second stage can run: lambda_l1 and lambda_gan as its
    base config fixes them (configs/tiny.yaml: 2.0 and 0.3), ended as COMPLETE or PRUNED."""
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{earlier / 'optuna.db'}")
    newest = {}
    for t in study.trials:
        if "ray_trial_id" in t.user_attrs and t.user_attrs.get("ending") != "orphaned by an interrupted sweep":
            newest[t.user_attrs["ray_trial_id"]] = t
    return [t for t in newest.values() if t.state in (States.COMPLETE, States.PRUNED)
            and t.params["lambda_l1"] == 2.0 and t.params["lambda_gan"] == 0.3]


def test_a_second_stage_starts_from_the_first_and_learns_that_a_config_diverged(quickstart_sweep, tmp_path):
    earlier, first = quickstart_sweep
    assert first.returncode == 0, first.stderr[-3000:]
    expected = fitting(earlier)
    assert expected  # the quickstart's first trial is configs/tiny.yaml's own values, which fit
    spec = stage_two(tmp_path, earlier)
    run = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(spec), "--no-progress"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"Warm start: {len(expected)} trials from sweep 'quickstart'" in run.stdout
    assert "left out:" in run.stdout and "trained with another lambda_gan than this sweep's fixed 0.3" in run.stdout

    study = optuna.load_study(study_name="stage2", storage=f"sqlite:///{tmp_path / 'sweep_results/stage2/optuna.db'}")
    warm = [t for t in study.trials if WARM_START_ATTR in t.user_attrs]
    own = [t for t in study.trials if "ray_trial_id" in t.user_attrs]
    # The earlier trials are the study's first records, with their values and states, before any proposal.
    assert [t.number for t in warm] == list(range(len(expected)))
    assert sorted((t.state, t.values, t.params["lr_G"]) for t in warm) == sorted(
        (t.state, t.values, t.params["lr_G"]) for t in expected)
    assert {t.user_attrs[WARM_START_ATTR] for t in warm} == {f"quickstart trial {t.number}" for t in expected}
    assert len(own) == 3
    # The diverged config (lr_G 0.5, and any other TPE proposed): FAIL in the study, with why, and the
    # constraint the sampler learns from; the trials that trained carry none.
    diverged = [t for t in own if t.state == States.FAIL]
    assert 0.5 in {t.params["lr_G"] for t in diverged}
    assert all(t.user_attrs["ending"].startswith("diverged at step") and t.constraints == {"failed": 1.0}
               for t in diverged)
    assert all(t.constraints == {} for t in own if t.state != States.FAIL)
    from hypir_sweep.analysis import load_sweep

    rows = load_sweep(str(tmp_path / "sweep_results" / "stage2")).rows
    assert len(rows) == 3  # its own trials only: the earlier sweep's records are not on its leaderboard
    assert sum(r.status.startswith("diverged") for r in rows) == len(diverged)


def test_an_earlier_sweep_that_cannot_teach_this_one_is_refused_in_one_sentence(quickstart_sweep, tmp_path):
    earlier, _ = quickstart_sweep
    cases = [
        ({"metric": "val/LPIPS", "mode": "min"}, "which ranked trials by val/Final_Score (max); this sweep ranks by val/LPIPS (min)"),
        ({"overrides": {"max_train_steps": 20}}, "whose trials ran 4 validation rounds; this sweep's run 2"),
        ({"space": {"lr_G": {"type": "loguniform", "low": 0.2, "high": 1.0}}},
         "none of whose trials fits this sweep's space"),
        ({"search": {"warm_start": [str(tmp_path / "nowhere")]}}, "which holds no sweep_spec.yaml"),
    ]
    for changes, message in cases:
        spec = load_spec(stage_two(tmp_path, earlier, **changes))
        with pytest.raises(SpecError) as caught:
            earlier_sweeps(spec, Source(spec.source, error=SpecError).fail)
        text = str(caught.value)
        assert message in text and "search.warm_start" in text and "\n" not in text, text
