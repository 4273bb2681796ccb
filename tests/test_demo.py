"""The offline demo, with a small budget: report, plots, SavedModel, ONNX."""

import json
import pathlib

from keras_circle import cli
from keras_circle import config as config_lib
from keras_circle import demo


def test_demo_small_budget_writes_everything(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert (
        cli.main(
            [
                "demo",
                "--workdir",
                str(workdir),
                "--epochs",
                "1",
                "--steps-per-epoch",
                "10",
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((workdir / "report.json").read_text())
    assert set(report["results"]) == {"circle_loss", "raw_pixels"}
    for name in report["results"]:
        assert set(report["results"][name]["recall_at_k"]) == {"1", "2", "4", "8"}
        assert 0.0 < report["results"][name]["map_at_r"] <= 1.0
    names = {pathlib.Path(p).name for p in report["artifacts"]["plots"]}
    assert {
        "recall_at_k.png",
        "circle_boundary.png",
        "similarities.png",
        "circle_trajectory.png",
    } <= names
    # The training diagnostics are in the report's history.
    assert report["history"]["valid_anchors"] == [1.0]
    assert (workdir / "export" / "saved_model" / "1" / "saved_model.pb").exists()
    assert (workdir / "export" / "embedder.onnx").exists()
    out = capsys.readouterr().out
    # --quiet: no per-epoch lines, the result table still prints.
    assert "raw_pixels" in out and "ONNX" in out and "Epoch" not in out
    # The report holds the config the pipeline ran, not strings restating it;
    # the run folder's config.json is that same config.
    expected = config_lib.to_dict(
        demo.demo_config(epochs=1, steps_per_epoch=10, verbose=0)
    )
    assert report["config"] == expected
    assert json.loads((workdir / "config.json").read_text()) == expected
    assert report["steps"] == report["expected_steps"] == 10


def test_demo_in_a_folder_of_another_run_is_refused(tmp_path, capsys):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "config.json").write_text(
        json.dumps(config_lib.to_dict(demo.demo_config(steps_per_epoch=10)))
    )
    before = (workdir / "config.json").read_text()
    assert cli.main(["demo", "--workdir", str(workdir), "--steps-per-epoch", "5"]) == 2
    err = capsys.readouterr().err
    assert "`train.steps_per_epoch` 10 -> 5" in err and "--overwrite" in err
    assert (workdir / "config.json").read_text() == before


def test_demo_non_positive_epochs_is_rejected(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(workdir), "--epochs", "-1"]) == 2
    assert "--epochs must be >= 1; got -1" in capsys.readouterr().err
    assert not workdir.exists()


def test_demo_fractional_steps_are_rejected(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="`steps_per_epoch` must be a positive"):
        demo.run_demo(tmp_path / "demo", steps_per_epoch=2.5)
    assert not (tmp_path / "demo").exists()
