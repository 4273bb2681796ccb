"""Forward+backward time and peak memory of keras_circle losses against the
bare similarity product (the floor) and against peers, in one run.

Times: the sides of a table (floor `sum(E E^T)`, `CircleLoss`,
`keras.losses.Circle` fed L2-normalised embeddings as its documentation asks;
or the class-level floor and losses) run in ONE process, each with XLA on and
off, every step returning the value and the gradient (with the gradient alone
TensorFlow prunes the floor's forward matmul). Each of `--rounds` rounds runs
every variant once, in a fresh random order, and rounds go on until the table
has taken `--min-seconds` (small batches: the machine's slow phases last
seconds); a side's time is the median of its better XLA setting. Ratios taken
this way share the machine's load.
Peak memory (`ru_maxrss`) needs a process per case, as before. Every process
uses `--threads` threads (default 2). pytorch-metric-learning's `CircleLoss`
runs in its own process when torch is importable.

`--before PATH` also times the `keras_circle` found under PATH (for instance
`git archive COMMIT keras_circle | tar -x -C PATH`) as the sides
`ours_before` and `class_ours_before`, in the same process as the working
tree's.

Usage:

```
python benchmarks/bench_losses.py                   # the README figures
python benchmarks/bench_losses.py --plot ratios.png  # and a bar chart of them
python benchmarks/bench_losses.py --quick           # smoke run, small sizes
python benchmarks/bench_losses.py --batches 1024 4096 --before /tmp/before --skip-memory
```
"""

import argparse
import importlib
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIR_CASES = ("floor", "ours", "keras")
CLASS_CASES = ("class_floor", "class_ours", "class_sampled")


def _limit_threads(threads):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"


def _labels(rng, batch, per_class=8):
    # P x K batches as the samplers make them: `per_class` samples per class.
    return rng.permutation(batch) // per_class


def _import_keras_circle(path):
    """The `keras_circle` package under `path`, imported beside the one in use.

    Its modules are kept out of `sys.modules` afterwards, so `import
    keras_circle` keeps meaning the working tree's.
    """

    def ours():
        return {
            k: sys.modules.pop(k)
            for k in list(sys.modules)
            if k == "keras_circle" or k.startswith("keras_circle.")
        }

    saved = ours()
    sys.path.insert(0, os.path.abspath(path))
    try:
        module = importlib.import_module("keras_circle")
        importlib.import_module("keras_circle.losses")
    finally:
        sys.path.remove(os.path.abspath(path))
        ours()
        sys.modules.update(saved)
    return module


def _time(step, repeats, warmup=2):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch_case(args):
    import numpy as np
    import torch
    from pytorch_metric_learning import losses as pml_losses

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    e = torch.tensor(
        rng.normal(size=(args.batch, args.dim)).astype("float32"), requires_grad=True
    )
    labels = torch.tensor(_labels(rng, args.batch))
    loss_fn = pml_losses.CircleLoss(m=0.4, gamma=80)

    def step():
        e.grad = None
        loss_fn(e, labels).backward()

    return _time(step, args.repeats)


