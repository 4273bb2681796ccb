"""What the training diagnostics cost: fit step time with and without them.

Two identical models (a Dense embedder, batch 256 = 64 classes x 4, 128-d
embeddings) train with `CircleLoss`, one compiled with
`keras_circle.metrics.circle_statistics()`. Their epochs run interleaved in a
random order; the median step costs (CPU time of the process between
consecutive batch ends, so not counting `fit`'s set-up, nor other jobs on a
shared machine) and their ratio are printed, with and without XLA.

    python benchmarks/bench_metrics.py
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_circle  # noqa: E402


def _model(dim, metrics, jit):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((dim,))
    model = keras.Model(inputs, keras.layers.Dense(dim)(inputs))
    model.compile(
        optimizer="adam",
        loss=keras_circle.CircleLoss(),
        metrics=keras_circle.metrics.circle_statistics() if metrics else None,
        jit_compile=jit,
    )
    return model


class _StepTimes(keras.callbacks.Callback):
    """CPU seconds of this process between consecutive batch ends: step costs
    without fit's set-up, and less noisy than wall time on a shared machine."""

    def __init__(self):
        super().__init__()
        self.times, self.last = [], None

    def on_train_begin(self, logs=None):
        self.last = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.process_time()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    labels = np.tile(np.arange(args.batch // 4), 4 * args.steps)[:n]
    x = rng.normal(size=(n, args.dim)).astype("float32")
    print(
        f"backend {keras.backend.backend()}, batch {args.batch}, dim {args.dim}, "
        f"{args.rounds} rounds of {args.steps} steps"
    )
    print("| XLA | step without (CPU ms) | step with (CPU ms) | ratio |")
    print("|---|---|---|---|")
    for jit in (False, True):
        models = {flag: _model(args.dim, flag, jit) for flag in (False, True)}
        times = {False: _StepTimes(), True: _StepTimes()}
        for model in models.values():  # warm-up: tracing and compiling
            model.fit(x, labels, batch_size=args.batch, shuffle=False, verbose=0)
        for _ in range(args.rounds):
            for flag in rng.permutation([False, True]):
                flag = bool(flag)
                models[flag].fit(
                    x,
                    labels,
                    batch_size=args.batch,
                    shuffle=False,
                    verbose=0,
                    callbacks=[times[flag]],
                )
        without, with_ = (1e3 * np.median(times[f].times) for f in (False, True))
        print(f"| {jit} | {without:.2f} | {with_:.2f} | {with_ / without:.2f} |")


if __name__ == "__main__":
    main()
