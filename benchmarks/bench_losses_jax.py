"""The loss benchmark under the JAX backend: GPUs (or CPUs) without TensorFlow.

The same sides and method as `bench_losses.py` (floor `sum(E E^T)`,
`CircleLoss`, `keras.losses.Circle` fed L2-normalised embeddings; the
class-level floor, `ClassCircleLoss` + `CosineProxies` and Partial FC), with
`KERAS_BACKEND=jax`: every step returns the value and the gradient
(`jax.value_and_grad`, waited for with `block_until_ready`), each side with
XLA on (`jax.jit`: one compiled program) and off (op by op, as JAX runs
un-jitted code: each op its own kernel, no fusion). One process; each of
`--rounds` rounds runs every variant once in a fresh random order; medians.

`ours_p<N>` sides run `CircleLoss` with panels of N rows instead of the
default (`keras_circle.kernels.DEFAULT_BLOCK_SIZE`): whether the panel order
that keeps CPU memory low serialises a GPU.

Matmul precision: `--precision highest` (the default) is true float32 (no
TF32 on NVIDIA GPUs); `--precision tensorfloat32` lets XLA use TF32.

Memory: with XLA on, what XLA's buffer assignment reserves for the compiled
step (temporaries + arguments + outputs); on a GPU also the allocator's peak
of each variant in its own process at `--memory-batch`.

```
KERAS_BACKEND=jax python benchmarks/bench_losses_jax.py --quick
python benchmarks/bench_losses_jax.py --batches 1024 8192 32768 --json out.json
```
"""

import argparse
import contextlib
import functools
import json
import os
import pathlib
import platform
import subprocess
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_losses import interleaved_medians  # noqa: E402

PAIR_SIDES = ("floor", "ours", "keras")
CLASS_SIDES = ("class_floor", "class_ours", "class_sampled")


@contextlib.contextmanager
def _panels(rows):
    """`CircleLoss` with panels of `rows` rows while inside (None: default)."""
    from keras_circle import kernels

    original = kernels.fused_pair_softplus
    if rows is not None:
        kernels.fused_pair_softplus = functools.partial(original, block_size=rows)
    try:
        yield
    finally:
        kernels.fused_pair_softplus = original


