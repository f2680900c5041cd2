"""What a sweep found: leaderboard, the winning config ready to train, baselines, plots, cost.

Everything is read back through Ray's ``ExperimentAnalysis`` (experiment state and each trial's
results, on local, NFS or s3:// storage), each trial's own folder and the sweep's Optuna study, so a
sweep that is still running or was interrupted is analysed as far as it got (a trial that ended
after the state snapshot Tune restored from included).
"""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml

from hypir_core.checkpoint import BEST_WEIGHTS
from hypir_core.config import config_from_dict, config_to_dict, validation_rounds
from hypir_core.config_data import reported_types
from hypir_core.errors import OOM_ADVICE, HypirError
from hypir_core.metrics import FINAL_SCORE
from hypir_sweep.spec import SPEC_COPY, trial_values

STATUS_ORDER = ("completed", "early-stopped", "unfinished", "diverged", "out of memory", "refused", "errored")
RANK_RULE = ("Ranking: trials that ran the full budget first, then early-stopped, unfinished, diverged, out of memory, "
             "refused and errored ones; within each group by best {metric} ({mode}).")


class AnalysisError(HypirError):
    """A sweep folder or baseline run cannot be read as given."""


@dataclass
class TrialRow:
    """One trial as the leaderboard shows it; metrics are those of its best round."""

    trial: str
    status: str
    rounds: int
    best: float
    last: float
    best_metrics: dict[str, float]
    params: dict[str, Any]
    seconds: float
    path: str
    round_seconds: float = math.nan  # median time of its rounds after the first (steps + validation)
    curve: list[tuple[int, float]] = field(default_factory=list)
    rank: int = 0
    ray_status: str = ""  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    final_metrics: dict[str, float] = field(default_factory=dict)  # its last round (what its final weights give)
    note: str = ""  # how a trial that did not finish its budget ended, in its own words ("disk full at ...")
    seed: int | None = None  # a confirmation trial's seed (hypir_sweep.confirm); None for the search's trials
    confirms: str = ""  # a confirmation trial: the search trial whose config it trains again
    started: float = math.nan  # when its first attempt started (epoch seconds; the audit's arrival order)

    @property
    def terminated(self) -> bool:
        """Ended for good without an error (a resumed sweep will not run it again)."""
        return self.ray_status == "TERMINATED"

    @property
    def finished(self) -> bool:
        return self.ray_status in ("TERMINATED", "ERROR")


@dataclass
class Sweep:
    """A sweep read back: its spec copy, trials ranked, and where it lives."""

    path: str
    name: str
    metric: str
    mode: str
    max_rounds: int
    param_keys: list[str]
    spec: dict
    rows: list[TrialRow]
    ray_trials: int
    ray_errors: int
    confirm_rows: list[TrialRow] = field(default_factory=list)  # finalists trained again with new seeds

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """A Pareto sweep's (metric, mode) pairs; empty for a single-metric sweep."""
        return [(o["metric"], o.get("mode") or ("min" if o["metric"].endswith("LPIPS") else "max"))
                for o in self.spec.get("objectives") or []]


# ---- finding and reading ------------------------------------------------------------------------

def newest_sweep(root: str = "sweep_results") -> str:
    """The most recently updated sweep folder under ``root``."""
    states = glob.glob(os.path.join(root, "*", "experiment_state-*.json"))
    if not states:
        raise AnalysisError(f"No sweep found under {root}/; run one with python launch.py sweeps/quickstart.yaml, "
                            f"or pass the sweep folder: python analyze.py sweep_results/<name>.")
    return os.path.dirname(max(states, key=os.path.getmtime))


def _read_text(path: str) -> str | None:
    """A small file from a local path or a storage URI (s3://, gs://), or None if it is not there."""
    try:
        if "://" in path:
            import pyarrow.fs

            fs, inner = pyarrow.fs.FileSystem.from_uri(path)
            with fs.open_input_stream(inner) as handle:
                return handle.read().decode("utf-8")
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, ValueError):
        return None


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if "://" in base else os.path.join(base, name)


