"""Where a loss step's time goes: matmuls, element-wise work, data movement.

`bench_losses.py` says how long each side's value-and-gradient step takes;
this script says what fills that time. It builds the same steps (the floor
and `CircleLoss` at one batch size, the class-level floor and
`ClassCircleLoss` on `CosineProxies`; each with XLA off and on), runs them in
rounds under TensorFlow's profiler (every side once per round, in a fresh
random order, so that they share the machine's slow phases), and reads the
op events of every thread from the trace. Each instant of a step's wall time
goes to the most expensive kind of work running then:

- matmul: a TensorFlow matmul kernel or an XLA dot;
- element-wise: fused element-wise code and reductions (an XLA instruction or
  fusion body with arithmetic in it, read from the HLO the trace carries; a
  TensorFlow op that computes);
- data movement: copies, slices, concatenations, transposes, updates of a
  slice in place (an XLA fusion that only moves data);
- between ops: no op runs (dispatch, waiting for a thread, the host).

So `matmul` is the wall time during which some matmul ran, and the other
kinds count only what they add beside it. Figures are the mean over
`--rounds` profiled steps, in ms and as a fraction of the floor's step
(TensorFlow's matmuls, XLA off). The profiler adds a little to every step.

    python benchmarks/bench_profile.py --rounds 10 --names --plot docs/bench_profile.png
"""

import argparse
import collections
import glob
import os
import random
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_losses  # noqa: E402

KINDS = ("matmul", "element-wise", "data movement")
PAIR_SIDES = ("floor", "ours")
CLASS_SIDES = ("class_floor", "class_ours")
STEP_EVENT = "bench_profile_step"

# Framework events: they contain op events rather than doing work themselves.
_CONTAINERS = re.compile(
    r"::|^(__inference_|Eager|TFE_|step$|FunctionRun|ThreadpoolListener|"
    r"Memory|ValidateInput|BlockUntilReady|" + STEP_EVENT + ")"
)
_TF_MATMUL = re.compile(r"^_?(Mkl)?(Fused)?(Batch)?MatMul(V2|V3)?$|^_?(Mkl)?Einsum$")
_TF_CALLS = re.compile(r"PartitionedCall|^_?Xla|^__inference|^While$|^If$")
_TF_MOVES = re.compile(
    r"^_?(Mkl)?(Transpose|ConcatV2|Concat|Slice|StridedSlice|Pack|Unpack|"
    r"GatherV2|Identity|Reshape|Tile|Pad|Fill|Const|TensorListSetItem|"
    r"TensorListGetItem|_Recv|_Send)$"
)
# XLA opcodes that only move data, and those whose bodies are events of their own.
_HLO_MOVES = {
    "copy",
    "slice",
    "dynamic-slice",
    "dynamic-update-slice",
    "concatenate",
    "transpose",
    "broadcast",
    "bitcast",
    "reshape",
    "pad",
    "gather",
    "scatter",
    "parameter",
    "constant",
    "tuple",
    "get-tuple-element",
    "copy-start",
    "copy-done",
}
_HLO_CALLS = {"while", "conditional", "call", "async-start", "async-done"}


def hlo_kind(opcodes, custom_call_targets=()):
    """The kind of work of an XLA instruction that runs `opcodes` (its own,
    or every opcode in a fusion's body)."""
    if {"dot", "convolution"} & set(opcodes) or any(
        "matmul" in target.lower() for target in custom_call_targets
    ):
        return "matmul"
    if set(opcodes) - _HLO_MOVES - {"fusion"}:
        return "element-wise"
    return "data movement"


def tf_kind(op_type):
    """The kind of work of a TensorFlow op of type `op_type`, or `None` for
    a call of a function or of an XLA cluster (its ops are events of their
    own)."""
    if _TF_CALLS.search(op_type):
        return None
    if _TF_MATMUL.match(op_type):
        return "matmul"
    return "data movement" if _TF_MOVES.match(op_type) else "element-wise"


def _index_arithmetic(instruction):
    """Whether a fusion's `instruction` is scalar arithmetic, such as the
    offset of a dynamic slice (a fusion that slices at `b * rows` moves data;
    it does not compute)."""
    scalar = not instruction.shape.dimensions and not instruction.shape.tuple_shapes
    return scalar and instruction.opcode not in ("reduce", "reduce-window", "dot")


