#!/usr/bin/env python
"""How good is the search? Strategies replayed against the ground-truth table, through the real machinery.

    python bench/search.py [--seeds 20] [--strategies default,random_asha,...] [--out bench/results/search]
    python bench/search.py --real     one real sweep of the default over the grid, against the table and the replay

Each strategy runs as a real Ray Tune experiment with the real Optuna sampler and the real scheduler,
over the grid space of ``bench/ground_truth.py`` (a choice of three values per quickstart parameter),
with a trainable that reports the table's rounds instead of training. Every result is logged in the
order Tune receives it, so one run gives the config the sweep would export after any amount of
compute: the leaderboard's winner (full-budget trials first, then by best round) among the results
received so far. Its regret is the table's best full-budget score minus that config's full-budget
score. Compute is counted in trial-rounds; running every grid config to the full budget costs
81 x 4 = 324.

Prints a table (median and quartiles of regret over seeds, per strategy and budget), writes it as CSV
and draws regret against compute as a PNG.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ground_truth import GRID, config_key  # noqa: E402
from hypir_core.metrics import FINAL_SCORE  # noqa: E402

METRIC = FINAL_SCORE
BUDGET_FRACTIONS = (0.1, 0.25, 0.5)
MAX_ROUNDS = 4
WARM_START = {"lambda_l2": 2.0, "lambda_l1": 2.0, "lambda_gan": 0.1, "lr_G": 5.5e-4}  # tiny.yaml, nearest grid point


def load_table(path: Path) -> dict[str, list[float]]:
    rounds: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open() as handle:
        for row in csv.DictReader(handle):
            rounds[row["config"]][int(row["round"])] = float(row[METRIC])
    table = {key: [by_round[r] for r in sorted(by_round)] for key, by_round in rounds.items()}
    if len(table) != math.prod(len(v) for v in GRID.values()):
        raise SystemExit(f"{path} holds {len(table)} configs, not the whole grid; run bench/ground_truth.py first.")
    return table


def replay_trainable(table: dict):
    """The trainable: each step reports the table's next round for the trial's config (no training).

    A class trainable, so Tune reuses one actor process for trial after trial (``reset_config``): the
    replay measures the search, not process start-up.
    """
    from ray import tune

    class Replay(tune.Trainable):
        def setup(self, config):
            self.scores, self.done = table[config_key(config)], 0

        def step(self):
            self.done += 1
            return {METRIC: self.scores[self.done - 1], "round": self.done, "step": 10 * self.done,
                    "done": self.done >= len(self.scores)}

        def reset_config(self, new_config):
            self.setup(new_config)
            return True

        def save_checkpoint(self, checkpoint_dir):
            return {"done": self.done}

        def load_checkpoint(self, checkpoint):
            self.done = checkpoint["done"]

    return Replay


# ---- strategies -----------------------------------------------------------------------------------

def _spec(work: str, name: str, scheduler: dict):
    """The quickstart spec over the grid space, with its own study in ``work``."""
    import yaml

    from hypir_sweep.spec import load_spec

    raw = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    raw.update(name=name, base_config=str(ROOT / "configs" / "tiny.yaml"), scheduler=scheduler,
               space={k: {"type": "choice", "values": v} for k, v in GRID.items()}, storage_path=work)
    raw["search"].update(points_to_evaluate=[WARM_START], num_samples=1000,
                         optuna_storage=f"sqlite:///{os.path.join(work, name + '.db')}")
    path = Path(work) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}


def strategy(name: str, seed: int, work: str):
    """(searcher, scheduler) for a named strategy."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from hypir_sweep.assembly import make_scheduler, make_searcher, tune_space
    from hypir_sweep.search import SweepSearch

    scheduler_spec = {"type": "fifo"} if name.endswith("_full") else ({"type": "hyperband", "reduction_factor": 2}
                                                                       if "hyperband" in name else ASHA)
    spec = _spec(work, f"{name}-{seed}", scheduler_spec)
    spec = spec.__class__(**{**spec.__dict__, "search": spec.search.__class__(
        **{**spec.search.__dict__, "seed": seed})})
    scheduler = make_scheduler(spec)
    storage = optuna.storages.RDBStorage(spec.optuna_storage)
    common = dict(metric=METRIC, mode="max", study_name=spec.name, storage=storage,
                  points_to_evaluate=[dict(WARM_START)])
    if name in ("default", "tpe_full", "tpe_hyperband"):
        return make_searcher(spec), scheduler, tune_space(spec)
    if name == "before":  # Ray's OptunaSearch as shipped before: stopped trials COMPLETE with their last round
        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), **common), scheduler, tune_space(spec)
    samplers = {
        "random_asha": optuna.samplers.RandomSampler(seed=seed),
        "random_full": optuna.samplers.RandomSampler(seed=seed),
        "tpe4_asha": optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        "tpe4_multivariate_asha": optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True),
        "tpe4_liar_asha": optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True,
                                                     constant_liar=True),
    }
    return (SweepSearch(sampler=samplers[name], max_rounds=MAX_ROUNDS, **common), scheduler, tune_space(spec))


