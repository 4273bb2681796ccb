"""A `keras-circle train` run killed with SIGKILL resumes to the same step count."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

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


def _two_backups(backup, epoch=2):
    """A backup of round `epoch` and its `.bkp` copy (the round before)."""
    _write_backup(backup, epoch=epoch - 1)
    for name in ("latest.weights.h5", "training_metadata.json"):
        (backup / f"{name}.bkp").write_bytes((backup / name).read_bytes())
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": epoch}))


def test_half_written_backup_falls_back_to_previous_with_a_warning(tmp_path):
    """A kill while Keras writes its backup in place leaves a truncated file."""
    from keras_circle.pipeline import run_folder

    backup = tmp_path / "backup"
    _two_backups(backup)
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="latest.weights.h5 is not a readable"):
        done = run_folder.resume_point(tmp_path, 5, 20, 10)
    assert done == 5  # round 1 of the copy, 5 steps a round
    assert weights.read_bytes() == (backup / "latest.weights.h5.bkp").read_bytes()


def test_fallback_to_the_copy_lists_no_round_twice(tmp_path):
    from keras_circle.pipeline import run_folder

    _two_backups(tmp_path / "backup")
    (tmp_path / "backup" / "training_metadata.json").write_text('{"epo')
    rows = ["epoch,loss", "0,2.5", "1,2.0"]
    (tmp_path / "history.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(RuntimeWarning, match="previous copy"):
        run_folder.resume_point(tmp_path, 5, 20, 10)
    # Round 1 (0-based) is trained again from the copy: its old row goes.
    assert (tmp_path / "history.csv").read_text().split() == rows[:2]


def test_unreadable_backup_without_copy_is_an_error_naming_files(tmp_path):
    from keras_circle.pipeline import run_folder

    backup = tmp_path / "backup"
    _write_backup(backup, epoch=1)
    (backup / "training_metadata.json").write_text('{"epo')
    with pytest.raises(run_folder.RunFolderError, match="--overwrite") as info:
        run_folder.resume_point(tmp_path, 5, 20, 10)
    message = str(info.value)
    assert "training_metadata.json is not JSON" in message
    assert "its copy: latest.weights.h5.bkp is missing" in message
    assert (backup / "latest.weights.h5").exists()  # nothing discarded


def test_corrupt_backup_and_copy_is_an_error_naming_files(tmp_path):
    from keras_circle.pipeline import run_folder

    backup = tmp_path / "backup"
    _two_backups(backup)
    for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
        (backup / name).write_bytes(b"not hdf5")
    with pytest.raises(run_folder.RunFolderError, match="cannot be restored") as info:
        run_folder.resume_point(tmp_path, 5, 20, 10)
    assert "latest.weights.h5.bkp is not a readable" in str(info.value)
    assert len(list(backup.iterdir())) == 4


@pytest.mark.parametrize("metadata", ['{"epoch": "2"}', "[2]", '{"epoch": -1}'])
def test_malformed_backup_metadata_is_named(tmp_path, metadata):
    """Keras would fail with a TypeError from inside `fit`."""
    from keras_circle.pipeline import run_folder

    backup = tmp_path / "backup"
    _write_backup(backup, epoch=1)
    (backup / "training_metadata.json").write_text(metadata)
    with pytest.raises(run_folder.RunFolderError, match="has no round count"):
        run_folder.resume_point(tmp_path, 5, 20, 10)


def test_readable_backup_gives_the_steps_done(tmp_path):
    from keras_circle.pipeline import run_folder

    _write_backup(tmp_path / "backup", epoch=3)
    assert run_folder.resume_point(tmp_path, 5, 20, 10) == 15
