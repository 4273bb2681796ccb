"""The glyph demo (`keras-circle demo --dataset glyphs`) on the tiny glyph set.

The tiny set (matplotlib's DejaVu and STIX fonts: 40 training and 20 test
letters, 8 typefaces, 24x24) is built on first use into a temporary cache,
as the CJK set would be; a few training steps keep the run to seconds.
"""

import json

import numpy as np
import pytest
from PIL import Image

from keras_circle import cli
from keras_circle import data
from keras_circle import glyph_demo
from keras_circle.data import glyph_fonts


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("glyph_cache")


def test_glyph_demo_builds_trains_and_reports(tiny_cache, tmp_path, capsys):
    workdir = tmp_path / "demo"
    argv = ["demo", "--dataset", "glyphs", "--glyph-set", "tiny", "--steps", "3"]
    argv += ["--cache-dir", str(tiny_cache), "--workdir", str(workdir)]
    assert cli.main(argv) == 0
    assert (tiny_cache / "tiny" / "manifest.json").is_file()  # built on first use
    report = json.loads((workdir / "report.json").read_text())
    assert report["dataset"] == "glyphs" and report["steps"] == 3
    results = report["results"]
    assert set(results) == {"circle_loss", "raw_pixels"}
    for scores in results.values():
        assert set(scores["recall_at_k"]) == {"1", "2", "4", "8"}
        assert set(scores["cross_typeface_recall_at_k"]) == {"1", "4"}
        assert 0.0 < scores["map_at_r"] <= 1.0
    ours, pixels = results["circle_loss"], results["raw_pixels"]
    assert report["recall_at_1_gain_over_pixels"] == pytest.approx(
        ours["recall_at_k"]["1"] - pixels["recall_at_k"]["1"]
    )
    assert report["map_at_r_gain_over_pixels"] == pytest.approx(
        ours["map_at_r"] - pixels["map_at_r"]
    )
    assert report["cross_typeface_recall_at_1_gain_over_pixels"] == pytest.approx(
        ours["cross_typeface_recall_at_k"]["1"]
        - pixels["cross_typeface_recall_at_k"]["1"]
    )
    test = data.load_glyphs("tiny", "test", cache_dir=tiny_cache)
    # Raw pixels are scored with the benchmark's own function.
    flat = test.images.reshape(len(test.labels), -1).astype(np.float32)
    assert pixels == data.glyph_metrics(flat, test)
    assert Image.open(report["artifacts"]["retrieval_grid"]).format == "PNG"
    assert (workdir / "model.keras").is_file()
    out = capsys.readouterr().out
    # Not a terminal: progress as plain lines, then the summary.
    assert "step 3/3" in out and "MAP@R gain over raw pixels" in out
    # A second run replaces the first glyph demo in the same folder.
    assert cli.main(argv + ["--quiet"]) == 0
    out = capsys.readouterr().out
    # Quiet: no progress lines, the summary stays.
    assert "step " not in out and "MAP@R gain over raw pixels" in out


def test_retrieval_grid_shows_neighbours_from_other_typefaces(tiny_cache, tmp_path):
    data.ensure_glyphs("tiny", tiny_cache, verbose=False)
    test = data.load_glyphs("tiny", "test", cache_dir=tiny_cache)
    embeddings = {
        "pixels": test.images.reshape(len(test.labels), -1).astype(np.float32),
        # Every neighbour is of the query's class: all frames green.
        "labels": np.eye(20, dtype=np.float32)[test.labels],
    }
    grid = glyph_demo.retrieval_grid(
        embeddings, test, tmp_path / "grid.png", queries=6, neighbours=4
    )
    query = grid["queries"]
    assert query.shape == (6,) and len(set(test.labels[query])) == 6
    assert set(test.designs[query]) <= set(test.query_designs)
    for name in embeddings:
        found = grid["neighbours"][name]
        assert found.shape == (6, 4)
        assert not set(test.designs[found.ravel()]) & set(test.query_designs)
        np.testing.assert_array_equal(
            grid["correct"][name], test.labels[found] == test.labels[query][:, None]
        )
    assert grid["correct"]["labels"].all()
    assert not grid["correct"]["pixels"].all()  # the letters of the tiny set
    image = np.asarray(Image.open(grid["path"]).convert("RGB"))
    for row, box in enumerate(grid["boxes"]["query"]):
        assert tuple(image[box[1], box[0]]) == glyph_demo.QUERY_RGB
        # The cell shows the query glyph, black ink on white, scaled 2x.
        inner = image[
            box[1] + 3 : box[1] + 3 + 48 : 2, box[0] + 3 : box[0] + 3 + 48 : 2
        ]
        np.testing.assert_array_equal(
            inner[..., 0], 255 - test.images[query[row], ..., 0]
        )
    for name in embeddings:
        for row, boxes in enumerate(grid["boxes"][name]):
            for j, (left, top, _, _) in enumerate(boxes):
                colour = (
                    glyph_demo.CORRECT_RGB
                    if grid["correct"][name][row, j]
                    else glyph_demo.WRONG_RGB
                )
                assert tuple(image[top, left]) == colour


def test_glyph_demo_without_fonts_names_the_packages(tmp_path, monkeypatch, capsys):
    absent = [dict(d, path=str(tmp_path / "none.ttf")) for d in glyph_fonts.CJK_DESIGNS]
    monkeypatch.setattr(glyph_fonts, "CJK_DESIGNS", absent)
    workdir = tmp_path / "demo"
    argv = ["demo", "--dataset", "glyphs", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv + ["--workdir", str(workdir)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("keras-circle demo: error: ")
    assert err.endswith("apt-get install -y " + " ".join(glyph_fonts.apt_packages()))
    assert not workdir.exists() and not (tmp_path / "cache" / "cjk").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "5"], "--steps applies to --dataset glyphs only"),
        (["--glyph-set", "tiny"], "--glyph-set applies to --dataset glyphs only"),
        (["--dataset", "glyphs", "--epochs", "2"], "--epochs applies to"),
        (["--dataset", "glyphs", "--steps", "0"], "--steps must be >= 1; got 0"),
    ],
)
def test_demo_options_of_the_other_dataset_are_rejected(
    argv, message, tmp_path, capsys
):
    workdir = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(workdir), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not workdir.exists()


def test_glyph_demo_refuses_a_folder_of_another_run(tiny_cache, tmp_path, capsys):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "config.json").write_text("{}")
    argv = ["demo", "--dataset", "glyphs", "--glyph-set", "tiny", "--steps", "1"]
    argv += ["--cache-dir", str(tiny_cache), "--workdir", str(workdir)]
    assert cli.main(argv) == 2
    assert "holds no glyph demo" in capsys.readouterr().err
    assert sorted(p.name for p in workdir.iterdir()) == ["config.json"]


def test_glyph_demo_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        glyph_demo.run_glyph_demo(tmp_path / "demo", steps=2.5)
    with pytest.raises(ValueError, match="`glyph_set` must be one of"):
        glyph_demo.run_glyph_demo(tmp_path / "demo", glyph_set="latin")
    assert not (tmp_path / "demo").exists()