def _spec_copy(sweep_path: str) -> dict:
    text = _read_text(_join(sweep_path, SPEC_COPY))
    if text is None and "://" in sweep_path:  # object storage: the spec copy stays on the launching machine
        text = _read_text(os.path.join("sweep_results", sweep_path.rstrip("/").split("/")[-1], SPEC_COPY))
    if text is None:
        raise AnalysisError(f"{sweep_path} holds no {SPEC_COPY}; pass a folder that launch.py created, such as "
                            f"sweep_results/<name>.")
    return yaml.safe_load(text)


def _status(ray_status: str, rounds: int, max_rounds: int, summary_status: str) -> str:
    for prefix, status in (("diverged", "diverged"), ("out of memory", "out of memory"), ("refused", "refused")):
        if summary_status.startswith(prefix):
            return status
    if ray_status == "ERROR":
        return "errored"
    if rounds >= max_rounds or summary_status == "completed":
        return "completed"
    if ray_status == "TERMINATED":
        return "early-stopped"
    return "unfinished"


def _results(trial_path: str) -> pd.DataFrame:
    """Every result a trial reported, from its result.json: also those a killed driver received after its
    last state snapshot (Ray's own reader skips a trial whose snapshot has no result yet)."""
    text = (_read_text(_join(trial_path, "result.json")) or "").strip()
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return pd.json_normalize(rows, sep="/") if rows else pd.DataFrame()


