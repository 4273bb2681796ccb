"""TensorFlow only: `benchmarks/bench_profile.py`, the attribution of a
step's wall time to kinds of work, against a brute-force reference and on
real profiled steps."""

import pathlib
import sys

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_profile  # noqa: E402

ALL = (*bench_profile.KINDS, "between ops")


def brute_force(window, intervals):
    """Walk the window in unit steps (integer end points) and give each step
    to the first kind running during it."""
    totals = dict.fromkeys(ALL, 0.0)
    for t in range(window[0], window[1]):
        running = {kind for low, high, kind in intervals if low <= t < high}
        busy = [kind for kind in bench_profile.KINDS if kind in running]
        totals[busy[0] if busy else "between ops"] += 1.0
    return totals


interval = st.tuples(
    st.integers(-5, 40), st.integers(0, 20), st.sampled_from(bench_profile.KINDS)
).map(lambda t: (t[0], t[0] + t[1], t[2]))


@settings(max_examples=200, deadline=None)
@given(st.lists(interval, max_size=12), st.integers(0, 10), st.integers(1, 30))
def test_attribute_matches_brute_force(intervals, start, length):
    window = (start, start + length)
    got = bench_profile.attribute(window, intervals)
    assert got == pytest.approx(brute_force(window, intervals))
    assert sum(got.values()) == pytest.approx(length)


def test_attribute_gives_overlap_to_matmul_and_gaps_to_between_ops():
    intervals = [(0, 4, "element-wise"), (2, 6, "matmul"), (7, 8, "data movement")]
    got = bench_profile.attribute((0, 10), intervals)
    assert got == {
        "matmul": 4,
        "element-wise": 2,
        "data movement": 1,
        "between ops": 3,
    }


def test_with_ends_extends_launches_to_their_own_end_events():
    events = [
        (0.0, 0.1, "matmul", "dot.1"),  # launched, finished at 5
        (6.0, 6.1, "matmul", "dot.1"),  # launched again, finished at 9
        (1.0, 2.0, "element-wise", "fusion.2"),  # ran in place; its end
        (3.0, 3.5, "element-wise", "fusion.2"),  # markers mean nothing more
        (4.0, 4.2, "data movement", "copy"),  # no end event at all
    ]
    finished = {"dot.1": [9.0, 5.0], "fusion.2": [2.0, 3.5], "other": [4.1]}
    got = sorted(bench_profile.with_ends(events, finished))
    assert got == [
        (0.0, 5.0, "matmul", "dot"),
        (1.0, 2.0, "element-wise", "fusion"),
        (3.0, 3.5, "element-wise", "fusion"),
        (4.0, 4.2, "data movement", "copy"),
        (6.0, 9.0, "matmul", "dot"),
    ]


def test_with_ends_never_reaches_past_the_next_run_of_a_name():
    # The first run has no end event of its own: the second run's must not
    # stretch it over the gap between them.
    events = [(0.0, 1.0, "element-wise", "f"), (5.0, 6.0, "element-wise", "f")]
    got = sorted(bench_profile.with_ends(events, {"f": [7.0]}))
    assert got == [(0.0, 1.0, "element-wise", "f"), (5.0, 7.0, "element-wise", "f")]


@pytest.mark.parametrize(
    "opcodes, targets, kind",
    [
        (["fusion", "parameter", "dot", "reduce", "add"], [], "matmul"),
        (["custom-call"], ["__onednn$matmul"], "matmul"),
        (["fusion", "parameter", "reduce", "maximum"], [], "element-wise"),
        (["fusion", "parameter", "exponential", "subtract"], [], "element-wise"),
        (
            ["fusion", "parameter", "bitcast", "dynamic-update-slice"],
            [],
            "data movement",
        ),
        (["copy"], [], "data movement"),
    ],
)
def test_hlo_kind(opcodes, targets, kind):
    assert bench_profile.hlo_kind(opcodes, targets) == kind


