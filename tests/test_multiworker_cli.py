"""`keras-circle train` with `TF_CONFIG`: two workers on 127.0.0.1.

With a cluster in `TF_CONFIG` the pipeline trains under
`MultiWorkerMirroredStrategy` through `keras_circle.training.train_loop`
(Keras `fit` does not run there, keras-team/keras 20585). Both workers must
finish the same number of steps and report the same metrics (up to
near-ties).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.test_training_loop import _free_ports

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_worker_cli_run(tmp_path):
    cluster = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": cluster},
            "task": {"type": "worker", "index": index},
        }
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(tf_config),
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="",
        )
        command = [
            sys.executable, "-m", "keras_circle", "train",
            str(ROOT / "configs/small/fine_grained_retrieval.json"),
            "--workdir", str(tmp_path / f"worker{index}"),
            "--set", "train.verbose=0", "--set", "eval.export_onnx=false",
            "--set", "eval.export_saved_model=false", "--set", "eval.plots=false",
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output[-3000:]
    reports = [
        json.loads((tmp_path / f"worker{i}" / "report.json").read_text())
        for i in range(2)
    ]
    assert reports[0]["steps"] == reports[1]["steps"] == reports[0]["expected_steps"]
    # The workers hold the same weights up to float summation order (the loop's
    # own test bounds them by 1e-5), so near-tied rankings may differ a little.
    for name, value in reports[0]["metrics"].items():
        assert reports[1]["metrics"][name] == pytest.approx(value, abs=5e-3), name