def _rounds_frame(frame: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """One row per validation round: results without the metric (a trial's ending) dropped, and a round
    that a resumed or retried attempt reported again counted once (its newest report)."""
    if frame is None or metric not in frame:
        return pd.DataFrame()
    frame = frame[frame[metric].notna()]
    if "step" in frame:
        frame = frame.drop_duplicates(subset="step", keep="last").sort_values("step", kind="stable")
    return frame.reset_index(drop=True)


def _device_seconds(summary: dict, reported: pd.DataFrame) -> float:
    """Time the trial held its device, over every attempt (a restore rewinds Tune's time_total_s)."""
    attempts = summary.get("attempts") or []
    if attempts:
        return float(sum(a.get("seconds", 0.0) for a in attempts))
    return float(reported["time_total_s"].iloc[-1]) if "time_total_s" in reported and len(reported) else 0.0


def load_sweep(sweep_path: str) -> Sweep:
    """Read a sweep folder (finished or not) into ranked trial rows."""
    from ray.tune import ExperimentAnalysis

    if "://" not in sweep_path:
        if not os.path.isdir(sweep_path):
            raise AnalysisError(f"Sweep folder '{sweep_path}' does not exist; pass one under sweep_results/, or run "
                                f"python analyze.py with no argument for the newest.")
        sweep_path = os.path.abspath(sweep_path)  # Ray takes a relative path for a URI
    spec = _spec_copy(sweep_path)
    metric = spec.get("metric", FINAL_SCORE)
    mode = spec.get("mode") or ("min" if metric.endswith("LPIPS") else "max")
    base = spec["base_resolved"]
    max_rounds = validation_rounds(base["max_train_steps"], base["validation_steps"])
    try:
        analysis = ExperimentAnalysis(sweep_path, default_metric=metric, default_mode=mode)
    except Exception as exc:  # noqa: BLE001 - Ray says why in its own words
        raise AnalysisError(f"Ray cannot read the sweep state in {sweep_path}: {' '.join(str(exc).split())[:300]}; "
                            f"is it a folder launch.py wrote?") from None
    rows, confirm_rows = [], []
    # A confirmation trial sets the training config's seed, which such a sweep never searches.
    seed_searched = "seed" in (spec.get("space") or {}) or "seed" in (spec.get("ties") or {})
    trials = [(t.trial_id, t.status, t.config,
               # Ray names a trial on object storage without its scheme (bucket/path): put it back.
               _join(sweep_path, os.path.basename(t.path.rstrip("/"))) if "://" in sweep_path else t.path)
              for t in analysis.trials]
    trials += _trials_after_snapshot(sweep_path, spec, {t.trial_id for t in analysis.trials})
    for trial_id, ray_status, config, trial_path in trials:
        row = _trial_row(trial_id, ray_status, config, trial_path, spec, metric, mode, max_rounds)
        confirming = not seed_searched and "seed" in config
        if confirming:
            row.seed = int(config["seed"])
        (confirm_rows if confirming else rows).append(row)
    rank(rows, mode)
    for row in confirm_rows:  # finalists are distinct configs: the best-ranked search trial with its values
        row.confirms = next((r.trial for r in rows if r.params == row.params and r.status == "completed"), "")
    errors = sum(1 for t in analysis.trials if t.status == "ERROR")
    return Sweep(path=sweep_path, name=spec["name"], metric=metric, mode=mode, max_rounds=max_rounds,
                 param_keys=list(spec.get("space", {})), spec=spec, rows=rows, ray_trials=len(analysis.trials),
                 ray_errors=errors, confirm_rows=confirm_rows)


def _trial_row(trial_id: str, ray_status: str, config: dict, trial_path: str, spec: dict, metric: str, mode: str,
               max_rounds: int) -> TrialRow:
    """One trial's leaderboard row, from its folder (summary.json and result.json)."""
    summary = json.loads(_read_text(_join(trial_path, "summary.json")) or "{}")
    reported = _rounds_frame(_results(trial_path), metric)
    # The trial's own summary.json (rewritten atomically every round) is the record that survives a
    # killed driver; Ray's result.json is buffered by the driver and can lose the newest rounds.
    frame = _rounds_frame(pd.DataFrame([r["metrics"] for r in summary.get("rounds", [])]), metric)
    if len(frame) < len(reported):
        frame = reported
    scores = frame[metric].tolist() if metric in frame else []
    rounds = len(scores)
    if scores:
        best_index = int(pd.Series(scores).idxmax() if mode == "max" else pd.Series(scores).idxmin())
        best_metrics = {k: float(v) for k, v in frame.iloc[best_index].items()
                        if isinstance(k, str) and k.startswith("val/") and _is_number(v)}
        best, last = float(scores[best_index]), float(scores[-1])
        final_metrics = {k: float(v) for k, v in frame.iloc[-1].items()
                         if isinstance(k, str) and k.startswith("val/") and _is_number(v)}
    else:
        final_metrics = {}
        best_metrics, best, last = {}, math.nan, math.nan
    seconds = _device_seconds(summary, reported)
    # Rounds after the first: the first also pays model loading and the validation-set cache.
    later = reported["time_this_iter_s"].iloc[1:].tolist() if "time_this_iter_s" in reported else []
    status = _status(ray_status, rounds, max_rounds, summary.get("status", ""))
    note = summary.get("status", "") if status not in ("completed", "early-stopped", "unfinished") else ""
    if status == "out of memory":
        note = f"{note}: {OOM_ADVICE}"
    elif ray_status == "ERROR" and not note:
        note = "crashed (see the trial's error.txt)"
    return TrialRow(
        trial=trial_id, rounds=rounds, best=best, last=last, best_metrics=best_metrics, status=status,
        ray_status=ray_status, note=note, final_metrics=final_metrics,
        params={k: config.get(k) for k in spec.get("space", {})}, seconds=seconds, path=trial_path,
        round_seconds=float(pd.Series(later).median()) if later else math.nan,
        curve=list(zip(range(1, rounds + 1), map(float, scores))),
        started=float((summary.get("attempts") or [{}])[0].get("started", math.nan)))


def _trials_after_snapshot(sweep_path: str, spec: dict, known: set[str]) -> list[tuple[str, str, dict, str]]:
    """Search trials that ended after the state snapshot Tune restored from (its driver was killed in between,
    or that snapshot was damaged): their folders and study records hold them, Tune's state does not, and a
    resumed sweep counts them towards ``num_samples`` (hypir_sweep.search). (trial id, Tune status, config, folder)
    for each whose newest study record is final; a folder left by a trial that was cut short is not one."""
    folders = {name[len("trial_"):]: _join(sweep_path, name) for name in _trial_folders(sweep_path)}
    folders = {trial_id: path for trial_id, path in folders.items() if trial_id not in known}
    storage = _study_url(spec, sweep_path) if folders else None
    if storage is None:
        return []
    import optuna

    from hypir_sweep.search import is_final, newest_records

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        records = newest_records(optuna.load_study(study_name=spec["name"], storage=storage))
    except KeyError:  # no study of that name (a population-based sweep's trials are all Tune's)
        return []
    found = []
    for trial_id, path in sorted(folders.items()):
        summary = json.loads(_read_text(_join(path, "summary.json")) or "{}")
        if trial_id in records and is_final(records[trial_id]) and "sweep" in summary.get("config", {}):
            found.append((trial_id, "TERMINATED", summary["config"]["sweep"]["params"], path))
    return found


def _trial_folders(sweep_path: str) -> list[str]:
    """The names of the trial folders in a sweep folder (local or on object storage)."""
    if "://" not in sweep_path:
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(sweep_path, "trial_*")) if os.path.isdir(p))
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(sweep_path)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(inner))
    except OSError:
        return []
    return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                  and i.base_name.startswith("trial_"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rank(rows: list[TrialRow], mode: str) -> None:
    """Full-budget trials ahead of early-stopped ones (a short run's score is not comparable), then by score."""

    def key(row: TrialRow):
        if not math.isfinite(row.best):
            return STATUS_ORDER.index(row.status), 1, 0.0
        return STATUS_ORDER.index(row.status), 0, -row.best if mode == "max" else row.best

    rows.sort(key=key)
    for index, row in enumerate(rows, start=1):
        row.rank = index


# ---- tables -------------------------------------------------------------------------------------

def leaderboard(sweep: Sweep) -> pd.DataFrame:
    """One row per trial: rank, trial, status, rounds, best/last score, PSNR/SSIM/LPIPS, per-type PSNR, params."""
    records = []
    for row in sweep.rows:
        m = row.best_metrics
        record = {"rank": row.rank, "trial": row.trial, "status": row.status, "rounds": row.rounds,
                  f"best {sweep.metric}": row.best, f"last {sweep.metric}": row.last,
                  "PSNR": m.get("val/PSNR", math.nan), "SSIM": m.get("val/SSIM", math.nan),
                  "LPIPS": m.get("val/LPIPS", math.nan)}
        for kind in _types(sweep):
            record[f"{kind} PSNR"] = m.get(f"val/{kind}/PSNR", math.nan)
        record.update(row.params)
        record["hours"] = row.seconds / 3600
        record["note"] = row.note
        records.append(record)
    return pd.DataFrame.from_records(records)


def _types(sweep: Sweep) -> list[str]:
    return reported_types(sweep.spec["base_resolved"]["data_config"]["val"])


def best_config(sweep: Sweep, row: TrialRow | None = None, weights_name: str = BEST_WEIGHTS
                ) -> tuple[dict, TrialRow, str | None]:
    """A trial's complete training config (base + its params + ties; the leaderboard's winner unless
    ``row`` is given), its row and its weights path."""
    winner = row or next((r for r in sweep.rows if math.isfinite(r.best)), None)
    if winner is None:
        raise AnalysisError(f"No trial of sweep '{sweep.name}' has finished a validation round yet; "
                            f"analyze again once one has.")
    overrides = {**trial_values(winner.params, sweep.spec.get("ties") or {}), "output_dir": f"results/{sweep.name}-best"}
    cfg = config_from_dict(sweep.spec["base_resolved"], source=f"sweep {sweep.name}", name=f"{sweep.name}-best",
                           overrides=overrides)
    weights = _join(winner.path, weights_name)
    exists = os.path.exists(weights) if "://" not in weights else True
    return config_to_dict(cfg), winner, weights if exists else None


def write_best_config(sweep: Sweep, path: str, row: TrialRow | None = None, why: str = "",
                      weights_name: str = BEST_WEIGHTS) -> tuple[str, TrialRow, str | None]:
    """Write ``best_config.yaml``: the winner's (or ``row``'s, picked for ``why``) config with a header."""
    config, winner, weights = best_config(sweep, row, weights_name)
    header = [f"best config of sweep '{sweep.name}' ({sweep.path})" + (f": {why}" if why else ""),
              f"trial {winner.trial} ({winner.status}, {winner.rounds} rounds): best {sweep.metric} {winner.best:.4f}",
              f"HYPIR-format weights of that trial: {weights or 'not kept (outside keep_top_k) or not written'}",
              "train it: python launch.py --single " + os.path.relpath(path)
              + "  (max_train_steps is the sweep's budget; raise it for a full run)"]
    with open(path, "w") as handle:
        handle.write("".join(f"# {line}\n" for line in header))
        yaml.safe_dump(config, handle, sort_keys=False)
    return path, winner, weights


def read_baseline(run_dir: str, metric: str, mode: str) -> tuple[str, dict[str, float], int]:
    """A single run's best round (name, metrics, step) from its summary.json."""
    path = os.path.join(run_dir, "summary.json")
    text = _read_text(path)
    if text is None:
        raise AnalysisError(f"Baseline '{run_dir}' holds no summary.json; pass the output_dir of a "
                            f"launch.py --single run, e.g. --baseline results/sd2_finetune_5k_improved.")
    rounds = json.loads(text).get("rounds") or []
    scored = [r for r in rounds if metric in r["metrics"]]
    if not scored:
        raise AnalysisError(f"Baseline '{run_dir}' has no validation round with {metric} yet; let it validate once.")
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda r: r["metrics"][metric])
    return os.path.basename(os.path.normpath(run_dir)), best["metrics"], int(best.get("step",
                                                                                   best["metrics"].get("step", 0)))


