"""`keras-circle train` / `evaluate`: nothing silent (re-runs, divergence, reports).

One small finished run (module scope) is shared: the tests that would change
it work on a copy.
"""

import json
import pathlib
import re
import shutil

import pytest

from keras_circle import cli

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = str(ROOT / "configs/small/fine_grained_retrieval.json")
# 2 epochs of 2 steps, one backup per epoch; no ONNX. TensorBoard and plots
# on: the finished run is checked for them.
SMALL = [
    "train.epochs=2", "train.steps_per_epoch=2", "train.backup_every=2",
    "train.verbose=0", "train.tensorboard=true", "eval.plots=true",
    "eval.export_onnx=false", "data.max_test_images=200",
]  # fmt: skip


def _train(workdir, *overrides, flags=()):
    sets = [arg for key in (*SMALL, *overrides) for arg in ("--set", key)]
    return cli.main(["train", CONFIG, "--workdir", str(workdir), *sets, *flags])


def _snapshot(workdir):
    """Every file of a workdir with its bytes (backups included)."""
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished") / "run"
    assert _train(workdir) == 0
    return workdir


def _copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def test_finished_run_is_not_redone(finished, capsys):
    before = _snapshot(finished)
    capsys.readouterr()
    assert _train(finished) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and str(finished / "report.json") in out
    assert _snapshot(finished) == before
    assert sorted(p.name for p in (finished / "export/saved_model").iterdir()) == ["1"]


def test_changed_config_is_refused_before_touching_files(finished, capsys):
    before = _snapshot(finished)
    assert _train(finished, "model.embedding_dim=16", "loss.gamma=64") == 2
    err = capsys.readouterr().err
    assert "`model.embedding_dim` 32 -> 16" in err and "`loss.gamma`" in err
    assert "--overwrite" in err
    assert _snapshot(finished) == before


def test_fewer_epochs_than_trained_is_refused(finished, capsys):
    before = _snapshot(finished)
    assert _train(finished, "train.epochs=1") == 2
    err = capsys.readouterr().err
    assert "`train.epochs`" in err and "trained 4" in err
    assert _snapshot(finished) == before


def test_more_epochs_trains_a_finished_run_longer(finished, tmp_path, capsys):
    workdir = _copy(finished, tmp_path)
    capsys.readouterr()
    assert _train(workdir, "train.epochs=3", "train.verbose=2") == 0
    rounds = re.findall(r"Epoch (\d+)/3", capsys.readouterr().out)
    assert rounds == ["3"], "it did not resume from the finished run's backup"
    report = json.loads((workdir / "report.json").read_text())
    assert report["steps"] == report["expected_steps"] == 6
    # Rounds 0 and 1 from the first run, round 2 from this one: none twice.
    assert report["history"]["epoch"] == [0.0, 1.0, 2.0]
    versions = sorted(p.name for p in (workdir / "export/saved_model").iterdir())
    assert versions == ["1", "2"]


