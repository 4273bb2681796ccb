"""TensorFlow under XLA: the symmetric kernel's panels in a cyclic layout, as loops.

`keras_circle.panels` computes the upper triangle of `S = E E^T` in row
panels, unrolled: each panel a computation of its own, with shapes of its own.
Where XLA compiles the whole step that gives it a kernel per panel and stage:
at B=8192, 358 kernels, 11 s to compile, and the compiler's memory stayed in
the process (peak RSS 1.42x the floor's in `benchmarks/bench_losses.py`).
Here a static batch is cut into `count` equal blocks and block `b` is compared
with blocks `b, b + 1, ..., b + count // 2` (modulo `count`): every pair of
blocks once, in panels of one width (two when `count` is even), so each pass
is a loop over one compiled body (peak RSS 0.95x the floor's; 2-3% slower,
compiled 3.5x faster, `benchmarks/bench_layouts.py`). The panels' arithmetic is
`panels.forward_step` and `panels.backward_step`, the same as unrolled.

`cyclic_layout` says where the loops run (TensorFlow steps compiled with XLA);
`forward` and `backward` are those of `keras_circle.panels` for that layout.
"""

from typing import NamedTuple

import keras
from keras import ops

from keras_circle import fusion
from keras_circle import panels


class Cyclic(NamedTuple):
    """`count` row blocks of `rows` rows each (a static batch)."""

    rows: int
    count: int


def cyclic_layout(size, block_size):
    """The `Cyclic` layout of a static batch of `size` rows, or `None` for
    `keras_circle.panels`' unrolled panels.

    The loops only for TensorFlow steps that XLA compiles whole, where they
    were measured. A plain TensorFlow graph runs each unrolled panel's
    element-wise stage as a small XLA cluster between TensorFlow's faster
    matmuls (`keras_circle.fusion`); eager TensorFlow and PyTorch would copy
    the stored panels at every update of a loop; and JAX keeps the unrolled
    panels its GPU figures were taken with (README, "On a GPU") until the
    loops are measured on a GPU. Without a divisor of `size` from
    `block_size` down to half of it (`cyclic_blocks`), unrolled panels too.
    """
    if keras.backend.backend() != "tensorflow" or not fusion.in_xla():
        return None
    return cyclic_blocks(size, block_size)


