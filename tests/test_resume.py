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


def _write_backup(backup_dir, epoch):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    backup_dir.mkdir(parents=True, exist_ok=True)
    model.save_weights(backup_dir / "latest.weights.h5")
    (backup_dir / "training_metadata.json").write_text(json.dumps({"epoch": epoch}))


def test_half_written_backup_falls_back_to_previous(tmp_path):
    """A kill while Keras writes its backup in place leaves a truncated file."""
    from keras_circle.pipeline import run

    backup = tmp_path / "backup"
    _write_backup(backup, epoch=2)
    for name in ("latest.weights.h5", "training_metadata.json"):
        (backup / f"{name}.bkp").write_bytes((backup / name).read_bytes())
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    run._drop_unreadable_backup(backup)
    assert weights.read_bytes() == (backup / "latest.weights.h5.bkp").read_bytes()


def test_half_written_first_backup_starts_afresh(tmp_path):
    from keras_circle.pipeline import run

    backup = tmp_path / "backup"
    _write_backup(backup, epoch=1)
    (backup / "training_metadata.json").write_text('{"epo')
    run._drop_unreadable_backup(backup)
    assert not backup.exists()
    _write_backup(backup, epoch=1)
    run._drop_unreadable_backup(backup)  # a readable backup stays
    assert (backup / "latest.weights.h5").exists()