def baseline_table(sweep: Sweep, winner: TrialRow, baselines: list[tuple[str, dict, int]],
                   metrics: dict[str, float] | None = None) -> pd.DataFrame:
    """Overall and per-type metrics of the exported trial (its best round, or ``metrics``) beside each
    baseline, with deltas (trial - baseline)."""
    keys = [sweep.metric] + [k for k in ("val/PSNR", "val/SSIM", "val/LPIPS") if k != sweep.metric]
    for kind in _types(sweep):
        keys += [f"val/{kind}/{m}" for m in ("PSNR", "SSIM", "LPIPS")]
    shown = winner.best_metrics if metrics is None else metrics
    table = {"metric": [k.removeprefix("val/") for k in keys],
             f"trial {winner.trial}": [shown.get(k, math.nan) for k in keys]}
    for name, base, step in baselines:
        table[f"{name} (step {step})"] = [base.get(k, math.nan) for k in keys]
        table[f"delta vs {name}"] = [shown.get(k, math.nan) - base.get(k, math.nan) for k in keys]
    return pd.DataFrame(table)


def cost(sweep: Sweep, gpus_per_trial: float) -> dict[str, float]:
    """Device-hours spent, and hours early stopping saved against running every trial to the full budget.

    The rounds a stopped trial did not run are costed at its own median round time after the first
    round (which also pays model loading), or the sweep's median when it ran a single round.
    """
    devices = gpus_per_trial if gpus_per_trial > 0 else 1.0
    spent = sum(r.seconds for r in sweep.rows + sweep.confirm_rows) / 3600
    known = [r.round_seconds for r in sweep.rows if math.isfinite(r.round_seconds)]
    typical = float(pd.Series(known).median()) if known else 0.0
    saved = sum((r.round_seconds if math.isfinite(r.round_seconds) else typical) * (sweep.max_rounds - r.rounds)
                for r in sweep.rows if r.status == "early-stopped" and r.rounds) / 3600
    return {"trial_hours": spent, "device_hours": spent * devices, "saved_hours": saved * devices,
            "device": "GPU" if gpus_per_trial > 0 else "CPU trial", "devices_per_trial": devices}


