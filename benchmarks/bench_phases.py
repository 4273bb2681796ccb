"""How a machine's speed drifts within one process: the pair-wise loss, its
floor, a bare element-wise kernel and a memory copy, timed window by window.

`bench_losses.py` times its sides interleaved so that they share the load,
but a ratio is still only as steady as the machine. On the 2-core machines
this project is measured on, element-wise kernels (XLA's and TensorFlow's)
run several times slower for seconds at a time while matmuls and a
single-threaded copy keep their speed, so a run of `bench_losses.py` that
falls in such a phase reports a worse ratio for the kernel. This script
shows those phases: every window (`--rounds` interleaved rounds, a second or
two) prints the median time of each side, and the end gives the share of
windows in which each side ran over 1.25x its fastest window.

Sides: `floor` (`sum(E E^T)`, value and gradient, TensorFlow's matmuls),
`ours` (`CircleLoss`, value and gradient, XLA), `elementwise` (an XLA-compiled
masked exponential and its row and column sums over a 512 x 4096 panel, the
shape of the kernel's element-wise work) and `copy` (a NumPy copy of 64 MB,
one thread).

Usage:

```
python benchmarks/bench_phases.py --seconds 150 --plot phases.png
```
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_losses  # noqa: E402


def _elementwise(tf, np):
    """A step doing the kernel's element-wise work on one 512 x 4096 panel."""
    rng = np.random.default_rng(0)
    s = tf.constant((rng.normal(size=(512, 4096)) * 0.05).astype("float32"))
    labels = tf.constant(np.arange(4096) // 8)

    @tf.function(jit_compile=True)
    def step(s, labels):
        positive = tf.equal(labels[:512, None], labels[None, :])
        values = tf.where(
            positive, -80.0 * (1.4 - s) * (s - 0.6), 80.0 * (s + 0.4) * (s - 0.4)
        )
        masked = tf.where(positive, values, -np.inf)
        row, column = tf.reduce_max(masked, 1), tf.reduce_max(masked, 0)
        rows = tf.exp(values - tf.where(positive, row[:, None], 0.0))
        columns = tf.exp(values - tf.where(positive, column[None, :], 0.0))
        return tf.reduce_sum(rows, 1), tf.reduce_sum(columns, 0)

    return lambda: tf.nest.map_structure(np.asarray, step(s, labels))


def _plot(times, windows, path):
    from keras_circle.figures import new_axes
    from keras_circle.figures import save_figure

    figure, axes = new_axes(figsize=(8, 4))
    for name, series in windows.items():
        fastest = min(series)
        axes.plot(times, [t / fastest for t in series], label=name, linewidth=1)
    axes.set_xlabel("seconds into the process")
    axes.set_ylabel("window median / fastest window")
    axes.set_title("Speed phases within one process")
    axes.legend(fontsize=8)
    print(f"Wrote {save_figure(figure, path)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per window")
    parser.add_argument("--plot", help="also write the windows as a line chart (PNG)")
    args = parser.parse_args()
    bench_losses._limit_threads(args.threads)
    args.classes, args.fraction = 0, 0.1
    bench_losses._tf_setup(args)
    import numpy as np
    import tensorflow as tf

    import keras_circle

    buffer = np.ones(64 * 2**20 // 4, np.float32)
    steps = {
        "floor": bench_losses._tf_step(args, "floor", 0, keras_circle),
        "ours": bench_losses._tf_step(args, "ours", 1, keras_circle),
        "elementwise": _elementwise(tf, np),
        "copy": buffer.copy,
    }
    for step in steps.values():  # compile and warm up
        step()
        step()
    print(f"Machine: {bench_losses._machine()}; B={args.batch}, D={args.dim}.")
    print("seconds | " + " | ".join(f"{name} ms" for name in steps))
    start, times, windows = time.time(), [], {name: [] for name in steps}
    while time.time() - start < args.seconds:
        medians = bench_losses.interleaved_medians(steps, args.rounds)
        times.append(time.time() - start)
        for name, seconds in medians.items():
            windows[name].append(seconds * 1000)
        row = " | ".join(f"{medians[name] * 1000:.1f}" for name in steps)
        print(f"{times[-1]:.1f} | {row}", flush=True)
    print(
        "\nside | fastest window ms | median window ms | windows over 1.25x the fastest"
    )
    for name, series in windows.items():
        fastest = min(series)
        slow = sum(t > 1.25 * fastest for t in series)
        print(
            f"{name} | {fastest:.1f} | {statistics.median(series):.1f} "
            f"| {slow} of {len(series)}"
        )
    if args.plot:
        _plot(times, windows, args.plot)


if __name__ == "__main__":
    main()
