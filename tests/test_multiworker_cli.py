"""`keras-circle train` with `TF_CONFIG`: two workers on 127.0.0.1.

With a cluster in `TF_CONFIG` the pipeline trains under
`MultiWorkerMirroredStrategy` through `keras_circle.training.train_loop`
(Keras `fit` does not run there, keras-team/keras 20585). Both workers must
finish the same number of steps and report the same metrics (up to
near-ties).
"""

import json
import pathlib
import sys

import pytest

from tests.workers import run_workers

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_worker_cli_run(tmp_path):
    def command(index):
        return [
            sys.executable, "-m", "keras_circle", "train",
            str(ROOT / "configs/small/fine_grained_retrieval.json"),
            "--workdir", str(tmp_path / f"worker{index}"),
            "--set", "train.verbose=0", "--set", "eval.export_onnx=false",
            "--set", "eval.export_saved_model=false", "--set", "eval.plots=false",
        ]  # fmt: skip

    run_workers(command, ROOT, timeout=240)
    reports = [
        json.loads((tmp_path / f"worker{i}" / "report.json").read_text())
        for i in range(2)
    ]
    assert reports[0]["steps"] == reports[1]["steps"] == reports[0]["expected_steps"]
    # The workers hold the same weights up to float summation order (the loop's
    # own test bounds them by 1e-5), so near-tied rankings may differ a little.
    for name, value in reports[0]["metrics"].items():
        assert reports[1]["metrics"][name] == pytest.approx(value, abs=5e-3), name