def module_kinds(module):
    """`{instruction name: kind}` of an `xla.HloModuleProto`: a fusion by the
    opcodes of its body; loops, branches and calls left out."""
    computations = {c.id: c for c in module.computations}

    def body(instruction):
        opcodes, targets = [instruction.opcode], [instruction.custom_call_target]
        for called in instruction.called_computation_ids:
            for inner in computations[called].instructions:
                if _index_arithmetic(inner):
                    continue
                more, more_targets = body(inner)
                opcodes += more
                targets += more_targets
        return opcodes, targets

    kinds = {}
    for computation in module.computations:
        for instruction in computation.instructions:
            if instruction.opcode in _HLO_CALLS:
                continue
            if instruction.opcode == "fusion":
                opcodes, targets = body(instruction)
            else:
                opcodes = [instruction.opcode]
                targets = [instruction.custom_call_target]
            kinds[instruction.name] = hlo_kind(opcodes, [t for t in targets if t])
    return kinds


def attribute(window, intervals):
    """`{kind: seconds}` of the window `(start, end)`: each instant goes to
    the first of `KINDS` among the `(start, end, kind, ...)` intervals
    running then, or to "between ops" when none is."""
    start, end = window
    edges = []
    for low, high, kind, *_ in intervals:
        low, high = max(low, start), min(high, end)
        if low < high:
            edges += [(low, 1, kind), (high, -1, kind)]
    edges.sort(key=lambda edge: (edge[0], edge[1]))
    running = collections.Counter()
    totals = dict.fromkeys((*KINDS, "between ops"), 0.0)
    now = start
    for time, change, kind in edges:
        busy = [k for k in KINDS if running[k] > 0]
        totals[busy[0] if busy else "between ops"] += time - now
        running[kind] += change
        now = time
    totals["between ops"] += end - now
    return totals


def _stat(plane, stats, wanted):
    for stat in stats:
        if plane.stat_metadata[stat.metadata_id].name == wanted:
            field = stat.WhichOneof("value")
            return None if field is None else getattr(stat, field)
    return None


def read_trace(logdir):
    """`(steps, intervals)` of the profile in `logdir`: the
    `(side, start, end)` of each profiled step and every op event as
    `(start, end, kind, name)`, in seconds.
    XLA instructions get their kind from the program's HLO, which the trace
    carries; TensorFlow ops from their type."""
    from tensorflow.compiler.xla.service import hlo_pb2
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    programs = {}
    for plane in space.planes:
        if plane.name == "/host:metadata":
            for program_id, metadata in plane.event_metadata.items():
                proto = _stat(plane, metadata.stats, "Hlo Proto")
                if proto:
                    module = hlo_pb2.HloProto.FromString(proto).hlo_module
                    programs[program_id] = module_kinds(module)
    steps, events, finished = [], [], collections.defaultdict(list)
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                start = line.timestamp_ns * 1e-9 + event.offset_ps * 1e-12
                end = start + event.duration_ps * 1e-12
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith(STEP_EVENT):
                    steps.append((name.split("#")[0].split("/", 1)[1], start, end))
                elif name.startswith("end: "):
                    finished[name[5:]].append(end)
                elif not _CONTAINERS.search(name):
                    program = _stat(plane, event.stats, "program_id")
                    if program in programs:
                        kind = programs[program].get(name)
                    elif ":" in name:  # a TensorFlow op, "name:OpType"
                        kind = tf_kind(name.rsplit(":", 1)[1])
                    else:
                        kind = None
                    if kind is not None:
                        events.append((start, end, kind, name))
    # XLA runs some instructions asynchronously: their event is the launch,
    # and an "end: NAME" event marks when the work finished. Names repeat
    # (loops, other programs): an event takes the first end after its start
    # and before the next event of its name starts, if there is one.
    return steps, with_ends(events, finished)


def with_ends(events, finished):
    """`[(start, end, kind, name)]` of the op `events` (`(start, end, kind,
    full name)`), each extended to its end event in `finished` (`{full name:
    [end times]}`) where it has one; names lose their `.N` suffix."""
    by_name = collections.defaultdict(list)
    for event in sorted(events):
        by_name[event[3]].append(event)
    intervals = []
    for name, runs in by_name.items():
        ends = sorted(finished.get(name, ()))
        next_end = 0
        for i, (start, end, kind, _) in enumerate(runs):
            limit = runs[i + 1][0] if i + 1 < len(runs) else float("inf")
            while next_end < len(ends) and ends[next_end] < start:
                next_end += 1
            if next_end < len(ends) and ends[next_end] <= limit:
                end = max(end, ends[next_end])
                next_end += 1
            intervals.append((start, end, kind, re.sub(r"\.\d+$", "", name)))
    return intervals