def _loss_fn(side, batch, args):
    """`(f, params)`: `f(params)` is the side's scalar loss."""
    import jax.numpy as jnp
    import keras
    import numpy as np

    import keras_circle

    rng = np.random.default_rng(0)
    e = jnp.asarray(rng.normal(size=(batch, args.dim)).astype("float32"))
    if side in PAIR_SIDES or side.startswith("ours_p"):
        labels = jnp.asarray(rng.permutation(batch) // 8)  # P x K, K = 8
        if side == "floor":
            return lambda e: jnp.sum(e @ e.T), e
        if side == "keras":
            circle = keras.losses.Circle(gamma=80.0, margin=0.4)
            # Its documentation asks for L2-normalised embeddings.
            return lambda e: circle(labels, keras.ops.normalize(e, axis=1)), e
        circle = keras_circle.CircleLoss(gamma=80.0, margin=0.4)
        rows = int(side[len("ours_p") :]) if side.startswith("ours_p") else None

        def ours(e):
            with _panels(rows):
                return circle(labels, e)

        return ours, e
    labels = jnp.asarray(rng.integers(0, args.classes, size=batch))
    proxies = keras_circle.CosineProxies(
        args.classes, sample_fraction=args.fraction if side == "class_sampled" else None
    )
    proxies.build((None, args.dim))
    w = proxies.proxies.value
    if side == "class_floor":
        return lambda p: jnp.sum(p[0] @ p[1].T), (e, w)
    loss = keras_circle.ClassCircleLoss(sampled=side == "class_sampled")
    state = [v.value for v in proxies.non_trainable_variables]

    def class_loss(p):
        e, w = p
        kwargs = {"labels": labels, "training": True} if side == "class_sampled" else {}
        cosine, _ = proxies.stateless_call([w], state, e, **kwargs)
        return loss(labels, cosine)

    return class_loss, (e, w)


def _step(side, batch, xla, args):
    import jax

    f, params = _loss_fn(side, batch, args)
    grad = jax.value_and_grad(f)
    if xla:
        grad = jax.jit(grad)

    def step():
        return jax.block_until_ready(grad(params))

    return step, (grad, params)


def _compiled_bytes(grad, params):
    """What XLA reserves for the compiled step, or None where not reported."""
    try:
        stats = grad.lower(params).compile().memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if stats is None:
        return None
    return int(
        stats.temp_size_in_bytes
        + stats.argument_size_in_bytes
        + stats.output_size_in_bytes
    )


def _interleaved(sides, batch, args):
    """`{side: {xla: {"seconds": median, "compiled_bytes": ...}}}`."""
    steps, results = {}, {}
    for side in sides:
        for xla in (1,) if args.xla_only else (1, 0):
            try:
                steps[(side, xla)], compiled = _step(side, batch, xla, args)
                steps[(side, xla)]()  # compile and warm up
                steps[(side, xla)]()
                entry = {}
                if xla:
                    entry["compiled_bytes"] = _compiled_bytes(*compiled)
            except Exception as error:  # noqa: BLE001 - out of memory, say
                steps.pop((side, xla), None)
                entry = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
            results.setdefault(side, {})[xla] = entry
    for (side, xla), seconds in interleaved_medians(steps, args.rounds).items():
        results[side][xla]["seconds"] = seconds
    return results


def _peak_child(args):
    """Allocator peak of one variant, in this fresh process."""
    import jax

    step, _ = _step(args.side, args.batch, args.xla, args)
    step()
    stats = jax.local_devices()[0].memory_stats() or {}
    print(json.dumps({"peak_bytes": stats.get("peak_bytes_in_use")}))


def _peaks(sides, batch, args):
    out = {}
    for side in sides:
        for xla in (1, 0):
            command = [sys.executable, __file__, "--peak-of", side, "--batch", str(batch),
                       "--xla", str(xla), "--dim", str(args.dim),
                       "--precision", args.precision]  # fmt: skip
            # No autotuning: its scratch buffers would count in the peak.
            flags = os.environ.get("XLA_FLAGS", "") + " --xla_gpu_autotune_level=0"
            env = dict(os.environ, XLA_FLAGS=flags.strip())
            run = subprocess.run(command, capture_output=True, text=True, env=env)
            lines = run.stdout.strip().splitlines()
            ok = run.returncode == 0 and lines
            value = json.loads(lines[-1])["peak_bytes"] if ok else None
            out.setdefault(side, {})[xla] = value
    return out


def _ratio_rows(results, floor, peer=None):
    """Markdown rows: time, ratio to the floor's best and to the peer's best."""

    def best(side):
        times = [r["seconds"] for r in results[side].values() if "seconds" in r]
        return min(times) if times else float("nan")

    rows = []
    for side, by_xla in results.items():
        for xla, r in by_xla.items():
            if "error" in r:
                rows.append(f"| {side} | {'on' if xla else 'off'} | {r['error']} |")
                continue
            row = f"| {side} | {'on' if xla else 'off'} | {r['seconds'] * 1e3:.2f} ms "
            row += f"| {r['seconds'] / best(floor):.2f} "
            if peer:
                row += f"| {r['seconds'] / best(peer):.2f} "
            compiled = r.get("compiled_bytes")
            row += f"| {compiled / 2**20:.0f} MiB |" if compiled else "| - |"
            rows.append(row)
    return rows


def _print_table(title, results, floor, peer=None):
    print(f"\n### {title}\n")
    head = "| side | XLA | median | / floor (best) |"
    head += " / keras.losses.Circle (best) |" if peer else ""
    print(head + " XLA buffers |")
    print("|---" * (5 + bool(peer)) + "|")
    print("\n".join(_ratio_rows(results, floor, peer)), flush=True)


def _machine():
    import jax

    device = jax.devices()[0]
    return f"{device.device_kind} ({device.platform}), jax {jax.__version__}, " + (
        f"Python {platform.python_version()}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[1024, 4096, 8192])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100_000)
    parser.add_argument("--class-batch", type=int, default=512)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--panels", type=int, nargs="*", default=[],
                        help="also time CircleLoss with panels of these rows")  # fmt: skip
    parser.add_argument("--precision", default="highest",
                        choices=["highest", "tensorfloat32", "default"])  # fmt: skip
    parser.add_argument("--memory-batch", type=int, default=0,
                        help="allocator peak per variant at this batch (GPU)")  # fmt: skip
    parser.add_argument("--skip-class", action="store_true")
    parser.add_argument("--xla-only", action="store_true", help="skip XLA off")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--xla", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import jax

    jax.config.update("jax_default_matmul_precision", args.precision)
    args.side = args.peak_of
    if args.peak_of:
        return _peak_child(args)
    if args.quick:
        args.batches, args.rounds, args.classes, args.class_batch = [64], 2, 500, 32
        args.dim = 32
    print(f"Machine: {_machine()}; matmul precision {args.precision}.")
    print(f"Embedding dim {args.dim}; medians of {args.rounds} interleaved rounds.")
    report = {"machine": _machine(), "precision": args.precision, "pair": {}}

    def save():  # after every table: a run cut short keeps what it measured
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(report, indent=1))

    sides = list(PAIR_SIDES) + [f"ours_p{rows}" for rows in args.panels]
    for batch in args.batches:
        results = _interleaved(sides, batch, args)
        _print_table(f"Pair-wise, B={batch}", results, "floor", "keras")
        report["pair"][batch] = results
        save()
    if args.memory_batch and jax.devices()[0].platform == "gpu":
        peaks = _peaks(PAIR_SIDES, args.memory_batch, args)
        report["peak_bytes"] = {"batch": args.memory_batch, "sides": peaks}
        print(f"\n### Allocator peak, B={args.memory_batch}\n")
        floor = {x: v for x, v in peaks["floor"].items() if v}
        for side, by_xla in peaks.items():
            for xla, value in by_xla.items():
                if value and floor.get(xla):
                    print(f"| {side} | {'on' if xla else 'off'} | "
                          f"{value / 2**30:.2f} GiB | {value / floor[xla]:.2f} |")  # fmt: skip
        save()
    if not args.skip_class:
        results = _interleaved(CLASS_SIDES, args.class_batch, args)
        title = f"Class-level, B={args.class_batch}, C={args.classes}"
        _print_table(
            f"{title}, sampled fraction {args.fraction}", results, "class_floor"
        )
        report["class"] = results
    save()


if __name__ == "__main__":
    main()
