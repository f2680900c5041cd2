"""Tracking: SwanLab cloud/local/offline choice, metrics readable back, secrets kept out, failures never stop training.

Every test runs SwanLab for real, offline, with its home folder and working
directory inside tmp_path and no SWANLAB_* variables from the machine, so no saved
login or network is used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

swanlab = pytest.importorskip("swanlab")

from swanlab_records import read_offline_metrics, read_offline_run_info

from hypir_core.errors import ConfigError, DataError
from hypir_core.tracking import (
    REDACTED,
    NullTracker,
    detect_swanlab_mode,
    local_mode_available,
    make_tracker,
    scrub_secrets,
    validate_project_name,
)
from hypir_core.tracking import _modes as modes

SECRET = "sk-test-0123456789abcdef-SECRET"


@pytest.fixture
def swanlab_home(tmp_path, monkeypatch):
    """SwanLab with no credentials: its home (SWANLAB_ROOT, legacy SWANLAB_SAVE_DIR) and cwd in tmp_path."""
    for name in list(os.environ):
        if name.startswith("SWANLAB_"):
            monkeypatch.delenv(name)
    home = tmp_path / "swanlab_home"
    monkeypatch.setenv("SWANLAB_ROOT", str(home))
    monkeypatch.setenv("SWANLAB_SAVE_DIR", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # SwanLab also reads .env, swanlab.yaml and .swanlab/ from the cwd
    yield home
    if swanlab.has_run():  # never leak an open run into the next test
        swanlab.get_run().finish()


def _tracker(tmp_path, **kwargs):
    args = {
        "report_to": "swanlab",
        "project": "HYPIR-training",
        "experiment_name": "sd2_finetune_5k_improved",
        "logdir": str(tmp_path / "logs"),
        "config": {"lr_G": 2e-5, "lambda_ssim": 1.0},
        "mode": "offline",
    }
    args.update(kwargs)
    return make_tracker(**args)


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_report_to_none_records_nothing(tmp_path):
    tracker = make_tracker("none", "HYPIR-training", "exp", str(tmp_path / "logs"), {"lr_G": 1e-5})
    assert isinstance(tracker, NullTracker)
    assert (tracker.mode, tracker.run_dir, tracker.url) == ("disabled", None, None)
    tracker.log({"loss/G_total": 1.0}, step=1)
    tracker.log_images({"val/sample": np.zeros((4, 4, 3), np.uint8)}, step=1)
    tracker.finish()
    assert not (tmp_path / "logs").exists()


def test_tensorboard_runs_of_a_sweep_each_get_their_own_folder(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "swanlog"  # the one folder a sweep's trials log to
    for trial, loss in (("sweep-t1", 1.0), ("sweep-t2", 2.0)):
        with make_tracker("tensorboard", "p", trial, str(logs), {"api_key": SECRET}, group="sweep") as tracker:
            tracker.log({"loss/G_total": loss}, step=1)
    single = make_tracker("tensorboard", "p", "run", str(tmp_path / "run" / "logs"), {})
    single.log({"loss/G_total": 3.0}, step=1)
    single.finish()
    found = {events.parent.name: EventAccumulator(str(events)).Reload()
             for events in tmp_path.rglob("events.out.tfevents.*")}
    assert sorted(found) == ["logs", "sweep-t1", "sweep-t2"]  # a single run writes into its logging_dir itself
    assert [e.value for e in found["sweep-t2"].Scalars("loss/G_total")] == [2.0]
    assert SECRET not in str(found["sweep-t1"].Tensors("config/text_summary"))


def test_unknown_report_to_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="report_to: 'wandb'"):
        make_tracker("wandb", "HYPIR-training", "exp", str(tmp_path), {})


def test_offline_run_is_readable_with_swanlabs_reader(swanlab_home, tmp_path, capsys):
    tracker = _tracker(tmp_path, group="sweep-1", tags=["lambda", "trial-3"])
    assert tracker.mode == "offline"
    assert tracker.run_dir.parent == tmp_path / "logs"
    assert tracker.run_dir.name.startswith("run-")
    for step, (loss, score) in enumerate([(0.9, 20.5), (0.7, 21.25), (0.5, 22.0)], start=1):
        tracker.log({"loss/G_total": loss, "val/Final_Score": score}, step=step * 10)
    tracker.log({"val/Blur/PSNR": np.float32(24.5)}, step=30)
    lq, gt, restored = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    tracker.log_images({"val/sample": restored, "val/pairs": [lq, gt]}, step=30, caption="step 30")
    tracker.finish()

    metrics = read_offline_metrics(tracker.run_dir)
    assert metrics["loss/G_total"] == [(10, 0.9), (20, 0.7), (30, 0.5)]
    assert metrics["val/Final_Score"] == [(10, 20.5), (20, 21.25), (30, 22.0)]
    assert metrics["val/Blur/PSNR"] == [(30, 24.5)]
    info = read_offline_run_info(tracker.run_dir)
    assert info["project"] == "HYPIR-training"
    assert info["name"] == "sd2_finetune_5k_improved"
    assert info["group"] == "sweep-1" and info["tags"] == ["lambda", "trial-3"]
    assert info["state"] == "success"
    assert sorted(info["image_keys"]) == ["val/pairs", "val/sample"]
    assert len(list((tracker.run_dir / "media").rglob("*.png"))) == 3

    out = capsys.readouterr().out
    assert "Initialized SwanLab tracker: project=HYPIR-training, experiment=sd2_finetune_5k_improved" in out
    assert out.count(f"Upload later with: swanlab sync {tracker.run_dir}") == 1
    # SwanLab's own banner says the same over five wrapped lines, at the start and again at the end.
    assert "swanlab:" not in out, out


def test_swanlabs_banner_comes_back_when_verbose(swanlab_home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYPIR_SWEEP_VERBOSE", "1")
    tracker = _tracker(tmp_path)
    tracker.finish()
    out = capsys.readouterr().out
    assert "Tracking run with swanlab version" in out and out.count("to sync this run") == 2


def test_sync_hint_names_a_command_the_installed_swanlab_has():
    from swanlab.cli import cli

    assert "sync" in cli.commands


def test_offline_without_stdin_never_prompts_for_login(swanlab_home, tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from hypir_core.tracking import make_tracker
        t = make_tracker("swanlab", "HYPIR-training", "ci", sys.argv[1], {"seed": 231}, mode="offline")
        t.log({"loss/D": 0.25}, step=1)
        t.finish()
        assert t.mode == "offline", t.mode
        print(t.run_dir)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "logs")],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Initialized SwanLab tracker" in done.stdout
    assert read_offline_metrics(done.stdout.strip().splitlines()[-1]) == {"loss/D": [(1, 0.25)]}


def test_mode_follows_api_key_saved_login_and_swanlab_settings(swanlab_home, tmp_path, monkeypatch):
    assert local_mode_available()  # the dev extra installs SwanLab's dashboard
    mode, reason = detect_swanlab_mode()
    assert mode == "local" and reason.startswith("no SwanLab API key was found")
    assert detect_swanlab_mode("offline")[0] == "offline"
    mode, reason = detect_swanlab_mode("cloud")
    assert mode == "local" and reason.startswith("swanlab_mode is cloud but no SwanLab API key")
    with monkeypatch.context() as without_dashboard:
        without_dashboard.setattr(modes, "local_mode_available", lambda: False)
        assert detect_swanlab_mode()[0] == "offline"
        mode, reason = detect_swanlab_mode("local")
        assert mode == "offline" and "pip install -e '.[dashboard]'" in reason
    monkeypatch.setenv("SWANLAB_API_KEY", SECRET)
    assert detect_swanlab_mode()[0] == "cloud"
    assert detect_swanlab_mode("local")[0] == "local"  # the config asks for local even with a key
    monkeypatch.setenv("SWANLAB_MODE", "offline")  # the user forces offline even with a key
    assert detect_swanlab_mode()[0] == "offline"
    monkeypatch.setenv("SWANLAB_MODE", "local")
    assert detect_swanlab_mode()[0] == "local"
    monkeypatch.setenv("SWANLAB_MODE", "disabled")
    assert detect_swanlab_mode()[0] == "disabled"
    assert detect_swanlab_mode("local")[0] == "disabled"
    assert isinstance(_tracker(tmp_path), NullTracker)
    monkeypatch.delenv("SWANLAB_MODE")
    monkeypatch.delenv("SWANLAB_API_KEY")

    # What `swanlab login` leaves behind: a .netrc in SwanLab's home folder.
    from swanlab.sdk.internal.pkg import nrc

    nrc.write(nrc.path(swanlab_home), api_host="https://api.swanlab.cn", web_host="https://swanlab.cn", api_key=SECRET)
    assert detect_swanlab_mode()[0] == "cloud"


@pytest.mark.parametrize("mode", ["offline", "local"])
def test_secrets_stay_out_of_run_files_and_output(swanlab_home, tmp_path, monkeypatch, capfd, mode):
    monkeypatch.setenv("SWANLAB_API_KEY", SECRET)
    monkeypatch.setenv("SWANLAB_MODE", mode)
    config = {
        "lr_G": 2e-5,
        "swanlab_api_key": SECRET,
        "hub": {"HF_TOKEN": "hf_tokenvalue_987654", "password": "pw-123456"},
        "note": SECRET,  # the key pasted under an innocent name
        "hub_url": f"https://user:{SECRET}@example.org/model",
        "output_dir": Path("results/tiny"),
    }
    tracker = _tracker(tmp_path, config=config, mode="auto")
    assert tracker.mode == mode
    tracker.log({"loss/G_total": 1.0}, step=1)
    tracker.finish()

    run_bytes = _all_bytes(tmp_path / "logs")
    for secret in (SECRET, "hf_tokenvalue_987654", "pw-123456"):
        assert secret.encode() not in run_bytes
    saved_config = (tracker.run_dir / "files" / "config.yaml").read_text()
    assert REDACTED in saved_config and "results/tiny" in saved_config
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    assert config["swanlab_api_key"] == SECRET  # the caller's dict is untouched


def test_scrub_secrets_redacts_credential_keys_only():
    config = {"lambda_l1": 2.0, "api_key": "a", "nested": [{"github_token": "b", "seed": 231}], "empty_token": None}
    assert scrub_secrets(config) == {
        "lambda_l1": 2.0,
        "api_key": REDACTED,
        "nested": [{"github_token": REDACTED, "seed": 231}],
        "empty_token": None,
    }


def test_cloud_login_failure_falls_back_to_offline(swanlab_home, tmp_path, monkeypatch, capfd):
    with socket.socket() as sock:  # a port nobody listens on: the login is refused at once
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("SWANLAB_API_KEY", SECRET)
    monkeypatch.setenv("SWANLAB_API_HOST", f"http://127.0.0.1:{closed_port}")
    try:  # skip SwanLab's five HTTP retries (15 s); only speed, the failure is the same
        from swanlab.sdk.internal.pkg.client.session import request_retries_ctx

        token = request_retries_ctx.set(0)
    except ImportError:
        request_retries_ctx = token = None
    try:
        tracker = _tracker(tmp_path, mode="cloud")
    finally:
        if token is not None:
            request_retries_ctx.reset(token)
    assert tracker.mode == "offline"
    tracker.log({"val/PSNR": 25.0}, step=5)
    tracker.finish()
    assert read_offline_metrics(tracker.run_dir) == {"val/PSNR": [(5, 25.0)]}
    captured = capfd.readouterr()
    assert "SwanLab cloud login failed" in captured.err
    assert SECRET not in captured.out + captured.err
    assert SECRET.encode() not in _all_bytes(tmp_path / "logs")
    # The failed login leaves no empty run folder for `swanlab sync` to trip on.
    assert [p.name for p in (tmp_path / "logs").glob("run-*")] == [tracker.run_dir.name]


def test_init_failure_warns_once_and_falls_back_to_null(swanlab_home, tmp_path, capsys):
    not_a_folder = tmp_path / "logs"
    not_a_folder.write_text("a file where the log folder should be")
    tracker = _tracker(tmp_path, logdir=str(not_a_folder))
    assert isinstance(tracker, NullTracker)
    err = capsys.readouterr().err
    warning_lines = [line for line in err.splitlines() if "could not start" in line]
    assert len(warning_lines) == 1 and str(not_a_folder) in warning_lines[0]
    tracker.log({"loss/G_total": 1.0}, step=1)  # training goes on
    tracker.finish()


def test_logging_faults_are_warned_once_and_never_raise(swanlab_home, tmp_path, capsys):
    tracker = _tracker(tmp_path)
    tracker.log({"loss/G_total": 1.0, "loss/D": "not a number"}, step=1)
    bad_image = np.zeros((4, 4, 7), np.uint8)
    tracker.log_images({"val/sample": bad_image}, step=1)
    tracker.log_images({"val/sample": bad_image}, step=2)
    swanlab.finish()  # the run is closed underneath the tracker: swanlab now refuses to log
    tracker.log({"loss/G_total": 0.5}, step=2)
    tracker.log({"loss/G_total": 0.25}, step=3)
    tracker.finish()
    tracker.finish()

    err = capsys.readouterr().err
    assert err.count("SwanLab log failed") == 1 and "loss/D='not a number'" in err
    assert err.count("SwanLab log_images failed") == 1 and "(4, 4, 7)" in err
    assert read_offline_metrics(tracker.run_dir) == {"loss/G_total": [(1, 1.0)]}


def test_an_unfinished_earlier_run_is_closed_as_crashed(swanlab_home, tmp_path):
    first = _tracker(tmp_path, experiment_name="trial-1")
    first.log({"val/Final_Score": 30.0}, step=1)
    second = _tracker(tmp_path, experiment_name="trial-2")  # trial-1 crashed without finish()
    assert second.mode == "offline"
    second.log({"val/Final_Score": 31.0}, step=1)
    second.finish()
    assert read_offline_run_info(first.run_dir)["state"] == "crashed"
    assert read_offline_metrics(first.run_dir) == {"val/Final_Score": [(1, 30.0)]}
    assert read_offline_run_info(second.run_dir)["state"] == "success"


def test_exception_inside_with_block_marks_run_crashed(swanlab_home, tmp_path):
    with pytest.raises(RuntimeError, match="CUDA out of memory"), _tracker(tmp_path) as tracker:
        tracker.log({"loss/G_total": 1.0}, step=1)
        raise RuntimeError("CUDA out of memory")
    assert read_offline_run_info(tracker.run_dir)["state"] == "crashed"


def test_project_name_swanlab_refuses_is_fixed_with_a_warning(swanlab_home, tmp_path, capsys):
    tracker = _tracker(tmp_path, project="HYPIR training/v2")
    tracker.finish()
    assert read_offline_run_info(tracker.run_dir)["project"] == "HYPIR-training-v2"
    assert "swanlab_project 'HYPIR training/v2'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="swanlab_project: 'HYPIR training/v2'"):
        validate_project_name("HYPIR training/v2")
    validate_project_name("HYPIR-training")


def test_reader_names_a_folder_without_a_run_file(tmp_path):
    with pytest.raises(DataError, match="no run-\\*.swanlab file"):
        read_offline_metrics(tmp_path)


TRAINER_KEYS = ["loss/G_total", "loss/G_mse", "loss/G_l1", "loss/D", "val/PSNR", "val/SSIM", "val/LPIPS",
                "val/Final_Score"] + [f"val/{t}/PSNR" for t in ("Blur", "Haze", "Lowlight", "Rain", "Snow")]


def _dashboard(logdir: Path) -> dict:
    """What swanlab watch would show for a folder: experiments with their charts and the comparison charts."""
    import sqlite3

    db = sqlite3.connect(logdir / "runs.swanlab")
    try:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        experiments = {
            name: sorted(t for (t,) in db.execute("select name from tag where experiment_id = ?", (exp_id,)))
            for exp_id, name in db.execute("select id, name from experiment")
        }
        states = dict(db.execute("select name, status from experiment").fetchall())
        colors = dict(db.execute("select name, light from experiment").fetchall())
        comparison: dict[str, list[int]] = {}
        for name, sources in db.execute(
            "select c.name, count(s.tag_id) from chart c left join source s on s.chart_id = c.id "
            "where c.project_id is not null group by c.id"
        ):
            comparison.setdefault(name, []).append(sources)
        return {"experiments": experiments, "states": states, "comparison": comparison, "colors": colors}
    finally:
        db.close()


def test_local_run_is_in_its_folders_dashboard_and_says_how_to_watch(swanlab_home, tmp_path, capsys):
    tracker = _tracker(tmp_path, mode="local", experiment_name="sweep-trial_1", group="sweep")
    assert (tracker.mode, tracker.url) == ("local", None)
    assert tracker.run_dir.parent == tmp_path / "logs"
    tracker.log({"val/Final_Score": 20.5, "loss/G_total": 0.5}, step=10)
    tracker.finish()
    assert read_offline_metrics(tracker.run_dir) == {"val/Final_Score": [(10, 20.5)], "loss/G_total": [(10, 0.5)]}
    info = read_offline_run_info(tracker.run_dir)
    assert (info["name"], info["group"], info["state"]) == ("sweep-trial_1", "sweep", "success")
    shown = _dashboard(tmp_path / "logs")
    assert shown["experiments"] == {"sweep-trial_1": ["loss/G_total", "val/Final_Score"]}
    assert shown["states"] == {"sweep-trial_1": 1}  # finished
    out = capsys.readouterr().out
    assert f"See it with: swanlab watch {tmp_path / 'logs'}" in out
    assert "swanlab:" not in out, out  # SwanLab's banner, which says the same
    assert "SWANLAB_LOG_DIR" not in os.environ  # SwanLab sets it process-wide; a later run must not inherit it


def test_local_without_the_dashboard_falls_back_to_offline_with_a_warning(swanlab_home, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setattr(modes, "local_mode_available", lambda: False)
    tracker = _tracker(tmp_path, mode="local")
    assert tracker.mode == "offline"
    tracker.finish()
    err = capsys.readouterr().err
    assert "SwanLab local mode cannot be used here" in err and "pip install -e '.[dashboard]'" in err


WRITER = textwrap.dedent(
    """
    import os, sys, time
    import swanlab, swanboard.db  # imported before the start signal: both processes start SwanLab at once
    from hypir_core.tracking import make_tracker
    logdir, name, go, keys = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.002)
    t = make_tracker("swanlab", "HYPIR-sweeps", name, logdir, {"trial": name}, group="sweep", mode="local")
    assert t.mode == "local", t.mode
    for step in range(1, 31):
        t.log({k: step + 0.5 for k in keys}, step=step)
    t.finish()
    print(t.run_dir, flush=True)
    """
)


def test_two_processes_logging_into_one_local_folder_both_reach_the_dashboard(swanlab_home, tmp_path):
    """A sweep's concurrent trials share one dashboard database; SwanLab alone loses experiments and charts
    to this race (bench/swanlab_local_writers.py --stock: 5 of 8 folders broken with two writers)."""
    logdir, go = tmp_path / "swanlog", tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    names = ["sweep-trial_a", "sweep-trial_b"]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(logdir), name, str(go), ",".join(TRAINER_KEYS)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for name in names
    ]
    for writer in writers:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
    go.touch()
    outputs = [writer.communicate(timeout=120) for writer in writers]
    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0, out + err
        assert "ERROR" not in err and "Traceback" not in err, err  # SwanLab reports swallowed callback errors so
    shown = _dashboard(logdir)
    assert shown["experiments"] == {name: sorted(TRAINER_KEYS) for name in names}
    assert shown["states"] == {name: 1 for name in names}
    assert shown["comparison"] == {key: [2] for key in TRAINER_KEYS}  # one chart per metric, both trials on it
    assert len(set(shown["colors"].values())) == 2  # told apart on that chart (not one seeded random color)
    for out, _ in outputs:
        run_dir = Path(out.strip().splitlines()[-1])
        assert read_offline_metrics(run_dir)["val/Final_Score"] == [(step, step + 0.5) for step in range(1, 31)]


KILLED_AFTER_FLUSH = textwrap.dedent(
    """
    import os, sys
    from hypir_core.tracking import make_tracker
    t = make_tracker("swanlab", "HYPIR-sweeps", "sweep-trial_c", sys.argv[1], {}, mode="local")
    for step in range(1, 11):
        t.log({"loss/G_total": 1.0 / step}, step=step)
    t.log({"val/Final_Score": 25.5, "val/PSNR": 20.0}, step=10)
    t.flush()
    os._exit(0)  # what Ray does to a trial it stops early, about 0.1 s after the stop
    """
)


def test_a_flushed_round_is_in_the_dashboard_even_if_the_process_is_killed_next(swanlab_home, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_FLUSH, str(tmp_path / "swanlog")], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = _dashboard(tmp_path / "swanlog")
    assert shown["experiments"] == {"sweep-trial_c": ["loss/G_total", "val/Final_Score", "val/PSNR"]}
    (metric,) = [p for p in (tmp_path / "swanlog").glob("run-*/logs/*/*.log") if '"data": 25.5' in p.read_text()]
    assert [json.loads(line)["index"] for line in metric.read_text().splitlines()] == [10]
