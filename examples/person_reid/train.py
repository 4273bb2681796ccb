"""Entry point: `python examples/person_reid/train.py CONFIG [--workdir DIR] [--set k=v]`."""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import train_lib  # noqa: E402

from keras_circle import config as config_lib  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", nargs="?", default="configs/person_reid.json")
    parser.add_argument("--workdir", default="runs/person_reid")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = config_lib.load_config(args.config, args.overrides)
    report = train_lib.train_and_evaluate(config, args.workdir)
    print(report["metrics"])


if __name__ == "__main__":
    main()
