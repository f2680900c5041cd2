"""After the leaderboard: what the exported weights score as HYPIR deploys them, and how to run them anywhere.

Every run's final round scores both colour-fix settings (``val/...`` with the config's
``data_config.val.color_fix``, ``val/color_fix/<other>/...`` with the other, from the same outputs),
so the winner and the baselines are compared under both, per degradation type, and the sweep says
when its winner would change under the other setting. Beside best_config.yaml go ``HANDOFF.md``
(the exact commands for our restore, HYPIR's test.py and the fork's inference.py), a filled
``sd2_gradio.yaml`` and ``fork_config.yaml`` (hypir_core/fork.py).
"""

from __future__ import annotations

import json
import math
import os
import shlex

import pandas as pd
import yaml

from hypir_core.config_data import reported_types
from hypir_core.fork import fork_config
from hypir_core.metrics import final_score

OTHER = {"none": "wavelet", "wavelet": "none"}
NAMES = {"none": "no colour fix", "wavelet": "wavelet colour fix"}
WITH = {"none": "without the colour fix", "wavelet": "with the wavelet colour fix"}

def both_settings(metrics: dict[str, float], main_fix: str) -> dict[str, dict[str, float]]:
    """{setting: {"Final_Score": .., "PSNR": .., "Blur/PSNR": ..}} of a final round's metrics; one setting if the
    round holds only its own (a run older than the colour-fix report, or a round before the last)."""
    settings = {main_fix: {k[4:]: v for k, v in metrics.items() if k.startswith("val/") and "color_fix/" not in k}}
    prefix = f"val/color_fix/{OTHER[main_fix]}/"
    other = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
    if other:
        settings[OTHER[main_fix]] = other
    return settings


def main_color_fix(config: dict) -> str:
    """The colour-fix setting a config validates with (data_config.val.color_fix, default none)."""
    return ((config.get("data_config") or {}).get("val") or {}).get("color_fix", "none")


def comparison(runs: list[tuple[str, dict, str]], types: list[str]) -> pd.DataFrame:
    """One row per (run, setting): overall scores and per type PSNR and Final_Score; runs = (name, metrics, fix)."""
    records = []
    for name, metrics, main_fix in runs:
        for fix, values in both_settings(metrics, main_fix).items():
            record = {"run": name, "colour fix": fix, "Final_Score": values.get("Final_Score", math.nan),
                      "PSNR": values.get("PSNR", math.nan), "SSIM": values.get("SSIM", math.nan),
                      "LPIPS": values.get("LPIPS", math.nan)}
            for kind in types:
                triple = [values.get(f"{kind}/{m}", math.nan) for m in ("PSNR", "SSIM", "LPIPS")]
                record[f"{kind} PSNR"] = triple[0]
                record[f"{kind} Final_Score"] = final_score(*triple)
            records.append(record)
    return pd.DataFrame.from_records(records)


def winner_change(sweep, exported) -> str:
    """One sentence: which trial ranks first at the final round under each colour-fix setting."""
    main_fix = main_color_fix(sweep.spec["base_resolved"])
    other, metric = OTHER[main_fix], sweep.metric.removeprefix("val/")
    scored = [(r, r.final_metrics.get(sweep.metric), r.final_metrics.get(f"val/color_fix/{other}/{metric}"))
              for r in sweep.rows if r.status == "completed"]
    scored = [s for s in scored if s[1] is not None and s[2] is not None]
    if not scored:
        return (f"No full-budget trial reports its final round under both colour-fix settings yet, so whether the "
                f"winner would change under the {NAMES[other]} is not known.")
    better = max if sweep.mode == "max" else min
    first_main, first_other = better(scored, key=lambda s: s[1]), better(scored, key=lambda s: s[2])
    if first_main[0].trial == first_other[0].trial:
        return (f"Ranked by their final round, trial {first_main[0].trial} is first both {WITH[main_fix]} "
                f"({metric} {first_main[1]:.4f}) and {WITH[other]} ({first_other[2]:.4f}).")
    mine = next(s for s in scored if s[0].trial == first_main[0].trial)
    fix = "set data_config.val.color_fix: wavelet" if other == "wavelet" else "keep data_config.val.color_fix: wavelet"
    return (f"The winner would change {WITH[other]}: ranked by their final round, trial {first_other[0].trial} would "
            f"be first ({metric} {first_other[2]:.4f} against {mine[2]:.4f} for trial {first_main[0].trial}, which is "
            f"first {WITH[main_fix]}, as the sweep ranked); to rank by what HYPIR deploys, {fix} in the base config.")

def color_fix_sentence(metrics: dict[str, float], main_fix: str, types: list[str], best_is_last: bool = True) -> str:
    """The colour fix's measured effect on one model, per type (from its final round)."""
    settings = both_settings(metrics, main_fix)
    if len(settings) < 2:
        return ("HYPIR's test.py, the fork's inference.py and the Gradio app always apply the wavelet colour fix; "
                "its effect on this model was not measured (its last round is not a final round).")
    fixed, plain = settings["wavelet"], settings["none"]
    per_type = ", ".join(f"{kind} {fixed[f'{kind}/PSNR'] - plain[f'{kind}/PSNR']:+.2f} dB" for kind in types
                         if f"{kind}/PSNR" in fixed and f"{kind}/PSNR" in plain)
    return (f"HYPIR's test.py, the fork's inference.py and the Gradio app always apply the wavelet colour fix "
            f"(the output keeps its detail and takes the LQ's low frequencies); on the validation set it changes "
            f"this model's PSNR by {per_type} and its Final_Score from {plain['Final_Score']:.4f} to "
            f"{fixed['Final_Score']:.4f} (its final round{'' if best_is_last else ', not the best round exported'}); "
            f"our restore applies it too unless given --color-fix none.")


