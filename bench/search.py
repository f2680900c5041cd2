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
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ground_truth  # noqa: E402
from ground_truth import config_key  # noqa: E402
from hypir_core.metrics import FINAL_SCORE  # noqa: E402

METRIC = FINAL_SCORE
BUDGET_FRACTIONS = (0.1, 0.25, 0.5)
MAX_ROUNDS = 4
TINY = {"lambda_l2": 2.0, "lambda_l1": 2.0, "lambda_gan": 0.3, "lr_G": 1e-3}  # configs/tiny.yaml's values


@dataclass
class Table:
    """A ground-truth table: every config's rounds for each seed, and how each run ended.

    The truth of a config is the mean over seeds of its best round (what the leaderboard ranks a trial
    by); a config that failed with any seed has none (nan): it is never a right answer. ``observed``
    is what one sweep sees of a config: one of its seeds, drawn per config and search seed (a sweep
    trains every trial with the base config's seed, so each config's noise is one draw).
    """

    path: Path
    grid: dict[str, list]
    meta: dict
    runs: dict[str, dict[int, tuple[list[float], str]]]
    rounds: dict[str, dict[int, list[dict[str, float]]]]  # every metric of every round, for the replay to report

    @property
    def seeds(self) -> list[int]:
        return sorted({s for by_seed in self.runs.values() for s in by_seed})

    @property
    def truth(self) -> dict[str, float]:
        import statistics

        return {c: statistics.mean(max(scores) for scores, _ in by_seed.values())
                if all(ending == "completed" for _, ending in by_seed.values()) else math.nan
                for c, by_seed in self.runs.items()}

    @property
    def spread(self) -> dict[str, float]:
        """Each feasible config's sample sd of the best round over seeds."""
        import statistics

        return {c: statistics.stdev(max(scores) for scores, _ in by_seed.values()) for c, by_seed in self.runs.items()
                if len(by_seed) > 1 and all(ending == "completed" for _, ending in by_seed.values())}

    @property
    def best(self) -> float:
        return max(v for v in self.truth.values() if math.isfinite(v))

    def mean_curve(self, config: str) -> list[float]:
        curves = [scores for scores, _ in self.runs[config].values()]
        return [sum(c[r] for c in curves) / len(curves) for r in range(MAX_ROUNDS)]

    def observed_seed(self, config: str, search_seed: int) -> int:
        """The seed through which this search seed sees the config (drawn per config and search seed)."""
        import random

        seeds = sorted(self.runs[config])
        return seeds[random.Random(f"{search_seed}|{config}").randrange(len(seeds))]

    def observed(self, config: str, search_seed: int) -> tuple[list[float], str]:
        return self.runs[config][self.observed_seed(config, search_seed)]

    def regret(self, config: str | None) -> float:
        """The table's best truth minus the exported config's; a config that fails counts as the worst feasible."""
        if config is None:
            return math.inf
        truth = self.truth
        value = truth[config]
        return self.best - (value if math.isfinite(value) else min(v for v in truth.values() if math.isfinite(v)))

    def point(self, values: dict) -> dict:
        """The grid point nearest to ``values`` (on a log scale for values spanning a factor of 10 or more): the
        replayed warm start."""
        def distance(key, v):
            log = min(self.grid[key]) > 0 and max(self.grid[key]) >= 10 * min(self.grid[key])
            return abs(math.log(v) - math.log(values[key])) if log else abs(v - values[key])

        return {k: min(options, key=lambda v: distance(k, v)) for k, options in self.grid.items()}


