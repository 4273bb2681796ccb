"""Worst relative differences of the losses to the float64 pair-loop reference.

Runs the reference of `keras_circle.testing.reference` (written from the paper,
independent of the package) on random batches at the paper's settings and
prints, for values and gradients, the largest relative difference seen.

    python benchmarks/accuracy.py
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_circle  # noqa: E402
from keras_circle.testing import reference  # noqa: E402
from keras_circle.testing.backend import value_and_grad  # noqa: E402

SETTINGS = [(80.0, 0.4), (128.0, 0.25), (256.0, 0.25)]


def rel(actual, expected):
    scale = max(np.max(np.abs(expected)), 1e-30)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / scale)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"backend: {keras.backend.backend()}, trials per setting: {args.trials}")
    print("| loss | gamma | m | worst rel. diff value | worst rel. diff gradient |")
    print("|---|---|---|---|---|")
    for gamma, margin in SETTINGS:
        worst_v = worst_g = 0.0
        for _ in range(args.trials):
            labels = rng.integers(0, 6, size=32)
            e = rng.normal(size=(32, 16)).astype("float32")
            ref, valid, ref_grad = reference.pairwise_circle(labels, e, gamma, margin)
            loss = keras_circle.CircleLoss(gamma, margin)
            value, (grad,) = value_and_grad(
                lambda x, loss=loss, y=labels: loss(y, x), e
            )
            worst_v = max(worst_v, rel(value, ref[valid].mean()))
            worst_g = max(worst_g, rel(grad, ref_grad))
        print(
            f"| CircleLoss | {gamma:g} | {margin:g} | {worst_v:.1e} | {worst_g:.1e} |"
        )
    for gamma, margin in SETTINGS:
        worst_v = worst_g = 0.0
        for _ in range(args.trials):
            labels = rng.integers(0, 20, size=32)
            s = np.tanh(rng.normal(size=(32, 20))).astype("float32")
            ref, ref_grad = reference.class_circle(labels, s, gamma, margin)
            loss = keras_circle.ClassCircleLoss(gamma, margin)
            value, (grad,) = value_and_grad(
                lambda x, loss=loss, y=labels: loss(y, x), s
            )
            worst_v = max(worst_v, rel(value, ref.mean()))
            worst_g = max(worst_g, rel(grad, ref_grad))
        print(
            f"| ClassCircleLoss | {gamma:g} | {margin:g} | {worst_v:.1e} | {worst_g:.1e} |"
        )


if __name__ == "__main__":
    main()