def _tf_setup(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    sys.path.insert(0, ROOT)


def _tf_step(args, case, xla, keras_circle):
    """A compiled step returning the loss and its gradient, as numpy.

    The labels are an argument of the step, as in `fit`: a constant would
    let XLA fold every label mask into the program (megabytes of constants
    per panel at B=8192, and compile memory to match).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    e = tf.Variable(rng.normal(size=(args.batch, args.dim)).astype("float32"))
    batch_labels = tf.constant(_labels(rng, args.batch))
    variables = [e]
    if case == "floor":

        def loss_fn(_):
            return tf.reduce_sum(tf.matmul(e, e, transpose_b=True))

    elif case in ("ours", "ours_before"):
        circle = keras_circle.CircleLoss(gamma=80.0, margin=0.4)

        def loss_fn(labels):
            return circle(labels, e)

    elif case == "keras":
        circle = keras.losses.Circle(gamma=80.0, margin=0.4)

        def loss_fn(labels):
            # Its documentation asks for L2-normalised embeddings.
            return circle(labels, tf.math.l2_normalize(e, axis=1))

    else:
        batch_labels = tf.constant(rng.integers(0, args.classes, size=args.batch))
        proxies = keras_circle.CosineProxies(
            args.classes,
            sample_fraction=args.fraction if case == "class_sampled" else None,
        )
        proxies.build((None, args.dim))
        w = proxies.proxies
        variables = [e, w]
        loss = keras_circle.ClassCircleLoss(sampled=case == "class_sampled")
        if case == "class_floor":

            def loss_fn(_):
                return tf.reduce_sum(tf.matmul(e, w, transpose_b=True))

        elif case in ("class_ours", "class_ours_before"):

            def loss_fn(labels):
                return loss(labels, proxies(e))

        else:

            def loss_fn(labels):
                return loss(labels, proxies(e, labels=labels, training=True))

    @tf.function(jit_compile=bool(xla))
    def step(labels):
        with tf.GradientTape() as tape:
            value = loss_fn(labels)
        return value, tape.gradient(value, variables)

    return lambda: tf.nest.map_structure(np.asarray, step(batch_labels))


def _tf_case(args):
    _tf_setup(args)
    import keras_circle

    return _time(_tf_step(args, args.case, args.xla, keras_circle), args.repeats)


def _interleaved(args):
    """`{"case/xla": median seconds}` of every variant, timed in this process."""
    _tf_setup(args)
    import keras_circle

    packages = {"ours": keras_circle}
    if args.before:
        before = _import_keras_circle(args.before)
        packages["ours_before"] = packages["class_ours_before"] = before
    steps = {}
    for case in args.sides.split(","):
        for xla in (0, 1):
            package = packages.get(case, keras_circle)
            steps[f"{case}/{xla}"] = _tf_step(args, case, xla, package)
    for step in steps.values():  # compile and warm up
        step()
        step()
    return interleaved_medians(steps, args.rounds, args.min_seconds)


def interleaved_medians(steps, rounds, min_seconds=0.0):
    """`{name: median seconds}` of the callables `steps`, each run once per
    round in a fresh random order (seeded), so that they share the load.

    At least `rounds` rounds, and more until they span `min_seconds`: the
    machine's slow phases last seconds (`bench_phases.py`), so the few
    seconds of 15 rounds of small steps can fall inside one, where a longer
    span takes its medians over fast and slow stretches alike.
    """
    times = {name: [] for name in steps}
    order = list(steps)
    shuffle = random.Random(0).shuffle
    begin = time.perf_counter()
    done = 0
    while done < rounds or time.perf_counter() - begin < min_seconds:
        done += 1
        shuffle(order)
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _child(args):
    _limit_threads(args.threads)
    if args.sides:
        print(json.dumps(_interleaved(args)))
        return
    seconds = _torch_case(args) if args.case == "pml" else _tf_case(args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def _run_interleaved(sides, batch, args, classes=0):
    """`{(case, xla): {"seconds": median}}` from one process timing `sides`."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--sides", ",".join(sides), "--batch", str(batch), "--dim", str(args.dim),
        "--classes", str(classes), "--fraction", str(args.fraction),
        "--threads", str(args.threads), "--rounds", str(args.rounds),
        "--min-seconds", str(args.min_seconds),
    ]  # fmt: skip
    if args.before:
        command += ["--before", args.before]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        error = {"error": result.stderr.strip().splitlines()[-1:]}
        return {(c, x): error for c in sides for x in (0, 1)}
    medians = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        (name.split("/")[0], int(name.split("/")[1])): {"seconds": seconds}
        for name, seconds in medians.items()
    }


def _run(case, batch, args, xla=0, classes=0, repeats=None):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--case", case, "--batch", str(batch), "--dim", str(args.dim),
        "--classes", str(classes), "--fraction", str(args.fraction),
        "--xla", str(xla), "--threads", str(args.threads),
        "--repeats", str(repeats or args.repeats),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _machine():
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores visible, {platform.python_version()}"


def _has_torch():
    try:
        import pytorch_metric_learning  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _fmt(r, key="seconds"):
    if "error" in r:
        return "error"
    if key == "seconds":
        return f"{r['seconds']:.4f}"
    return f"{r['peak_bytes'] / 2**30:.2f}"


def _best(results, case):
    times = [
        r["seconds"] for (c, _), r in results.items() if c == case and "seconds" in r
    ]
    return min(times) if times else float("nan")


def _table(title, results, floor, peer=None, key="seconds"):
    unit = "s" if key == "seconds" else "GiB peak RSS"
    print(f"\n### {title}\n")
    # Peak memory also against the floor under the same XLA setting (XLA's
    # buffer assignment differs from TensorFlow's allocator).
    same = key == "peak_bytes"
    head = f"| case | XLA | {unit} | / floor (best) |"
    head += " / floor (same XLA) |" if same else ""
    print(head + (" / keras.losses.Circle (best) |" if peer else ""))
    print("|---" * (4 + same + bool(peer)) + "|")
    for (case, xla), r in results.items():
        row = f"| {case} | {'-' if xla is None else ('on' if xla else 'off')} "
        row += f"| {_fmt(r, key)} "
        if "error" in r:
            print(row + f"| {r['error']} |")
            continue
        base = {k: v for k, v in results.items() if k[0] == floor}
        value = r[key]
        floor_value = min(v[key] for v in base.values() if key in v)
        row += f"| {value / floor_value:.2f} "
        if same:
            twin = results.get((floor, xla), {})
            row += f"| {value / twin[key]:.2f} " if key in twin else "| - "
        if peer:
            peer_value = min(
                v[key] for k, v in results.items() if k[0] == peer and key in v
            )
            row += f"| {value / peer_value:.2f} "
        print(row + "|")


