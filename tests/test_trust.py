"""How far the winner can be trusted: the early-stopping audit and the per-type guard.

Rules on small made-up sweeps whose answers are known by hand, then analyze.py on the session's quickstart
sweep (real Ray state, real trial folders) against what its leaderboard and trial summaries say.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hypir_sweep import audit, guard
from hypir_sweep.analysis import AnalysisError, Sweep, TrialRow

ROOT = Path(__file__).resolve().parent.parent
TYPES = ["Blur", "Haze"]


def row(trial, curve, started=0.0, status="completed", per_type=None):
    metrics = {f"val/{kind}/{m}": v for kind, values in (per_type or {}).items() for m, v in values.items()}
    best = max(curve)
    return TrialRow(trial=trial, status=status, rounds=len(curve), best=best, last=curve[-1], best_metrics=metrics,
                    params={"lambda_l2": float(len(trial))}, seconds=1.0, path="", final_metrics=metrics,
                    curve=list(enumerate(curve, start=1)), started=started, ray_status="TERMINATED")


def sweep(rows, scheduler=None, base=None, max_rounds=4):
    resolved = {"seed": 231, "use_ema": True, "ema_warmup": True, "ema_decay": 0.999,
                "data_config": {"val": {"degradation_types": TYPES}}, **(base or {})}
    spec = {"name": "s", "scheduler": scheduler or {"type": "asha", "grace_period": 1, "reduction_factor": 2},
            "base_resolved": resolved}
    ranked = sorted(rows, key=lambda r: (r.status != "completed", -r.best))
    for rank, r in enumerate(ranked, start=1):
        r.rank = rank
    return Sweep(path="", name="s", metric="val/Final_Score", mode="max", max_rounds=max_rounds,
                 param_keys=["lambda_l2"], spec=spec, rows=ranked, ray_trials=len(rows), ray_errors=0)


# Round 1 ranks the five trials backwards, round 2 badly, rounds 3-4 as their best rounds (the last) do.
CURVES = {"a": [0.5, 0.35, 0.1, 1.0], "b": [0.4, 0.4, 0.2, 2.0], "c": [0.3, 0.5, 0.3, 3.0],
          "d": [0.2, 0.1, 0.4, 4.0], "e": [0.1, 0.2, 0.5, 5.0]}


def test_the_audit_ranks_each_round_against_the_full_budget():
    found = audit.audit(sweep([row(t, c, started=i) for i, (t, c) in enumerate(CURVES.items())]))
    table = found.table.set_index("round")
    # a, which leads round 1, ends last: round 1 ranks the trials exactly backwards.
    assert table.loc[1, "spearman vs best round"] == pytest.approx(-1.0)
    assert table.loc[2, "spearman vs best round"] == pytest.approx(-0.5)
    assert table.loc[3, "spearman vs best round"] == pytest.approx(1.0)
    assert table.loc[4, "spearman vs final round"] == pytest.approx(1.0)
    assert found.grace_period == 3 and found.winner == "e"
    # e starts last and is the weakest at round 1: ASHA (grace 1, halving) stops it there.
    assert found.stopped_at == 1
    assert 0 < found.stopped_share < 1  # arriving first, nothing is above it yet at round 1
    assert any("Smallest grace_period from which every round before the last reaches rho >= 0.8: 3" in line for line in found.lines)


def test_the_smallest_grace_period_ignores_the_last_rounds_noise():
    """Nothing is stopped at the budget's last round: its rank correlation does not hold the grace period back."""
    table = pd.DataFrame({"round": [1, 2, 3, 4], "spearman vs best round": [0.5, 0.9, 0.85, 0.3]})
    assert audit.smallest_grace(table) == 2
    assert audit.smallest_grace(table.assign(**{"spearman vs best round": [0.9, 0.5, 0.95, 1.0]})) == 3
    assert audit.smallest_grace(table.assign(**{"spearman vs best round": [0.9, 0.9, 0.5, 1.0]})) is None