@pytest.mark.parametrize(
    "op_type, kind",
    [
        ("_MklMatMul", "matmul"),
        ("BatchMatMulV2", "matmul"),
        ("_MklEinsum", "matmul"),
        ("_MklTranspose", "data movement"),
        ("ConcatV2", "data movement"),
        ("Mul", "element-wise"),
        ("Sum", "element-wise"),
        ("StatefulPartitionedCall", None),
        ("_XlaRun", None),
    ],
)
def test_tf_kind(op_type, kind):
    assert bench_profile.tf_kind(op_type) == kind


def test_module_kinds_reads_fusion_bodies_and_skips_loops():
    from tensorflow.compiler.xla.service import hlo_pb2

    module = hlo_pb2.HloModuleProto()
    body = module.computations.add(id=1, name="fused_dot")
    body.instructions.add(name="p", opcode="parameter")
    body.instructions.add(name="d", opcode="dot")
    offset = module.computations.add(id=4, name="fused_slice")
    offset.instructions.add(name="p.1", opcode="parameter").shape.dimensions[:] = [
        64,
        8,
    ]
    offset.instructions.add(name="b", opcode="parameter")
    offset.instructions.add(name="start", opcode="multiply")  # a scalar offset
    offset.instructions.add(name="s", opcode="dynamic-slice").shape.dimensions[:] = [
        8,
        8,
    ]
    scaled = module.computations.add(id=5, name="fused_scale")
    scaled.instructions.add(name="p.2", opcode="parameter").shape.dimensions[:] = [
        64,
        8,
    ]
    scaled.instructions.add(name="x2", opcode="multiply").shape.dimensions[:] = [64, 8]
    loop_body = module.computations.add(id=2, name="loop_body")
    loop_body.instructions.add(name="m.1", opcode="multiply")
    entry = module.computations.add(id=3, name="entry")
    entry.instructions.add(
        name="ynn_fusion.2", opcode="fusion", called_computation_ids=[1]
    )
    entry.instructions.add(name="copy.4", opcode="copy")
    entry.instructions.add(
        name="multiply_dynamic-slice_fusion",
        opcode="fusion",
        called_computation_ids=[4],
    )
    entry.instructions.add(
        name="multiply_fusion", opcode="fusion", called_computation_ids=[5]
    )
    entry.instructions.add(name="while.1", opcode="while", called_computation_ids=[2])
    kinds = bench_profile.module_kinds(module)
    assert kinds["ynn_fusion.2"] == "matmul"
    assert kinds["copy.4"] == "data movement"
    assert kinds["multiply_dynamic-slice_fusion"] == "data movement"
    assert kinds["multiply_fusion"] == "element-wise"
    assert kinds["m.1"] == "element-wise"
    assert "while.1" not in kinds


@pytest.mark.parametrize("xla", [False, True])
def test_profile_of_real_steps_covers_each_step(xla):
    rng = np.random.default_rng(0)
    a = tf.Variable(rng.normal(size=(1024, 512)).astype("float32"))

    @tf.function(jit_compile=xla)
    def matmul():
        # The floor's step: XLA runs some of these dots asynchronously, so
        # their launch events alone would leave most of the step unexplained.
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(tf.matmul(a, a, transpose_b=True))
        return tape.gradient(value, a)

    @tf.function(jit_compile=xla)
    def elementwise():
        return tf.reduce_sum(tf.exp(tf.tile(a, [4, 1]) * 0.5))

    sides = {
        "matmul": lambda: matmul().numpy(),
        "elementwise": lambda: elementwise().numpy(),
    }
    for side in sides.values():
        side()
    results, names = bench_profile.profile(sides, rounds=3)
    for side, figures in results.items():
        assert sum(figures[k] for k in ALL) == pytest.approx(figures["step"], rel=1e-6)
        assert names[side]
    assert results["matmul"]["matmul"] > 0.7 * results["matmul"]["step"]
    assert results["elementwise"]["matmul"] == 0
    assert results["elementwise"]["element-wise"] > 0.3 * results["elementwise"]["step"]