def test_overwrite_starts_over_with_a_new_config(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    flags = ("--overwrite",)
    # export/ is kept, and a 16-d version next to the 32-d one would be refused.
    new = ("model.embedding_dim=16", "eval.export_saved_model=false")
    assert _train(workdir, *new, flags=flags) == 0
    report = json.loads((workdir / "report.json").read_text())
    assert report["config"]["model"]["embedding_dim"] == 16
    assert report["history"]["epoch"] == [0.0, 1.0]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["embedding_dim"] == 16


def test_shape_change_is_refused_before_training(finished, capsys):
    """--overwrite with another embedding size: refused before a file is touched.

    `export/` outlives --overwrite, and the export would refuse a version of
    another shape only after the whole training.
    """
    before = _snapshot(finished)
    assert _train(finished, "model.embedding_dim=16", flags=("--overwrite",)) == 2
    err = capsys.readouterr().err
    assert "[None, 28, 28, 1]" in err and "size 32" in err and "size 16" in err
    assert "new --workdir" in err and "--allow-shape-change" in err
    assert _snapshot(finished) == before


def test_allow_shape_change_publishes_a_new_version(finished, tmp_path):
    from keras_circle.export.fingerprint import served_shapes

    workdir = _copy(finished, tmp_path)
    flags = ("--overwrite", "--allow-shape-change")
    assert _train(workdir, "model.embedding_dim=16", flags=flags) == 0
    base = workdir / "export/saved_model"
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert served_shapes(base / "1")["embedding_size"] == 32
    assert served_shapes(base / "2")["embedding_size"] == 16


@pytest.mark.parametrize("xla", ["false", "true"])
def test_diverging_run_exits_nonzero_and_publishes_nothing(tmp_path, capsys, xla):
    """`train.learning_rate=1e30`: the loss or the weights turn NaN in round 1.

    Under XLA a loss may not see its NaN inputs (it can return 0.0); the
    weights checked at the round's end still are NaN.
    """
    workdir = tmp_path / "run"
    overrides = ("train.learning_rate=1e30", f"train.xla={xla}", "train.replicas=1")
    assert _train(workdir, *overrides) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged at step" in err and "(epoch 1 of 2)" in err
    assert "train.learning_rate" in err
    for name in ("model.keras", "report.json", "export", "backup"):
        assert not (workdir / name).exists(), name


def test_zero_epochs_is_a_config_error(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert _train(workdir, "train.epochs=0") == 2
    assert "`train.epochs` must be >= 1" in capsys.readouterr().err
    assert not workdir.exists()


def test_evaluate_keeps_the_training_report(finished, capsys):
    report = (finished / "report.json").read_bytes()
    argv = ["evaluate", CONFIG, "--workdir", str(finished)]
    sets = [arg for key in (*SMALL, "eval.ks=[1, 2]") for arg in ("--set", key)]
    assert cli.main(argv + sets) == 0
    assert (finished / "report.json").read_bytes() == report
    kept = json.loads(report)
    for key in ("steps", "expected_steps", "history", "seconds", "strategy"):
        assert key in kept
    assert "saved_model" in kept["artifacts"]
    evaluation = json.loads((finished / "evaluation/report.json").read_text())
    assert set(evaluation["metrics"]["recall_at_k"]) == {"1", "2"}
    assert str(finished / "evaluation/report.json") in capsys.readouterr().out


def test_evaluate_refuses_another_task(finished, capsys):
    before = _snapshot(finished)
    config = str(ROOT / "configs/small/person_reid.json")
    assert cli.main(["evaluate", config, "--workdir", str(finished)]) == 2
    err = capsys.readouterr().err
    assert "'fine_grained_retrieval'" in err and "'person_reid'" in err
    assert _snapshot(finished) == before


def test_evaluate_missing_workdir_is_an_error(tmp_path, capsys):
    workdir = tmp_path / "nothing"
    assert cli.main(["evaluate", CONFIG, "--workdir", str(workdir)]) == 2
    assert f"No run folder {workdir}" in capsys.readouterr().err
    assert not workdir.exists()


def test_malformed_config_file_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('{"task": "person_reid",\n "train": {"epochs": 3,}}\n')
    assert cli.main(["train", str(path), "--workdir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 2" in err


def test_run_logs_diagnostics_to_csv_tensorboard_and_a_plot(finished, tmp_path):
    """history.csv has only logged columns (no val_* NA), TensorBoard gets the
    training diagnostics per round and the evaluation at the last step, and
    plots/circle_trajectory.png draws the history's (mean_s_n, mean_s_p)."""
    pytest.importorskip("tensorboard")
    import numpy as np

    from keras_circle import plots
    from keras_circle.pipeline import run_folder
    from tests.test_callbacks import _event_scalars

    workdir = finished
    header = (workdir / "history.csv").read_text().splitlines()[0].split(",")
    names = ["valid_anchors", "mean_s_p", "mean_s_n", "outside_circle"]
    assert sorted(header) == sorted(["epoch", "loss", *names])
    history = run_folder.read_history(workdir)
    assert all(None not in values for values in history.values())
    train = _event_scalars(str(workdir / "logs" / "train"))
    for name in names:
        assert train["epoch_" + name] == pytest.approx(history[name], abs=1e-6)
    report = json.loads((workdir / "report.json").read_text())
    evaluation = _event_scalars(str(workdir / "logs" / "evaluation"))
    assert evaluation["recall_at_k/1"] == pytest.approx(
        [report["metrics"]["recall_at_k"]["1"]]
    )
    assert evaluation["map_at_r"] == pytest.approx([report["metrics"]["map_at_r"]])
    plot = workdir / "plots" / "circle_trajectory.png"
    assert str(plot) in report["artifacts"]["plots"]
    _, points = plots.plot_similarity_trajectory(history, tmp_path / "again.png")
    np.testing.assert_allclose(
        points, np.stack([history["mean_s_n"], history["mean_s_p"]], 1)
    )
    assert plot.read_bytes() == (tmp_path / "again.png").read_bytes()


def test_evaluate_refuses_reid_options_for_another_task(finished, capsys):
    before = _snapshot(finished)
    argv = ["evaluate", CONFIG, "--workdir", str(finished), "--set", "eval.rerank=true"]
    assert cli.main(argv) == 2
    assert "`eval.rerank` is a person re-ID option" in capsys.readouterr().err
    assert _snapshot(finished) == before