def test_the_replay_is_asha_as_ray_runs_it():
    rows = [row(t, c) for t, c in CURVES.items()]
    stopped = audit.replay(rows, ["e", "d", "c", "b", "a"], {"type": "asha", "grace_period": 1,
                                                              "reduction_factor": 2}, "val/Final_Score", "max", 4)
    # Each trial beats round 1's median so far; at round 2 only d falls below it (0.1 under e's 0.2).
    assert stopped == {"e": None, "d": 2, "c": None, "b": None, "a": None}
    assert audit.replay(rows, list("abcde"), {"type": "asha", "grace_period": 4}, "val/Final_Score", "max",
                        4) == dict.fromkeys("abcde")  # no rung before the budget's end


def test_too_few_full_budget_trials_is_said_instead_of_a_guess():
    rows = [row(t, c) for t, c in list(CURVES.items())[:3]] + [row("x", [9.0], status="early-stopped")]
    found = audit.audit(sweep(rows))
    assert found.trials == 3 and found.table.empty and found.grace_period is None
    assert "fewer than the 4" in found.lines[0]


def test_an_ema_that_hides_the_early_ranking_is_named_with_its_way_out():
    rows = [row(t, c) for t, c in CURVES.items()]
    lagging = audit.audit(sweep(rows, base={"ema_warmup": False}))
    assert any("ema_warmup: true" in line for line in lagging.lines)
    assert not any("ema_warmup" in line for line in audit.audit(sweep(rows)).lines)


BASELINE = {"val/Blur/PSNR": 30.0, "val/Blur/SSIM": 0.8, "val/Blur/LPIPS": 0.1,
            "val/Haze/PSNR": 20.0, "val/Haze/SSIM": 0.6, "val/Haze/LPIPS": 0.2}


def typed(blur_psnr, haze_psnr, lpips=0.1):
    return {"Blur": {"PSNR": blur_psnr, "SSIM": 0.8, "LPIPS": lpips}, "Haze": {"PSNR": haze_psnr, "SSIM": 0.6,
                                                                             "LPIPS": lpips + 0.1}}


def guarded(rows, texts, pick=(), target=None):
    return guard.choose(sweep(rows), list(pick), target, None, guard.parse_guards(texts),
                        [("base", BASELINE, 10)], [("base", BASELINE, 10)])


def test_the_guard_exports_the_best_trial_that_loses_little_on_every_type():
    rows = [row("winner", [29.0], per_type=typed(31.0, 19.5)),   # +1 dB on Blur, -0.5 on Haze
            row("second", [28.0], per_type=typed(30.5, 19.9)),   # -0.1 at worst
            row("third", [27.0], per_type=typed(30.0, 20.0))]
    chosen = guarded(rows, ["PSNR>=-0.2"])
    assert chosen.row.trial == "second" and "first to pass the guard PSNR>=-0.2" in chosen.why
    assert any("trial winner fails on Haze (-0.5" in line for line in chosen.lines)
    assert guarded(rows, ["PSNR>=-0.6"]).row.trial == "winner"
    # LPIPS: lower is better, so the margin bounds a rise; Final_Score per type is PSNR + 10 SSIM - 5 LPIPS.
    assert guarded(rows, ["PSNR>=-0.6", "LPIPS<=0.0"]).row.trial == "winner"
    worse = [row("winner", [29.0], per_type=typed(31.0, 19.5, lpips=0.15))] + rows[1:]
    assert guarded(worse, ["LPIPS<=0.01"]).row.trial == "second"
    assert guarded(worse, ["Final_Score>=-0.76"]).row.trial == "winner"  # Haze: -0.5 - 5 * 0.05 = -0.75
    assert guarded(worse, ["Final_Score>=-0.74"]).row.trial == "second"


def test_when_no_trial_passes_nothing_is_exported_and_each_shortfall_is_said():
    rows = [row("winner", [29.0], per_type=typed(31.0, 19.5)), row("second", [28.0], per_type=typed(30.5, 19.9))]
    chosen = guarded(rows, ["PSNR>=0.5"])
    assert chosen.row is None
    assert "no trial passes" in chosen.lines[0]
    assert chosen.lines[1] == "  trial winner: Haze PSNR -0.5 against base, short of the margin by 1"
    assert chosen.lines[2] == "  trial second: Haze PSNR -0.1 against base, short of the margin by 0.6"
    assert set(chosen.table["type"]) == set(TYPES) and len(chosen.table) == 4


