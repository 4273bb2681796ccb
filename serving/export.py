"""Thin entry point: `python serving/export.py MODEL --base-dir DIR [--onnx F]`.

Same as `keras-circle export ...`; see `python serving/export.py --help`.
"""

import sys

from keras_circle.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