def _ratios(results, floor, key):
    """`{case: best value / best floor value}` over XLA on and off."""
    best = {}
    for (case, _), r in results.items():
        if key in r:
            best[case] = min(best.get(case, float("inf")), r[key])
    return {case: value / best[floor] for case, value in best.items() if floor in best}


def _plot(panels, path):
    """Bar charts of the ratios to the floor, one panel per table."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(panels), 4.0), dpi=100)
    FigureCanvasAgg(figure)
    for index, (title, ratios) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        names = list(ratios)
        bars = axes.bar(names, [ratios[n] for n in names], color="#4c72b0")
        for bar, name in zip(bars, names, strict=True):
            if name.endswith("floor"):
                bar.set_color("#999999")
            elif name.endswith("ours"):
                bar.set_color("#dd8452")
        axes.bar_label(bars, fmt="%.2f", fontsize=8)
        axes.axhline(1.0, color="black", linewidth=0.8)
        axes.set_title(title, fontsize=9)
        axes.set_ylabel("ratio to the floor (best of XLA on/off)")
        axes.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, format="png")
    print(f"\nWrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--sides", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100_000)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--xla", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=30.0,
        help="more rounds until a table's timing spans this long",
    )
    parser.add_argument("--repeats", type=int, default=5, help="steps per pml case")
    parser.add_argument("--before", help="also time the keras_circle under PATH")
    parser.add_argument("--skip-memory", action="store_true", help="times only")
    parser.add_argument("--skip-class", action="store_true", help="pair-wise only")
    parser.add_argument("--plot", help="also write the ratios as a bar chart (PNG)")
    args = parser.parse_args()
    if args.case or args.sides:
        return _child(args)
    torch = _has_torch()
    batches, memory_batch, classes = args.batches, 8192, args.classes
    if args.quick:
        batches, memory_batch, classes = (256,), 512, 5000
        args.repeats, args.rounds, args.min_seconds = 2, 3, 0.0
    print(f"Machine: {_machine()}; {args.threads} threads per process.")
    print(
        f"Embedding dim {args.dim}; times: medians of at least {args.rounds} "
        f"interleaved rounds spanning at least {args.min_seconds:g} s in one "
        "process, value and gradient per step."
    )
    sides = list(PAIR_CASES) + (["ours_before"] if args.before else [])
    panels = []
    for batch in batches:
        results = _run_interleaved(sides, batch, args)
        if torch:
            results[("pml", None)] = _run("pml", batch, args)
        _table(f"Pair-wise, B={batch}", results, "floor", "keras")
        panels.append(
            (f"pair-wise time, B={batch}", _ratios(results, "floor", "seconds"))
        )
    if not args.skip_memory:
        cases = [(c, x) for c in PAIR_CASES for x in (0, 1)]
        results = {(c, x): _run(c, memory_batch, args, x, repeats=1) for c, x in cases}
        title = f"Peak memory, B={memory_batch}"
        _table(title, results, "floor", "keras", "peak_bytes")
        ratios = _ratios(results, "floor", "peak_bytes")
        panels.append((f"pair-wise peak RSS, B={memory_batch}", ratios))
    if not args.skip_class:
        class_sides = list(CLASS_CASES) + (["class_ours_before"] if args.before else [])
        results = _run_interleaved(class_sides, 512, args, classes)
        title = f"Class-level, B=512, C={classes}, sampled fraction {args.fraction}"
        _table(title, results, "class_floor")
        if not args.skip_memory:
            cases = [(c, x) for c in CLASS_CASES for x in (0, 1)]
            memory = {(c, x): _run(c, 512, args, x, classes, 1) for c, x in cases}
            _table(title + " (memory)", memory, "class_floor", key="peak_bytes")
        ratios = _ratios(results, "class_floor", "seconds")
        panels.append((f"class-level time, C={classes}", ratios))
    if args.plot:
        _plot(panels, args.plot)


if __name__ == "__main__":
    main()