def test_the_guard_works_with_pick():
    rows = [row("sharp", [29.0], per_type=typed(32.0, 19.0)), row("even", [28.0], per_type=typed(30.2, 20.1))]
    for r, psnr in zip(rows, (25.5, 25.1)):
        r.final_metrics = {**r.final_metrics, "val/PSNR": psnr}
    chosen = guarded(rows, ["PSNR>=-0.2"], pick=["val/PSNR>=25"], target=("val/PSNR", "max"))
    assert chosen.row.trial == "even" and chosen.final_round and chosen.why.startswith("picked by val/PSNR>=25")
    assert guarded(rows, [], pick=["val/PSNR>=25"], target=("val/PSNR", "max")).row.trial == "sharp"


@pytest.mark.parametrize("text", ["PSNR>-0.2", "Blur/PSNR>=0", "PSNR>=", "psnr>=0"])
def test_a_malformed_guard_is_one_sentence(text):
    with pytest.raises(AnalysisError, match="must be METRIC>=MARGIN or METRIC<=MARGIN"):
        guard.parse_guards([text])


# ---- analyze.py on the quickstart sweep ------------------------------------------------------------

@pytest.mark.slow
def test_the_audit_and_the_guard_on_the_quickstart_sweep(quickstart_sweep, tmp_path):
    from hypir_sweep.report import run_analysis

    sweep_dir, launched = quickstart_sweep
    assert launched.returncode == 0, launched.stderr[-2000:]
    out = tmp_path / "plain"
    assert run_analysis(str(sweep_dir), [], str(out)) == 0
    board = pd.read_csv(out / "leaderboard.csv", dtype={"trial": str})
    full = board[(board["status"] == "completed") & (board["rounds"] == 4)]
    table = pd.read_csv(out / "early_stopping_audit.csv")
    report = (out / "report.html").read_text()
    if len(full) >= audit.MIN_TRIALS:
        from scipy import stats

        curves = {t: [r["metrics"]["val/Final_Score"] for r in json.loads(
            (sweep_dir / f"trial_{t}" / "summary.json").read_text())["rounds"]] for t in full["trial"]}
        best = [max(c) for c in curves.values()]
        for index in range(4):
            expected = stats.spearmanr([c[index] for c in curves.values()], best).statistic
            assert table.loc[index, "spearman vs best round"] == pytest.approx(expected)
        assert (out / "plots" / "early_stopping_audit.png").is_file() and "Early-stopping audit" in report
    else:
        assert table.empty and "fewer than the 4 a rank correlation needs" in report

    # The guard against the runner-up's own run: the winner is exported only if it loses on no type.
    runner_up = board.iloc[1]["trial"]
    baseline = sweep_dir / f"trial_{runner_up}"
    types = [c.removesuffix(" PSNR") for c in board.columns if c.endswith(" PSNR") and c != "PSNR"]
    rounds = json.loads((baseline / "summary.json").read_text())["rounds"]
    base = max(rounds, key=lambda r: r["metrics"]["val/Final_Score"])["metrics"]
    passing = [r["trial"] for _, r in board.iterrows() if all(r[f"{t} PSNR"] >= base[f"val/{t}/PSNR"] for t in types)]
    assert runner_up in passing  # against itself it loses nothing
    out = tmp_path / "guarded"
    assert run_analysis(str(sweep_dir), [str(baseline)], str(out), guards=["PSNR>=0"]) == 0
    header = (out / "best_config.yaml").read_text().splitlines()[1]
    assert header.startswith(f"# trial {passing[0]} ")
    assert yaml.safe_load((out / "best_config.yaml").read_text())["lambda_l2"] == \
        board.set_index("trial").loc[passing[0], "lambda_l2"]
    assert run_analysis(str(sweep_dir), [str(baseline)], str(out), guards=["PSNR>=100"]) == 1
    assert not (out / "best_config.yaml").exists()
    checks = pd.read_csv(out / "guard.csv", dtype={"trial": str})
    own = checks[checks["trial"] == runner_up]  # the baseline against itself: no delta, short by the whole margin
    assert len(own) == len(types) and (own["delta"] == 0).all()
    assert all(math.isclose(v, 100.0, abs_tol=1e-9) for v in own["shortfall"])
