"""The pair-wise kernel's two panel layouts against each other, in one process.

`keras_circle.panel_loops` lays the upper triangle of `S` out in cyclic panels
(two loops, one compiled body each) where XLA compiles a whole TensorFlow step;
elsewhere `keras_circle.panels` unrolls them (a computation per panel). This
script builds `CircleLoss` steps with each layout, under TensorFlow with XLA
and, with `--jax`, under `jax.jit` in a child process, and reports for each
batch size:

- compile: the first call of the value-and-gradient step (tracing, compiling
  and one run), in seconds;
- forward: a step returning the loss alone;
- forward + backward: a step returning the loss and its gradient, as `fit`;

the steps timed in a random order each round (medians), so that both layouts
share the machine's slow phases. Peak memory needs a process per case: see
`benchmarks/bench_losses.py`.

    python benchmarks/bench_layouts.py
    python benchmarks/bench_layouts.py --jax
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

LAYOUTS = ("unrolled", "cyclic")


def _layout(panel_loops, name):
    """`panel_loops.cyclic_layout` for the layout `name`: never, or wherever a
    static batch size has a divisor to cut (as TensorFlow under XLA does)."""
    if name == "unrolled":
        return lambda size, block_size: None
    return panel_loops.cyclic_blocks


def _steps(batch, dim, block_size):
    """`{(layout, "forward" | "both"): step}` and the compile seconds of each
    layout's value-and-gradient step, on the current Keras backend."""
    import keras
    import numpy as np

    import keras_circle
    from keras_circle import kernels
    from keras_circle import panel_loops

    kernels.DEFAULT_BLOCK_SIZE = block_size
    rng = np.random.default_rng(0)
    e = rng.normal(size=(batch, dim)).astype("float32")
    labels = rng.integers(0, max(1, batch // 8), size=batch)
    loss = keras_circle.CircleLoss(gamma=80.0, margin=0.4)
    original = panel_loops.cyclic_layout
    steps, compile_seconds = {}, {}
    for name in LAYOUTS:
        # The layout is chosen while a step is traced: patch, trace, restore.
        panel_loops.cyclic_layout = _layout(panel_loops, name)
        try:
            if keras.backend.backend() == "jax":
                forward, both = _jax_steps(loss, e, labels)
            else:
                forward, both = _tf_steps(loss, e, labels)
            start = time.perf_counter()
            both()
            compile_seconds[name] = time.perf_counter() - start
            forward()
        finally:
            panel_loops.cyclic_layout = original
        steps[(name, "forward")] = forward
        steps[(name, "both")] = both
    return steps, compile_seconds


def _tf_steps(loss, e, labels):
    import tensorflow as tf

    e = tf.Variable(e)
    labels = tf.constant(labels)

    @tf.function(jit_compile=True)
    def forward(labels):
        return loss(labels, e)

    @tf.function(jit_compile=True)
    def both(labels):
        with tf.GradientTape() as tape:
            value = loss(labels, e)
        return value, tape.gradient(value, e)

    return (
        lambda: forward(labels).numpy(),
        lambda: [t.numpy() for t in both(labels)],
    )


def _jax_steps(loss, e, labels):
    import jax
    import jax.numpy as jnp

    e, labels = jnp.asarray(e), jnp.asarray(labels)

    def value(e, labels):
        return loss(labels, e)

    forward = jax.jit(value)
    both = jax.jit(jax.value_and_grad(value))
    return (
        lambda: jax.block_until_ready(forward(e, labels)),
        lambda: jax.block_until_ready(both(e, labels)),
    )


def measure(args):
    """`{batch: {"compile": {...}, "medians": {...}}}` on this backend."""
    from bench_losses import interleaved_medians

    results = {}
    for batch in args.batches:
        steps, compile_seconds = _steps(batch, args.dim, args.block_size)
        named = {f"{layout}/{part}": step for (layout, part), step in steps.items()}
        for step in named.values():
            step()  # warm up
        results[batch] = {
            "compile": compile_seconds,
            "medians": interleaved_medians(named, args.rounds),
        }
    return results


def _table(title, results):
    lines = [
        f"### {title}",
        "",
        "| B | layout | compile | forward | forward + backward | backward (difference) |",
        "|---|---|---|---|---|---|",
    ]
    for batch, result in results.items():
        medians = result["medians"]
        for layout in LAYOUTS:
            forward = medians[f"{layout}/forward"]
            both = medians[f"{layout}/both"]
            lines.append(
                f"| {batch} | {layout} | {result['compile'][layout]:.1f} s "
                f"| {forward * 1e3:.1f} ms | {both * 1e3:.1f} ms "
                f"| {(both - forward) * 1e3:.1f} ms |"
            )
        ratio = medians["cyclic/both"] / medians["unrolled/both"]
        lines.append(f"| {batch} | cyclic / unrolled | | | {ratio:.3f} | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jax", action="store_true", help="also under jax.jit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from bench_losses import _limit_threads

    _limit_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args)))
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(
        f"D={args.dim}, blocks of up to {args.block_size} rows, medians of "
        f"{args.rounds} interleaved rounds; compile: the first value-and-gradient call."
    )
    print()
    print(_table("TensorFlow, XLA (jit_compile=True)", measure(args)))
    if args.jax:
        command = [sys.executable, os.path.abspath(__file__), "--child", *sys.argv[1:]]
        command.remove("--jax")
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(out.stderr)
        results = json.loads(out.stdout.strip().splitlines()[-1])
        print()
        print(_table("JAX, jax.jit", results))


if __name__ == "__main__":
    main()