def _commands(config: dict, weights: str, best_config: str) -> list[tuple[str, str]]:
    base, rank = config["base_model_path"], config["lora_rank"]
    modules = ",".join(config["lora_modules"])
    t, c = config["model_t"], config.get("coeff_t") or config["model_t"]
    prompt = shlex.quote(((config.get("data_config") or {}).get("val") or {}).get("prompt",
                                                                                "high quality, sharp details"))
    weights_q = shlex.quote(os.path.abspath(weights))
    return [
        ("Ours (HYPIR's inference: 512 tiles, stride 256, posterior sample, wavelet colour fix)",
         f"python launch.py --restore {shlex.quote(os.path.abspath(best_config))} INPUT_DIR --output OUT_DIR"),
        ("HYPIR's test.py (XPixelGroup/HYPIR; --upscale 1 restores at the input's size, its default is 4)",
         f"python test.py --base_model_type sd2 --base_model_path {shlex.quote(base)} --model_t {t} --coeff_t {c} "
         f"--lora_rank {rank} --lora_modules {modules} --weight_path {weights_q} --lq_dir INPUT_DIR "
         f"--output_dir OUT_DIR --upscale 1 --patch_size 512 --stride 256 --captioner fixed --fixed_caption {prompt} "
         f"--seed 231"),
        ("The fork's inference.py (Anduin9527/HYPIR; it reads a checkpoint folder: ema_state_dict.pth, else "
         "state_dict.pth; these weights are already the EMA's when use_ema)",
         f"mkdir -p fork_checkpoint && cp {weights_q} fork_checkpoint/state_dict.pth && python inference.py "
         f"--checkpoint fork_checkpoint --base_model_path {shlex.quote(base)} --model_t {t} --coeff_t {c} "
         f"--lora_rank {rank} --lora_modules {modules} --lq_dir INPUT_DIR --output_dir OUT_DIR --upscale 1 "
         f"--patch_size 512 --stride 256 --prompt {prompt}"),
    ]


def write_handoff(config: dict, weights: str | None, best_config: str, out_dir: str, sentence: str,
                  trial: str) -> list[str]:
    """Write HANDOFF.md, sd2_gradio.yaml and fork_config.yaml into ``out_dir``; return the fork's warnings."""
    fork, warnings = fork_config(config)
    fork_path = os.path.join(out_dir, "fork_config.yaml")
    with open(fork_path, "w") as handle:
        handle.write(f"# trial {trial}'s config in the fork's format (Anduin9527/HYPIR: python train.py --config "
                     f"{os.path.basename(fork_path)})\n# what the fork drops or changes:\n")
        handle.write("".join(f"#   {w}\n" for w in warnings))
        yaml.safe_dump(fork, handle, sort_keys=False)
    lines = [f"# Deploying trial {trial}", "",
             f"Weights (HYPIR format, the UNet's LoRA keys): `{weights or 'not kept'}`",
             f"lora_rank {config['lora_rank']}, model_t {config['model_t']}, coeff_t {config['coeff_t']}, "
             f"lora_modules {','.join(config['lora_modules'])}: HYPIR's scripts must be given these; a wrong rank "
             f"fails loudly, a wrong model_t or coeff_t silently changes every output.", "", sentence, ""]
    if weights is None:
        lines += ["This trial's weights were not kept (outside keep_top_k): retrain best_config.yaml to get them.", ""]
    else:
        for title, command in _commands(config, weights, best_config):
            lines += [f"{title}:", "", "```bash", command, "```", ""]
        gradio = {"base_model_type": "sd2", "base_model_path": config["base_model_path"], "model_t": config["model_t"],
                  "coeff_t": config["coeff_t"], "lora_rank": config["lora_rank"],
                  "lora_modules": list(config["lora_modules"]), "weight_path": os.path.abspath(weights)}
        with open(os.path.join(out_dir, "sd2_gradio.yaml"), "w") as handle:
            handle.write(f"# HYPIR's Gradio app (python app.py --config sd2_gradio.yaml), trial {trial}'s weights\n")
            yaml.safe_dump(gradio, handle, sort_keys=False)
        lines += ["HYPIR's Gradio app: `python app.py --config sd2_gradio.yaml` (written beside this file).", ""]
    if str(config["base_model_path"]).startswith("demo://"):
        lines += ["base_model_path is the embedded demo model: HYPIR's scripts need a diffusers SD2 folder.", ""]
    lines += [f"The fork's trainer: `python train.py --config fork_config.yaml` ({len(warnings)} changes listed in its "
              f"header).", ""]
    with open(os.path.join(out_dir, "HANDOFF.md"), "w") as handle:
        handle.write("\n".join(lines))
    return warnings


def read_run_final(run_dir: str) -> tuple[dict[str, float], str]:
    """A single run's last round and its colour-fix setting, from summary.json."""
    with open(os.path.join(run_dir, "summary.json")) as handle:
        summary = json.load(handle)
    rounds = summary.get("rounds") or []
    return (rounds[-1]["metrics"] if rounds else {}), main_color_fix(summary.get("config") or {})


def sweep_types(sweep) -> list[str]:
    return reported_types(sweep.spec["base_resolved"]["data_config"]["val"])