def profile(sides, rounds, seed=0):
    """`{side: {kind: mean seconds per step}}` of the step callables
    `sides`, profiled in `rounds` rounds of a random order, and
    `{side: {(kind, op name): mean seconds of op time per step}}`."""
    import tensorflow as tf

    order = list(sides)
    shuffle = random.Random(seed).shuffle
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(rounds):
                shuffle(order)
                for side in order:
                    with tf.profiler.experimental.Trace(f"{STEP_EVENT}/{side}"):
                        sides[side]()
        finally:
            tf.profiler.experimental.stop()
        steps, intervals = read_trace(logdir)
    intervals.sort()
    totals = {side: collections.Counter() for side in sides}
    names = {side: collections.Counter() for side in sides}
    for side, start, end in steps:
        # An op belongs to the step it started in: the end event of the last
        # dot of one step can come a fraction of a millisecond after the step
        # returned, inside the next step's window.
        window = [i for i in intervals if start <= i[0] < end]
        totals[side].update(attribute((start, end), window))
        totals[side]["step"] += end - start
        for low, high, kind, name in window:
            names[side][(kind, name)] += min(high, end) - max(low, start)

    def mean(counter):
        return {key: value / rounds for key, value in counter.items()}

    return (
        {side: mean(t) for side, t in totals.items()},
        {side: mean(n) for side, n in names.items()},
    )


def _steps(args, cases, batch, classes):
    import keras_circle

    step_args = argparse.Namespace(
        batch=batch, dim=args.dim, classes=classes, fraction=0.1
    )
    steps = {}
    for case in cases:
        for xla in (0, 1):
            steps[f"{case}, XLA {'on' if xla else 'off'}"] = bench_losses._tf_step(
                step_args, case, xla, keras_circle
            )
    for step in steps.values():  # compile and warm up
        step()
        step()
    return steps


def _table(title, results, floor):
    base = results[floor]["step"]
    print(f"\n{title} (ms per step; x the floor's step, {floor})")
    columns = ("step", *KINDS, "between ops")
    print("| side | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for side, figures in results.items():
        cells = [f"{figures[c] * 1e3:.1f} ({figures[c] / base:.2f})" for c in columns]
        print(f"| {side} | " + " | ".join(cells) + " |")


def _names(names, top=8):
    """The ops that took the most time of each kind, per side (op time:
    summed over threads, so more than wall time where they overlap)."""
    for side, ops in names.items():
        print(f"  {side}:")
        for kind in KINDS:
            ranked = sorted(
                ((ms, name) for (k, name), ms in ops.items() if k == kind),
                reverse=True,
            )
            listed = ", ".join(f"{name} {ms * 1e3:.1f}" for ms, name in ranked[:top])
            print(f"    {kind} (ms): {listed or '-'}")


def _plot(panels, path):
    from keras_circle.figures import new_axes
    from keras_circle.figures import save_figure

    rows = [
        (title, side, figures)
        for title, results, floor in panels
        for side, figures in results.items()
    ]
    figure, axes = new_axes(figsize=(7.5, 0.45 * len(rows) + 2.0))
    colors = ("#3b6ea5", "#e0a030", "#8c8c8c", "#d9d9d9")
    floors = {title: results[floor]["step"] for title, results, floor in panels}
    for row, (title, _, figures) in enumerate(rows):
        floor = floors[title]
        left = 0.0
        for kind, color in zip((*KINDS, "between ops"), colors, strict=True):
            width = figures[kind] / floor
            axes.barh(
                row, width, left=left, color=color, label=kind if row == 0 else None
            )
            left += width
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([f"{title}: {side}" for title, side, _ in rows])
    axes.invert_yaxis()
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel("wall time per step / the floor's (XLA off)")
    axes.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize="small"
    )
    save_figure(figure, path)
    print(f"Plot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4096, help="pair-wise batch")
    parser.add_argument("--class-batch", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", help="write a bar chart (PNG) here")
    parser.add_argument(
        "--names", action="store_true", help="list the ops of each kind"
    )
    args = parser.parse_args()

    bench_losses._limit_threads(args.threads)
    bench_losses._tf_setup(args)
    print(f"Machine: {bench_losses._machine()}; D={args.dim}, {args.rounds} rounds.")
    panels = []
    for title, cases, batch, classes in (
        (f"Pair-wise, B={args.batch}", PAIR_SIDES, args.batch, 0),
        (
            f"Class-level, B={args.class_batch}, C={args.classes}",
            CLASS_SIDES,
            args.class_batch,
            args.classes,
        ),
    ):
        results, names = profile(_steps(args, cases, batch, classes), args.rounds)
        floor = f"{cases[0]}, XLA off"
        _table(title, results, floor)
        if args.names:
            _names(names)
        panels.append((title, results, floor))
    if args.plot:
        _plot(panels, args.plot)


if __name__ == "__main__":
    main()
