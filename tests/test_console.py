"""What runs print: quiet TensorFlow start-up, plain lines in a log file."""

import io
import os
import pathlib
import subprocess
import sys

import pytest

from keras_circle import console

ROOT = pathlib.Path(__file__).parents[1]
# TensorFlow's C++ start-up lines on this stack (tensorflow-cpu 2.21).
STARTUP = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def _cli(*args):
    """`python -m keras_circle ARGS` as a user runs it: no TF_CPP_MIN_LOG_LEVEL,
    stdout and stderr to pipes (as in a log file)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "keras_circle", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout + result.stderr


def test_verbose_brings_tensorflow_start_up_lines_back():
    # Without --verbose they are gone: test_train_writes_plain_lines_to_a_log_file.
    assert any(s in _cli("train", "--help", "--verbose") for s in STARTUP)


def test_train_writes_plain_lines_to_a_log_file(tmp_path):
    # The small re-ID config as shipped (no data.root), one epoch.
    out = _cli(
        "train", "configs/small/person_reid.json", "--workdir", str(tmp_path / "run"),
        "--set", "train.epochs=1", "--set", "eval.export_onnx=false",
    )  # fmt: skip
    assert "\r" not in out and "\x1b" not in out and "\b" not in out
    for noise in (*STARTUP, "cuInit", "shuffle=True", "Warning", "WARNING"):
        assert noise not in out
    # Keras verbose=2: one line per round, then the summary.
    assert "Epoch 2/2" in out and "3/3 - " in out and "loss: " in out
    assert "mAP: " in out


def test_progress_verbosity_draws_bars_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert [console.progress_verbosity(v) for v in (0, 1, 2)] == [0, 2, 2]
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert [console.progress_verbosity(v) for v in (0, 1, 2)] == [0, 1, 2]


@pytest.mark.parametrize(
    "argv, quiet",
    [
        (["-m", "train", "configs/x.json"], True),  # python -m keras_circle
        (["/venv/bin/keras-circle", "demo"], True),
        (["/venv/bin/keras-circle", "demo", "--verbose"], False),
        (["/venv/bin/pytest", "tests"], False),  # a program importing the package
    ],
)
def test_quiet_start_only_for_the_cli(argv, quiet):
    assert console.quiet_cli_start(argv) is quiet


def test_retrieval_progress_is_one_line_in_a_log_file(monkeypatch, capsys):
    from keras_circle import retrieval

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    bar = retrieval.checks.progress(3, verbose=1)
    for i in range(3):
        bar.update(i + 1)
    out = sys.stdout.getvalue()
    assert "\r" not in out and "\b" not in out and out.count("\n") == 1