def cyclic_blocks(size, block_size):
    """The `Cyclic` layout of `size` rows in blocks of at most `block_size`
    rows and at least half that (a divisor of `size`), or `None`: one panel
    will do, the size is unknown until run time, or no such divisor."""
    if size is None or block_size is None or size <= block_size:
        return None
    for rows in range(block_size, (block_size - 1) // 2, -1):
        if size % rows == 0:
            return Cyclic(rows, size // rows)
    return None


def _sweeps(count):
    """`(first, end, blocks)` of each loop: panels `first..end - 1`, each of
    `blocks` blocks (its diagonal block and the `blocks - 1` after it).

    With an even `count`, blocks `b` and `b + count // 2` are each other's
    last block: the panels of the first half take that pair, those of the
    second half stop one block short (a second, narrower loop).
    """
    half = count // 2
    if count % 2:
        return [(0, count, half + 1)]
    return [(0, half, half + 1), (half, count, half)]


def _rows(x, start, size):
    """Rows `start:start + size` of `x`, `start` a tensor."""
    return ops.slice(x, [start] + [0] * (len(x.shape) - 1), [size, *x.shape[1:]])


def _turned(x, rows):
    """`x` rotated up by `rows` rows: what was at `rows` is now at 0."""
    return ops.concatenate([x[rows:], x[:rows]], 0)


def forward(e, labels, logits, layout):
    """`panels.forward` in the `Cyclic` layout: per-anchor `(losses, valid)`
    and the `panels.PanelResiduals`, with a stack of panels per loop.

    The per-anchor vectors (and labels) are carried rotated, so that panel
    `b` finds its anchors at `0:rows` and its columns' anchors after them;
    after `count` panels they are back in place. Embeddings are read from
    `[E; E]`, where the panel's columns are contiguous.
    """
    rows, count = layout
    size = e.shape[0]
    doubled = ops.concatenate([e, e], 0)
    neg_inf = float("-inf")
    turning = [labels] + [ops.full((size,), neg_inf, "float32")] * 2
    turning += [ops.zeros((size,), "float32")] * 4
    stacks = []
    for first, end, blocks in _sweeps(count):
        width = blocks * rows

        def body(b, carry, first=first, width=width, right=blocks > 1):
            stack, labels, *vectors = carry
            start = b * rows
            panel = ops.matmul(
                _rows(doubled, start, rows),
                ops.transpose(_rows(doubled, start, width)),
            )
            stack = ops.slice_update(stack, [b - first, 0, 0], panel[None])
            step = panels.forward_step(labels[:width], logits, 0, rows, right)
            updated = step(panel, *(v[:width] for v in vectors), None)
            vectors = [
                ops.concatenate([u, v[width:]], 0)
                for u, v in zip(updated, vectors, strict=True)
            ]
            return [stack] + [_turned(v, rows) for v in [labels, *vectors]]

        stack = ops.zeros((end - first, rows, width), "float32")
        stack, *turning = ops.fori_loop(first, end, body, [stack, *turning])
        stacks.append(stack)
    _, _, _, sum_p, sum_n, shift_p, shift_n = turning
    losses, valid, z = panels.softplus_losses(shift_p, shift_n, sum_p, sum_n)
    residuals = panels.PanelResiduals(
        e, labels, layout, stacks, shift_p, shift_n, sum_p, sum_n, z
    )
    return losses, valid, residuals


def backward(residuals, logits, g):
    """`panels.backward` in the `Cyclic` layout: `dE = K E` for upstream
    gradients `g` of the per-anchor losses.

    Panel `b` gives its rows' gradient whole (`K_b` times its columns'
    embeddings), written once; the part of its columns (right of the
    diagonal block, `K_right^T E_b`) is added into a `[2B, dim]` buffer at
    the columns' places in `[E; E]`, whose halves are summed at the end.
    """
    e, labels, layout, stacks, shift_p, shift_n = residuals[:6]
    vectors = (*panels.anchor_scales(residuals, g), shift_p, shift_n)
    rows, count = layout
    size, dim = e.shape
    doubled = ops.concatenate([e, e], 0)
    grad_rows = ops.zeros((size, dim), "float32")
    grad_columns = ops.zeros((2 * size, dim), "float32")
    turning = [labels, *vectors]
    for (first, end, blocks), stack in zip(_sweeps(count), stacks, strict=True):
        width = blocks * rows

        def body(b, carry, first=first, width=width, right=blocks > 1, stack=stack):
            grad_rows, grad_columns, labels, *vectors = carry
            start = b * rows
            e_rows = _rows(doubled, start, rows)
            step = panels.backward_step(labels[:width], logits, 0, rows, right)
            k, k_right, _ = step(
                _rows(stack, b - first, 1)[0], *(v[:width] for v in vectors), None
            )
            grad = ops.matmul(k, e_rows)
            if right:
                at, tail = start + rows, width - rows
                grad = grad + ops.matmul(k_right, _rows(doubled, at, tail))
                columns = ops.einsum("ij,ik->jk", k_right, e_rows)
                grad_columns = ops.slice_update(
                    grad_columns, [at, 0], _rows(grad_columns, at, tail) + columns
                )
            grad_rows = ops.slice_update(grad_rows, [start, 0], grad)
            turned = [_turned(v, rows) for v in [labels, *vectors]]
            return [grad_rows, grad_columns, *turned]

        grad_rows, grad_columns, *turning = ops.fori_loop(
            first, end, body, [grad_rows, grad_columns, *turning]
        )
    return grad_rows + grad_columns[:size] + grad_columns[size:]