def load_table(path: Path) -> Table:
    """Read a table and what it was built with (``<name>.json`` beside it); refuse one that is incomplete."""
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise SystemExit(f"{path} (with {meta_path.name}) not found; build it with python bench/ground_truth.py.")
    meta = json.loads(meta_path.read_text())
    grid = meta["values"]
    rounds: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    metrics: dict[str, dict[int, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    endings: dict[tuple[str, int], str] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            config, seed = row["config"], int(row["seed"])
            endings[(config, seed)] = row["ending"]
            if int(row["round"]) > 0:
                rounds[config][seed][int(row["round"])] = float(row[METRIC])
                metrics[config][seed].append({m: float(row[m]) for m in ground_truth.METRICS if row.get(m)})
            else:
                rounds[config].setdefault(seed, {})
    runs = {c: {s: ([by_round[r] for r in sorted(by_round)], endings[(c, s)]) for s, by_round in by_seed.items()}
            for c, by_seed in rounds.items()}
    expected = math.prod(len(v) for v in grid.values()) * len(meta["seeds"])
    if sum(len(by_seed) for by_seed in runs.values()) != expected:
        raise SystemExit(f"{path} holds {sum(len(b) for b in runs.values())} of its {expected} runs; run python "
                         f"bench/ground_truth.py --grid {meta['grid']} --seeds {len(meta['seeds'])} to finish it.")
    return Table(path, grid, meta, runs, metrics)


def check_table(table: Table, configs: int) -> bool:
    """Whether the table still describes this trainer: its commit, and ``configs`` configs trained again with
    the first seed (the best config, then the others in the table's order) against their rows."""
    current = ground_truth.trainer_commit()
    if table.meta.get("trainer_commit") != current:
        print(f"warning: {table.path.name} was built with the trainer at {table.meta.get('trainer_commit')}, this "
              f"checkout's is {current}; spot-checking {configs} config(s).")
    truth = table.truth
    picks = sorted(table.runs, key=lambda c: -truth[c] if math.isfinite(truth[c]) else math.inf)[:configs]
    seed = table.seeds[0]
    worst = 0.0
    for config in picks:
        params = {k: table.grid[k][[repr(v) for v in table.grid[k]].index(part.split("=", 1)[1])]
                  for k, part in zip(table.grid, config.split(","))}
        rounds, ending = ground_truth.train_one(table.meta["spec"] if os.path.isabs(table.meta["spec"]) else
                                                str(ROOT / table.meta["spec"]), params, seed)
        expected, expected_ending = table.runs[config][seed]
        got = [float(m[METRIC]) for m, _ in rounds]
        if ending != expected_ending or len(got) != len(expected):
            print(f"spot check: {config} seed {seed} now ends '{ending}' after {len(got)} rounds; the table says "
                  f"'{expected_ending}' after {len(expected)}.")
            return False
        worst = max([worst, *(abs(a - b) for a, b in zip(got, expected))])
    print(f"spot check: {len(picks)} config(s) trained again with seed {seed}, largest difference from the table "
          f"{worst:.1e} {METRIC}")
    return worst <= SPOT_TOLERANCE


# Float sums in another order (another thread count or CPU) drift apart as GAN training goes on: up to 0.013 by
# round 3 between 1 and 2 threads (bench/data/seed_spread.csv against the table). The stale single-seed table
# was 0.55 off at round 3; a config's seed sd is 0.5-0.9.
SPOT_TOLERANCE = 0.05


def replay_trainable(table: Table, search_seed: int):
    """The trainable: each step reports the next round of the trial's config, as this search seed observes it
    (no training). A run that failed reports its rounds, then its ending as a trial does (hypir_sweep.trial),
    so the searcher records the failure as in a real sweep.

    A class trainable, so Tune reuses one actor process for trial after trial (``reset_config``): the
    replay measures the search, not process start-up.
    """
    from ray import tune

    from hypir_sweep.trial import ENDING

    class Replay(tune.Trainable):
        def setup(self, config):
            key = config_key(config, table.grid)
            seed = table.observed_seed(key, search_seed)
            self.scores, self.ending = table.runs[key][seed]
            self.metrics = table.rounds[key][seed]
            self.done = 0

        def step(self):
            if self.done >= len(self.scores):  # it failed here
                return {ENDING: self.ending, "round": self.done, "step": 10 * self.done + 5, "done": True}
            self.done += 1
            finished = self.done >= len(self.scores) and self.ending == "completed"
            return {**self.metrics[self.done - 1], METRIC: self.scores[self.done - 1], "round": self.done,
                    "step": 10 * self.done, "done": finished}

        def reset_config(self, new_config):
            self.setup(new_config)
            return True

        def save_checkpoint(self, checkpoint_dir):
            return {"done": self.done}

        def load_checkpoint(self, checkpoint):
            self.done = checkpoint["done"]

    return Replay


# ---- strategies -----------------------------------------------------------------------------------

def _spec(table: Table, work: str, name: str, scheduler: dict, search: dict | None = None,
          grid: dict | None = None, objectives: list[tuple[str, str]] | None = None):
    """The quickstart spec over the table's grid space (or ``grid``, part of it), with its own study in ``work``."""
    import yaml

    from hypir_sweep.spec import load_spec

    raw = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    raw.update(name=name, base_config=str(ROOT / "configs" / "tiny.yaml"), scheduler=scheduler,
               space={k: {"type": "choice", "values": v} for k, v in (grid or table.grid).items()},
               storage_path=work, **({"objectives": [{"metric": m, "mode": d} for m, d in objectives]}
                                      if objectives else {}))
    raw["search"].update(points_to_evaluate=[table.point(TINY)], num_samples=1000,
                         optuna_storage=f"sqlite:///{os.path.join(work, name + '.db')}", **(search or {}))
    path = Path(work) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}
STRATEGIES = {  # name: (scheduler, search settings, sampler other than the spec's)
    "default": (ASHA, {}, None),
    "ignore_failures": (ASHA, {"learn_from_failures": False}, None),
    "random_asha": (ASHA, {}, "random"),
    "random_full": ({"type": "fifo"}, {}, "random"),
    "tpe_full": ({"type": "fifo"}, {}, None),
    "tpe_startup10": (ASHA, {"n_startup_trials": 10}, None),  # Optuna's own default start-up
    "tpe_independent": (ASHA, {"multivariate": False, "constant_liar": False}, None),  # the default until 2026-12
    "tpe_multivariate": (ASHA, {"multivariate": True, "constant_liar": False}, None),
    "tpe_liar": (ASHA, {"multivariate": True, "constant_liar": True}, None),
    "tpe_hyperband": ({"type": "hyperband", "reduction_factor": 2}, {}, None),
    "before": (ASHA, {}, "ray"),  # Ray's OptunaSearch as shipped before: stopped trials COMPLETE, last round
}


def strategy(table: Table, name: str, seed: int, work: str, grid: dict | None = None, warm_start: str | None = None):
    """(searcher, scheduler, space) for a named strategy, through the sweep's own assembly; ``warm_start``: an
    earlier replayed sweep's folder (``search.warm_start``)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from hypir_sweep.assembly import make_scheduler, make_searcher, make_sampler, tune_space
    from hypir_sweep.search import SweepSearch

    scheduler_spec, search, sampler = STRATEGIES[name]
    label = f"{name}-{seed}" + ("-sub" if grid else "") + ("-warm" if warm_start else "")
    spec = _spec(table, work, label, scheduler_spec,
                 {**search, "seed": seed, **({"warm_start": [warm_start]} if warm_start else {})}, grid)
    _keep_spec_copy(spec)
    scheduler = make_scheduler(spec)
    if sampler is None:
        return make_searcher(spec), scheduler, tune_space(spec)
    storage = optuna.storages.RDBStorage(spec.optuna_storage)
    common = dict(metric=METRIC, mode="max", study_name=spec.name, storage=storage,
                  points_to_evaluate=[dict(p) for p in spec.search.points_to_evaluate])
    if sampler == "ray":
        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), **common), scheduler, tune_space(spec)
    chosen = optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else make_sampler(spec)
    return SweepSearch(sampler=chosen, max_rounds=MAX_ROUNDS, **common), scheduler, tune_space(spec)


def _keep_spec_copy(spec) -> None:
    """The sweep folder's sweep_spec.yaml, as a sweep writes it: what a later warm start reads."""
    import yaml

    from hypir_sweep.spec import SPEC_COPY, spec_copy

    os.makedirs(spec.local_dir, exist_ok=True)
    Path(spec.local_dir, SPEC_COPY).write_text(yaml.safe_dump(spec_copy(spec)))


def run_strategy(table: Table, name: str, seed: int, max_budget: int, work: str, grid: dict | None = None,
                 warm_start: str | None = None, built: tuple | None = None) -> list[tuple[str, int, float]]:
    """Run one strategy (or the ``built`` (searcher, scheduler, space)) until ``max_budget`` trial-rounds; return
    every result in arrival order.

    A trial that failed before a round's end counts that round as spent (its score nan)."""
    from ray import tune

    searcher, scheduler, space = built or strategy(table, name, seed, work, grid, warm_start)
    log: list[tuple[str, int, float]] = []
    configs: dict[str, str] = {}

    class Budget(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            configs[trial.trial_id] = config_key(trial.config, table.grid)
            if METRIC in result:
                log.append((trial.trial_id, int(result["round"]), float(result[METRIC])))
            else:  # the ending of a failed run: the round it was in is spent
                log.append((trial.trial_id, int(result["round"]) + 1, math.nan))

    class OutOfBudget(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return len(log) >= max_budget

    tuner = tune.Tuner(
        replay_trainable(table, seed), param_space=space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=1000, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name=searcher_name(searcher), storage_path=work, callbacks=[Budget()],
                                  stop=OutOfBudget(), verbose=0))
    tuner.fit()
    return [(configs[t], r, s) for t, r, s in log]


def searcher_name(searcher) -> str:
    return getattr(searcher, "_study_name", None) or f"run-{id(searcher)}"


def exported(log: list[tuple[str, int, float]], budget: int) -> str | None:
    """The config the leaderboard would export after ``budget`` results: full-budget trials first, by best round
    (a failed trial is never exported while another has a score)."""
    best: dict[str, tuple[int, float]] = {}
    for config, round_number, score in log[:budget]:
        if math.isnan(score):
            best.setdefault(config, (-1, -math.inf))
            continue
        done, top = best.get(config, (0, -math.inf))
        best[config] = (max(done, round_number), max(top, score))
    if not best:
        return None
    return max(best, key=lambda c: (best[c][0] >= MAX_ROUNDS, best[c][0] >= 0, best[c][1]))


# ---- the headline: compute to reach a regret, against random search ----------------------------------

def random_search_regrets(table: Table, trials: int) -> list[tuple[float, float]]:
    """The exact distribution of random search's regret after ``trials`` full-budget trials: (regret, probability).

    Each trial draws a config uniformly (with replacement, as Optuna's RandomSampler over choices) and sees
    it through one seed (uniform); the leaderboard exports the highest observed best round among full-budget
    trials, and a failed trial is exported only when every trial failed. Order statistics over the pool of
    (config, seed) observations: with them sorted best first, P(the i-th is the best of n) =
    ((M - i + 1) / M)^n - ((M - i) / M)^n."""
    pool = []  # (observed best round or -inf for a failure, weight, regret of its config)
    for config, by_seed in table.runs.items():
        for scores, ending in by_seed.values():
            observed = max(scores) if ending == "completed" and scores else -math.inf
            pool.append((observed, 1.0 / (len(table.runs) * len(by_seed)), table.regret(config)))
    pool.sort(key=lambda entry: -entry[0])
    distribution, above = [], 1.0  # probability mass of the draws at or below the current entry
    for observed, weight, regret in pool:
        below = max(0.0, above - weight)
        distribution.append((regret, above ** trials - below ** trials))
        above = below
    return distribution


def median_of(distribution: list[tuple[float, float]]) -> float:
    total = 0.0
    for regret, probability in sorted(distribution):
        total += probability
        if total >= 0.5:
            return regret
    return math.inf


def compute_to_reach(medians: dict[int, float], target: float) -> int | None:
    """The least compute from which the median regret stays at or under ``target`` (None: not within the run)."""
    reached = None
    for budget in sorted(medians):
        if medians[budget] <= target:
            reached = budget if reached is None else reached
        else:
            reached = None
    return reached


def headline(table: Table, logs: dict[str, list[list]], max_budget: int) -> list[dict]:
    """Time-to-target at the table's seed-spread thresholds: random search (full budget, exact), random + ASHA and
    the default (replayed), and the default's speedups."""
    import statistics

    import numpy as np

    truth = table.truth
    contenders = sorted((c for c in table.spread), key=lambda c: -truth[c])[:10]
    top_sd = statistics.median(table.spread[c] for c in contenders)
    # The ten best configs' seed sd over sqrt(seeds): the table's own resolution among the contenders (a
    # regret below it is a config the table cannot tell from the best); and the median config's sd.
    targets = {"top-10 sd / sqrt(seeds)": top_sd / math.sqrt(len(table.seeds)),
               "median sd": statistics.median(table.spread.values())}
    curves = {"random, full budget": {MAX_ROUNDS * n: median_of(random_search_regrets(table, n))
                                      for n in range(1, max_budget // MAX_ROUNDS + 1)}}
    for name, label in (("random_asha", "random + ASHA"), ("default", "default (TPE + ASHA)")):
        if name in logs:
            curves[label] = {b: float(np.median([table.regret(exported(log, b)) for log in logs[name]]))
                             for b in range(1, max_budget + 1)}
    rows = []
    for target_name, target in targets.items():
        needs = {label: compute_to_reach(curve, target) for label, curve in curves.items()}
        mine = needs.get("default (TPE + ASHA)")
        for label, need in needs.items():
            rows.append({"target": f"regret <= {target:.3f} ({target_name})", "strategy": label,
                         "trial_rounds": need, "default_speedup": (need / mine) if need and mine else None})
    return rows


SUB_GRID = {"lambda_gan": [0.1, 1.0], "lr_G": [5.5e-4, 3.0e-3]}  # the second stage: the upper half of two keys


def warm_start_benchmark(table: Table, seeds: int, out: str) -> int:
    """A second sweep over a sub-space (SUB_GRID), cold and warm-started from a first sweep over the whole grid
    (the default, stopped at a quarter of the grid's compute), over search seeds; regret against the sub-space's
    best mean."""
    import statistics

    import ray

    grid = {**table.grid, **SUB_GRID}
    def fits(config: str) -> bool:
        values = dict(part.split("=", 1) for part in config.split(","))
        return all(values[k] in {repr(v) for v in options} for k, options in grid.items())

    inside = [c for c in table.runs if fits(c)]
    best = max(table.truth[c] for c in inside)
    full = len(inside) * MAX_ROUNDS
    budgets = [round(f * full) for f in BUDGET_FRACTIONS]
    first_budget = round(0.25 * len(table.runs) * MAX_ROUNDS)
    print(f"second stage: {len(inside)} configs ({', '.join(f'{k} {v}' for k, v in SUB_GRID.items())}), best mean "
          f"{best:.4f}, budgets {budgets}; first stage: the default over all {len(table.runs)} configs, "
          f"{first_budget} trial-rounds")
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    regrets: dict[tuple[str, int], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as work:
        for seed in range(seeds):
            run_strategy(table, "default", seed, first_budget, work)
            earlier = os.path.join(work, f"default-{seed}")
            for label, warm in (("cold", None), ("warm-started", earlier)):
                log = run_strategy(table, "default", seed, max(budgets), work, grid=grid, warm_start=warm)
                for budget in budgets:
                    choice = exported(log, budget)
                    regrets[(label, budget)].append(best - table.truth[choice] if choice else math.inf)
            print(f"seed {seed} done", flush=True)
    ray.shutdown()
    print(f"second stage, median regret [quartiles] against the sub-space's best mean, {seeds} search seeds:")
    for label in ("cold", "warm-started"):
        cells = []
        for budget in budgets:
            q1, median, q3 = _quartiles(regrets[(label, budget)])
            cells.append(f"{budget} rounds ({budget / full:.0%}): {median:.3f} [{q1:.3f}, {q3:.3f}] mean "
                         f"{statistics.mean(regrets[(label, budget)]):.3f}")
        print(f"  {label:13s} " + "; ".join(cells))
    return 0


def check_real(table: Table, seed: int = 0, num_samples: int = 8) -> int:
    """One real sweep of the shipped default over the grid space (training, not replay): do its trials'
    rounds match the table's first seed (every quickstart trial trains with it)?"""
    import subprocess

    from hypir_sweep.analysis import load_sweep

    first = table.seeds[0]
    with tempfile.TemporaryDirectory() as work:
        spec = _spec(table, work, "real", ASHA)
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
            expected = table.runs[config_key(row.params, table.grid)][first][0][:row.rounds]
            got = [score for _, score in row.curve]
            worst = max(worst, *(abs(a - b) for a, b in zip(got, expected)))
            print(f"  {config_key(row.params, table.grid)}: {row.status}, rounds {[round(x, 4) for x in got]}, "
                  f"table (seed {first}) {[round(x, 4) for x in expected]}")
        print(f"largest difference between a real round and the table: {worst:.2e}; exported config's regret "
              f"against the mean over seeds {table.regret(config_key(sweep.rows[0].params, table.grid)):.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(ground_truth.TABLES["quickstart"]))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="search seeds first-seed .. first-seed + seeds - 1 "
                                                                  "(another set, to confirm a finding)")
    parser.add_argument("--strategies", default="default,random_asha,random_full,tpe_full")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search"))
    parser.add_argument("--spot-check", type=int, default=1, metavar="N",
                        help="train N configs again before replaying, to check the table still holds (0: skip)")
    parser.add_argument("--real", action="store_true",
                        help="instead: one real (training) sweep of the default over the grid, against the table")
    parser.add_argument("--from-logs", action="store_true", help="report on the logs.json of an earlier run in --out")
    parser.add_argument("--warm-start", action="store_true",
                        help="instead: a second-stage sweep over a sub-space, cold against warm-started from a first")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # as a sweep: a failed trial's last result
    import logging

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
    table = load_table(Path(args.table))
    if args.real:
        return check_real(table)
    if args.spot_check and not check_table(table, args.spot_check):
        print(f"{table.path.name} no longer matches this trainer: rebuild it (python bench/ground_truth.py --grid "
              f"{table.meta['grid']}) or compare with --spot-check 0 knowing the numbers are of an older trainer.")
        return 1
    if args.warm_start:
        return warm_start_benchmark(table, args.seeds, args.out)
    full = len(table.runs) * MAX_ROUNDS
    budgets = [round(f * full) for f in BUDGET_FRACTIONS]
    names = args.strategies.split(",")
    spread = sorted(table.spread.values())
    print(f"table: {len(table.runs)} configs x {len(table.seeds)} seeds; best mean full-budget {METRIC} "
          f"{table.best:.4f}; seed sd of a config's best round: median {spread[len(spread) // 2]:.3f} "
          f"[{spread[0]:.3f}, {spread[-1]:.3f}]; {sum(not math.isfinite(v) for v in table.truth.values())} configs "
          f"fail with some seed; the whole grid to the full budget: {full} trial-rounds; budgets {budgets}")
    if args.from_logs:
        saved = json.loads(Path(args.out, "logs.json").read_text())["logs"]
        write_report(table, saved, list(saved), budgets, full, args.out)
        return 0
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    logs: dict[str, list[list]] = defaultdict(list)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                logs[name].append(run_strategy(table, name, seed, max(budgets), work))
            print(f"{name}: done ({time.time() - started:.0f} s)", flush=True)
    ray.shutdown()
    with open(os.path.join(args.out, "logs.json"), "w") as handle:  # every result, for analysis without a rerun
        json.dump({"table": str(table.path.name), "logs": logs}, handle)
    write_report(table, logs, names, budgets, full, args.out)
    return 0


def write_csv(path: str, rows: list[dict]) -> None:
    """Rows of one shape as a CSV file, their keys the header."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    return tuple(float(np.percentile(values, q)) for q in (25, 50, 75))


def write_report(table: Table, logs: dict[str, list[list]], names, budgets, full, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    spread = sorted(table.spread.values())
    within = spread[len(spread) // 2] / math.sqrt(len(table.seeds))  # a regret the table cannot tell from 0
    rows = []
    for name in names:
        for budget in budgets:
            regrets = [table.regret(exported(log, budget)) for log in logs[name]]
            failed = [sum(1 for config, _, score in log[:budget] if math.isnan(score) or
                          not math.isfinite(table.truth[config])) for log in logs[name]]
            q1, median, q3 = _quartiles(regrets)
            rows.append({"strategy": name, "budget": budget, "fraction": budget / full, "median_regret": median,
                         "q1": q1, "q3": q3, "mean_regret": float(np.mean(regrets)), f"within_{within:.3f}": sum(r <= within for r in regrets) / len(regrets),
                         "failed_trial_rounds": float(np.mean(failed))})
    write_csv(os.path.join(out, "search.csv"), rows)
    print(f"median regret [quartiles] (mean) against the mean over seeds, share of search seeds within {within:.3f} (the "
          f"median config's sd / sqrt(seeds)), mean trial-rounds spent on configs that fail:")
    print(f"{'strategy':18s} " + " ".join(f"{f'{b} rounds ({b / full:.0%})':>34s}" for b in budgets))
    for name in names:
        cells = [r for r in rows if r["strategy"] == name]
        print(f"{name:18s} " + " ".join(f"{c['median_regret']:7.3f} [{c['q1']:.3f}, {c['q3']:.3f}] "
                                        f"({c['mean_regret']:.3f}) {c[f'within_{within:.3f}']:4.0%} "
                                        f"f{c['failed_trial_rounds']:4.1f}"
                                        for c in cells))
    found = headline(table, logs, max(budgets))
    if found:
        write_csv(os.path.join(out, "time_to_target.csv"), found)
        print("\ncompute for the median search seed to reach a regret (trial-rounds; random search full budget "
              "computed exactly from the table, the others replayed), and the default's speedup:")
        for row in found:
            need = "not reached" if row["trial_rounds"] is None else f"{row['trial_rounds']:4d}"
            speedup = "" if row["default_speedup"] is None else f"  default {row['default_speedup']:.1f}x faster"
            mine = row["strategy"] == "default (TPE + ASHA)"
            print(f"  {row['target']:34s} {row['strategy']:22s} {need}{'' if mine else speedup}")
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in names:
        cells = [r for r in rows if r["strategy"] == name]
        x = [c["fraction"] * 100 for c in cells]
        ax.plot(x, [c["median_regret"] for c in cells], marker="o", label=name)
        ax.fill_between(x, [c["q1"] for c in cells], [c["q3"] for c in cells], alpha=0.12)
    ax.axhline(within, color="gray", linestyle=":", linewidth=1, label=f"seed sd / sqrt({len(table.seeds)})")
    ax.set_xlabel("compute, % of running every grid config to the full budget")
    ax.set_ylabel(f"regret of the exported config ({METRIC}, mean over seeds)")
    ax.set_title(f"Search strategies on the {table.meta['grid']} grid (median and quartiles over search seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "search.png"), dpi=110)
    print(f"wrote {os.path.join(out, 'search.csv')} and search.png")


if __name__ == "__main__":
    sys.exit(main())