STRATEGIES = ("default", "before", "random_asha", "random_full", "tpe_full", "tpe4_asha", "tpe4_multivariate_asha",
              "tpe4_liar_asha", "tpe_hyperband")


def run_strategy(name: str, seed: int, table: dict, max_budget: int, work: str) -> list[tuple[str, int, float]]:
    """Run one strategy until ``max_budget`` trial-rounds; return every result in arrival order."""
    from ray import tune

    searcher, scheduler, space = strategy(name, seed, work)
    log: list[tuple[str, int, float]] = []
    configs: dict[str, str] = {}

    class Budget(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            configs[trial.trial_id] = config_key(trial.config)
            log.append((trial.trial_id, int(result["round"]), float(result[METRIC])))

    class OutOfBudget(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return len(log) >= max_budget

    tuner = tune.Tuner(
        replay_trainable(table), param_space=space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=1000, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{name}-{seed}", storage_path=work, callbacks=[Budget()],
                                  stop=OutOfBudget(), verbose=0))
    tuner.fit()
    return [(configs[t], r, s) for t, r, s in log]


def exported(log: list[tuple[str, int, float]], budget: int) -> str | None:
    """The config the leaderboard would export after ``budget`` results: full-budget trials first, by best round."""
    best: dict[str, tuple[int, float]] = {}
    for config, round_number, score in log[:budget]:
        done, top = best.get(config, (0, -math.inf))
        best[config] = (max(done, round_number), max(top, score))
    if not best:
        return None
    return max(best, key=lambda c: (best[c][0] >= MAX_ROUNDS, best[c][1]))


def check_real(table: dict, seed: int = 0, num_samples: int = 8) -> int:
    """One real sweep of the shipped default over the grid space (training, not replay): do its trials'
    rounds match the table, and does the replay of the same strategy export as good a config?"""
    import subprocess

    import ray

    from hypir_sweep.analysis import load_sweep

    truth = {key: max(scores) for key, scores in table.items()}
    best = max(truth.values())
    with tempfile.TemporaryDirectory() as work:
        spec = _spec(work, "real", ASHA)
        import yaml

        raw = yaml.safe_load(Path(spec.source).read_text())
        raw["search"].update(num_samples=num_samples, seed=seed)
        raw["search"].pop("optuna_storage")
        raw["tracking"] = {"report_to": "none"}
        Path(spec.source).write_text(yaml.safe_dump(raw))
        started = time.time()
        run = subprocess.run([sys.executable, str(ROOT / "launch.py"), spec.source, "--no-progress"], cwd=work,
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:])
            return run.returncode
        sweep = load_sweep(os.path.join(work, "real"))
        print(f"real sweep: {len(sweep.rows)} trials in {time.time() - started:.0f} s")
        worst = 0.0
        for row in sweep.rows:
            expected = table[config_key(row.params)][:row.rounds]
            got = [score for _, score in row.curve]
            worst = max(worst, *(abs(a - b) for a, b in zip(got, expected, strict=True)))
            print(f"  {config_key(row.params)}: {row.status}, rounds {[round(x, 4) for x in got]}, table "
                  f"{[round(x, 4) for x in expected]}")
        spent = sum(row.rounds for row in sweep.rows)
        regret = best - truth[config_key(sweep.rows[0].params)]
        print(f"largest difference between a real round and the table: {worst:.2e}")
        print(f"real: {spent} trial-rounds, exported config's regret {regret:.3f}")
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    with tempfile.TemporaryDirectory() as work:
        log = run_strategy("default", seed, table, spent, work)
    ray.shutdown()
    print(f"replay of the same strategy and seed at {spent} trial-rounds: regret {best - truth[exported(log, spent)]:.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(ROOT / "bench" / "data" / "quickstart_grid.csv"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search"))
    parser.add_argument("--real", action="store_true",
                        help="instead: one real (training) sweep of the shipped default over the grid, against the table")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import logging

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
    table = load_table(Path(args.table))
    if args.real:
        return check_real(table)
    truth = {key: max(scores) for key, scores in table.items()}  # what its best weights give at full budget
    best = max(truth.values())
    full = len(table) * MAX_ROUNDS
    budgets = [round(f * full) for f in BUDGET_FRACTIONS]
    names = args.strategies.split(",")
    print(f"table: {len(table)} configs, best full-budget {METRIC} {best:.4f}; compute of the whole grid: {full} "
          f"trial-rounds; budgets {budgets}")
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    regrets: dict[tuple[str, int], list[float]] = defaultdict(list)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            for seed in range(args.seeds):
                log = run_strategy(name, seed, table, max(budgets), work)
                for budget in budgets:
                    choice = exported(log, budget)
                    regrets[(name, budget)].append(best - truth[choice] if choice else math.inf)
            print(f"{name}: done ({time.time() - started:.0f} s)", flush=True)
    ray.shutdown()
    write_report(regrets, names, budgets, full, args.out)
    return 0


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    return tuple(float(np.percentile(values, q)) for q in (25, 50, 75))


