"""A sweep on object storage (s3://), against a real S3 API served locally by moto.

Only what a user reads is uploaded (summary, config, weights, logs), never the trainer's working
state; the spec copy and the Optuna study live with the sweep, so analyze.py works from another
machine (here: another folder with no local sweep_results/).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from test_reliability import ROOT, finish, start, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_bucket(monkeypatch):
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="sweeps")
    yield client
    server.stop()


def test_a_sweep_on_s3_uploads_results_not_training_state_and_is_analysed_elsewhere(tmp_path, s3_bucket):
    spec = write_spec(tmp_path, "on_s3", {"type": "fifo"}, num_samples=2, steps=20)
    raw = yaml.safe_load(spec.read_text())
    raw["storage_path"] = "s3://sweeps/results"
    spec.write_text(yaml.safe_dump(raw))
    code, output = finish(start(spec, tmp_path))
    assert code == 0, output[-4000:]

    keys = [o["Key"] for page in s3_bucket.get_paginator("list_objects_v2").paginate(Bucket="sweeps")
            for o in page.get("Contents", [])]
    assert "results/on_s3/sweep_spec.yaml" in keys and "results/on_s3/optuna.db" in keys
    trials = {k.split("/")[2] for k in keys if k.startswith("results/on_s3/trial_")}
    assert len(trials) == 2
    for trial in trials:
        for name in ("summary.json", "config.yaml", "HYPIR_sd2_best.pth", "HYPIR_sd2_best.json"):
            assert f"results/on_s3/{trial}/{name}" in keys, (trial, name)
    # The trainer's own checkpoints (its working state) never reach the bucket; Tune's do, as it keeps them.
    assert not [k for k in keys if "/checkpoints/" in k or k.endswith(".partial")]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    board = subprocess.run([sys.executable, str(ROOT / "analyze.py"), "s3://sweeps/results/on_s3"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=300)
    assert board.returncode == 0, board.stdout[-2000:] + board.stderr[-2000:]
    assert "Sweep 'on_s3': 2 trials (2 completed)" in board.stdout
