"""A `keras-circle train` run killed with SIGKILL resumes to the same step count."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).parents[1]


def _command(workdir):
    return [
        sys.executable, "-m", "keras_circle", "train",
        str(ROOT / "configs/small/fine_grained_retrieval.json"),
        "--workdir", str(workdir),
        "--set", "train.epochs=3", "--set", "train.steps_per_epoch=20",
        "--set", "train.verbose=2", "--set", "eval.export_onnx=false",
        "--set", "eval.export_saved_model=false", "--set", "eval.plots=false",
    ]  # fmt: skip


def test_sigkill_mid_run_resumes_with_same_steps(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.Popen(
        _command(workdir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    # Wait for the first backup (after round 1 of 12), then kill mid-round.
    while not list((workdir / "backup").glob("*")) and time.time() < deadline:
        assert first.poll() is None, "the run ended before any backup"
        time.sleep(0.2)
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (workdir / "report.json").exists()

    second = subprocess.run(
        _command(workdir), env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-3000:]
    epochs = [int(e) for e in re.findall(r"Epoch (\d+)/12", second.stdout)]
    assert epochs and epochs[0] > 1, "the rerun did not resume from a backup"
    report = json.loads((workdir / "report.json").read_text())
    # An uninterrupted run does epochs * steps_per_epoch = 60 steps.
    assert report["steps"] == report["expected_steps"] == 60