def write_report(regrets, names, budgets, full, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for name in names:
        for budget in budgets:
            q1, median, q3 = _quartiles(regrets[(name, budget)])
            within = sum(r <= 0.1 for r in regrets[(name, budget)]) / len(regrets[(name, budget)])
            rows.append({"strategy": name, "budget": budget, "fraction": budget / full, "median_regret": median,
                         "q1": q1, "q3": q3, "within_0.1": within})
    with open(os.path.join(out, "search.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'strategy':26s} " + " ".join(f"{f'{b} rounds ({b / full:.0%})':>28s}" for b in budgets))
    for name in names:
        cells = [r for r in rows if r["strategy"] == name]
        print(f"{name:26s} " + " ".join(f"{c['median_regret']:8.3f} [{c['q1']:.3f}, {c['q3']:.3f}] "
                                         f"{c['within_0.1']:4.0%}" for c in cells))
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in names:
        cells = [r for r in rows if r["strategy"] == name]
        x = [c["fraction"] * 100 for c in cells]
        ax.plot(x, [c["median_regret"] for c in cells], marker="o", label=name)
        ax.fill_between(x, [c["q1"] for c in cells], [c["q3"] for c in cells], alpha=0.12)
    ax.axhline(0.1, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("compute, % of running every grid config to the full budget")
    ax.set_ylabel(f"regret of the exported config ({METRIC}, lower is better)")
    ax.set_title("Search strategies on the ground-truth grid (median and quartiles over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "search.png"), dpi=110)
    print(f"wrote {os.path.join(out, 'search.csv')} and search.png")


if __name__ == "__main__":
    sys.exit(main())
