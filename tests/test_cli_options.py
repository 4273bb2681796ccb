"""Tests of the options several `keras-circle` commands share (keras_circle.cli_options)."""

import argparse

import pytest

from keras_circle import cli
from keras_circle import cli_options
from keras_circle import data


@pytest.mark.parametrize("command", ["export", "index"])
def test_normalization_choices_are_the_conventions(command):
    assert sorted(cli_options.NORMALIZATIONS) == sorted(data.NORMALIZATIONS)
    argv = [command, "m.keras", "d", "--out", "o"][: 2 if command == "export" else 5]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*argv, "--normalization", "minus_one_to_one"])


def test_preprocessing_flags_read_alike_in_export_and_index():
    flags = ["--normalization", "imagenet", "--center-crop", "36"]
    parser = cli.build_parser()
    exported = parser.parse_args(["export", "m.keras", *flags])
    indexed = parser.parse_args(["index", "m.keras", "d", "--out", "o", *flags])
    spec = {
        "normalization": "imagenet",
        "resize": "resize_shorter_then_center_crop",
        "shorter_side": 36,
    }
    for args in (exported, indexed):
        assert (
            cli_options.preprocessing_flags(args.normalization, args.center_crop)
            == spec
        )
    assert cli_options.preprocessing_flags(None, None) == {}


@pytest.mark.parametrize("side", [0, -4])
def test_non_positive_center_crop_is_refused(side):
    with pytest.raises(
        ValueError, match=f"--center-crop must be a positive side length; got {side}"
    ):
        cli_options.preprocessing_flags(None, side)


def test_run_arguments_of_train_evaluate_and_examples_parse_alike():
    parser = cli.build_parser()
    argv = ["c.json", "--workdir", "w", "--set", "a=1", "--set", "b=2"]
    for command in ("train", "evaluate"):
        args = parser.parse_args([command, *argv])
        assert (args.config, args.workdir, args.overrides) == (
            "c.json",
            "w",
            ["a=1", "b=2"],
        )
    example = argparse.ArgumentParser()
    cli_options.add_run_arguments(
        example, "config", config_default="configs/x.json", workdir="runs/x"
    )
    assert vars(example.parse_args([])) == {
        "config": "configs/x.json",
        "workdir": "runs/x",
        "overrides": [],
    }
    assert vars(example.parse_args(argv)) == {
        "config": "c.json",
        "workdir": "w",
        "overrides": ["a=1", "b=2"],
    }
