"""The offline demo, with a small budget: report, plots, SavedModel, ONNX."""

import json

from keras_circle import cli


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
            ]
        )
        == 0
    )
    report = json.loads((workdir / "report.json").read_text())
    assert set(report["results"]) == {"circle_loss", "raw_pixels"}
    for name in report["results"]:
        assert set(report["results"][name]["recall_at_k"]) == {"1", "2", "4", "8"}
        assert 0.0 < report["results"][name]["map_at_r"] <= 1.0
    for path in report["artifacts"]["plots"].values():
        assert (workdir / "plots").exists() and path.endswith(".png")
    assert (workdir / "saved_model" / "1" / "saved_model.pb").exists()
    assert (workdir / "embedder.onnx").exists()
    out = capsys.readouterr().out
    assert "raw_pixels" in out and "ONNX" in out


def test_demo_non_positive_epochs_is_rejected(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(workdir), "--epochs", "-1"]) == 2
    assert "--epochs must be >= 1; got -1" in capsys.readouterr().err
    assert not workdir.exists()


def test_demo_fractional_steps_are_rejected(tmp_path):
    import pytest

    from keras_circle import demo

    with pytest.raises(ValueError, match="`steps_per_epoch` must be a positive"):
        demo.run_demo(tmp_path / "demo", steps_per_epoch=2.5)
    assert not (tmp_path / "demo").exists()