def study_storage(sweep: Sweep) -> str | None:
    """The Optuna storage URL of a sweep's study: its database URL, the SQLite file in the sweep folder, or
    (object storage, read from another machine) a downloaded copy of the one the sweep uploaded."""
    return _study_url(sweep.spec, sweep.path)


def _study_url(spec: dict, sweep_path: str) -> str | None:
    storage = (spec.get("search") or {}).get("optuna_storage")
    if storage:
        return storage
    local = sweep_path if "://" not in sweep_path else os.path.join("sweep_results", spec["name"])
    db = os.path.join(local, "optuna.db")
    if not os.path.exists(db) and "://" in sweep_path:
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(_join(sweep_path, "optuna.db"))
        if fs.get_file_info(inner).type == pyarrow.fs.FileType.File:
            db = os.path.join(tempfile.mkdtemp(prefix="hypir-study-"), "optuna.db")
            pyarrow.fs.copy_files(inner, db, source_filesystem=fs)
    return "sqlite:///" + os.path.abspath(db) if os.path.exists(db) else None


def importances(sweep: Sweep) -> dict[str, float]:
    """Optuna's parameter importance (its default fANOVA evaluator) over the sweep's study; {} if too few trials."""
    import optuna

    storage = study_storage(sweep)
    if storage is None:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=sweep.name, storage=storage)
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, KeyError):
        return {}
