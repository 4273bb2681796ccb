"""The symmetric case of the fused pair-wise kernel: anchors = references.

`S = E E^T` is symmetric and so are the pair masks (label equality), so the
kernel computes only the upper triangle of `S`, as row panels: panel `b` is
`S[rows_b, start_b:] = E_b E[start_b:]^T`, its diagonal block included whole.
Each entry of a panel serves two anchors, its row `i` and its column `j`:

1. Row maxima of the masked logits (per row `i`: over its positives and over
   its negatives), reduced along the panel's rows and, for the part right of
   the diagonal block, along its columns.
2. The sums `sum_j exp(logit_ij - M_i)`, again along rows and columns.
3. Backward: `K_ij = dL/ds_ij + dL/ds_ji = slope_ij * (a_i exp(l_ij - M_i) +
   a_j exp(l_ij - M_j))` with `a_i = g_i * Z_i / sum_i` (Eq. 9/10), which is
   symmetric, so `dE = K E` takes each panel once for its rows
   (`K_b E[start_b:]`) and once, transposed, for the rows right of it.

Only the panels (half of `S`) and per-anchor vectors are kept between the
passes; no `(batch, batch)` matrix is ever formed. The panels of each pass
run one after the other (control dependencies in a TensorFlow graph, data
dependencies that XLA keeps, see `_zero`) so that the elementwise temporaries
of one panel exist at a time.

`forward` returns the losses and the `PanelResiduals` (the panels and the
per-anchor shifts, sums and `Z`); `backward` takes them (a custom VJP).
"""

from typing import NamedTuple

import keras
from keras import ops

from keras_circle import similarity


def _ordered(value, after):
    """`value`, computed only after `after` in a TensorFlow graph (else as is)."""
    if after is None or keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    with tf.control_dependencies(tf.nest.flatten(after)):
        return tf.identity(value)


def _zero(after):
    """A scalar int 0 that XLA cannot see is 0, computed from `after`.

    XLA drops control dependencies. Adding this zero to the small inputs of a
    panel's computations (labels, per-anchor shifts and scales) makes every
    fused computation of the panel wait for the previous panel, so that XLA's
    schedule keeps one panel's temporaries at a time. Costs a scalar and a few
    vector adds.
    """
    if after is None:
        return 0
    while isinstance(after, (list, tuple)):
        after = after[0]
    # At most one element (none from an empty panel of a run-time batch).
    first = ops.reshape(after, (-1,))[:1]
    return ops.sum(ops.cast(ops.isnan(first), "int32"))


# Panels when the batch size is only known at run time (a `fit` batch
# dimension of `None`): this many, with bounds computed in the graph.
DYNAMIC_PANELS = 8


def _spans(n, block_size, size):
    """`(start, stop, right)` of each panel: its rows and whether it has columns
    right of its diagonal block. `stop` is `None` for the last panel.

    Python ints when the batch size `n` is static, tensors computed from the
    run-time `size` when it is not.
    """
    if block_size is None or (n is not None and n <= block_size):
        return [(0, None, False)]
    if n is not None:
        starts = range(0, n, block_size)
        return [(i, i + block_size, True) for i in starts[:-1]] + [
            (starts[-1], None, False)
        ]
    step = (size + DYNAMIC_PANELS - 1) // DYNAMIC_PANELS
    bounds = [ops.minimum(k * step, size) for k in range(DYNAMIC_PANELS)]
    return [(lo, hi, True) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)] + [
        (bounds[-1], None, False)
    ]


def _masks(labels, start, stop):
    """`(positive, negative)` of panel rows `start:stop` against `start:`."""
    rows = labels[start:stop]
    self_index = ops.arange(ops.shape(rows)[0], dtype="int32")
    return similarity.pair_masks(rows, labels[start:], self_index)


class PanelResiduals(NamedTuple):
    """What `backward` needs from `forward`.

    `spans` and `panels` are the row panels of `S` (see `_spans`); the other
    fields are per-anchor `(batch_size,)` vectors: the shifts and sums of each
    masked set's exponentials (`LSE = shift + log(sum)`) and `Z` (Eq. 9/10).
    """

    e: object
    labels: object
    spans: list
    panels: list
    shift_p: object
    shift_n: object
    sum_p: object
    sum_n: object
    z: object


def _panel(labels, start, stop, panel, after):
    """`(s, positive, negative, zero)` of a panel, all waiting for `after`.

    `zero` (see `_zero`) is for the per-anchor vectors the panel uses.
    """
    zero = _zero(after)
    labels = _ordered(labels + ops.cast(zero, labels.dtype), after)
    positive, negative = _masks(labels, start, stop)
    return _ordered(panel, after), positive, negative, ops.cast(zero, panel.dtype)


def _pass(labels, spans, panels, per_panel, combine, fill):
    """Per-anchor `(p, n)` vectors from `per_panel` over every panel, in order.

    `per_panel(start, stop, s, positive, negative, right, zero)` (see
    `_panel`) returns, for each of the two sets, `(row_values,
    column_values)`: reductions along the panel's rows (its anchors) and, if
    `right`, along all its columns (else `None`). Of the column values only
    those right of the diagonal block count (the anchors after the panel):
    reducing whole columns and dropping the rest costs less than slicing the
    panel. The values are placed at their anchors (`fill` elsewhere) and
    combined over panels with `combine`.
    """
    totals, after = None, None
    for (start, stop, right), panel in zip(spans, panels, strict=True):
        s, positive, negative, zero = _panel(labels, start, stop, panel, after)
        parts = []
        for row, column in per_panel(start, stop, s, positive, negative, right, zero):
            if right:
                row = ops.concatenate([row, column[stop - start :]], 0)
            parts.append(ops.pad(row, [(start, 0)], constant_values=fill))
        totals = (
            parts
            if totals is None
            else [combine(t, p) for t, p in zip(totals, parts, strict=True)]
        )
        after = totals
    return totals


def forward(e, labels, logits, block_size):
    """Per-anchor `(losses, valid)` of `S = E E^T`, and the `PanelResiduals`.

    Args:
        e: L2-normalised embeddings `(batch_size, dim)`, no gradient.
        labels: Integer labels `(batch_size,)`.
        logits: A `keras_circle.kernels.PairLogits`.
        block_size: Rows per panel, or `None` for one panel holding all of
            `S`. With a batch size unknown until run time, `DYNAMIC_PANELS`
            panels of equal height.
    """
    spans = _spans(e.shape[0], block_size, ops.shape(e)[0])
    panels = [
        ops.matmul(e[start:stop], ops.transpose(e[start:])) for start, stop, _ in spans
    ]
    neg_inf = float("-inf")

    def maxima(start, stop, s, positive, negative, right, zero):
        logit_p, logit_n = logits.values(s)
        out = []
        for values, mask in ((logit_p, positive), (logit_n, negative)):
            masked = ops.where(mask, values, neg_inf)
            column = ops.max(masked, axis=0) if right else None
            out.append((ops.max(masked, axis=1), column))
        return out

    max_p, max_n = _pass(labels, spans, panels, maxima, ops.maximum, neg_inf)
    # Rows without entries of a set: any finite shift (their sum is 0).
    shift_p = ops.where(ops.isfinite(max_p), max_p, 0.0)
    shift_n = ops.where(ops.isfinite(max_n), max_n, 0.0)

    def sums(start, stop, s, positive, negative, right, zero):
        logit_p, logit_n = logits.values(s)
        out = []
        for values, mask, shift in (
            (logit_p, positive, shift_p),
            (logit_n, negative, shift_n),
        ):
            shift = shift + zero
            rows = ops.exp(values - ops.expand_dims(shift[start:stop], 1))
            column = None
            if right:
                columns = ops.exp(values - shift[None, start:])
                column = ops.sum(ops.where(mask, columns, 0.0), axis=0)
            out.append((ops.sum(ops.where(mask, rows, 0.0), axis=1), column))
        return out

    sum_p, sum_n = _pass(labels, spans, panels, sums, ops.add, 0.0)
    valid = ops.logical_and(sum_p > 0, sum_n > 0)
    ones = ops.ones_like(sum_p)
    losses, z = similarity.pair_softplus(
        shift_p + ops.log(ops.where(valid, sum_p, ones)),
        shift_n + ops.log(ops.where(valid, sum_n, ones)),
        valid,
    )
    residuals = PanelResiduals(
        e, labels, spans, panels, shift_p, shift_n, sum_p, sum_n, z
    )
    return losses, valid, residuals


def backward(residuals, logits, g):
    """`dE = K E` for upstream gradients `g` of the per-anchor losses."""
    e, labels, spans, panels, shift_p, shift_n, sum_p, sum_n, z = residuals
    scale_p = g * z / ops.where(sum_p > 0, sum_p, 1.0)
    scale_n = g * z / ops.where(sum_n > 0, sum_n, 1.0)
    rows_grad, later, after = [], {}, None
    for index, ((start, stop, right), panel) in enumerate(
        zip(spans, panels, strict=True)
    ):
        s, positive, negative, zero = _panel(labels, start, stop, panel, after)
        values, slopes = logits.values_and_slopes(s)
        k = None
        for value, slope, scale, shift, mask in zip(
            values,
            slopes,
            (scale_p, scale_n),
            (shift_p, shift_n),
            (positive, negative),
            strict=True,
        ):
            # One set after the other: fewer panel-sized temporaries.
            value = _ordered(value, k)
            scale, shift = scale + zero, shift + zero
            term = ops.expand_dims(scale[start:stop], 1) * ops.exp(
                value - ops.expand_dims(shift[start:stop], 1)
            )
            term = term + scale[None, start:] * ops.exp(value - shift[None, start:])
            k = ops.where(mask, slope * term, 0.0 if k is None else k)
        grad = ops.matmul(k, e[start:])
        if index in later:
            grad = grad + later.pop(index)
        if right:
            # The same entries as K[j, i], for the anchors after the panel
            # (the diagonal block's rows of K^T E_b are dropped).
            tail = ops.einsum("ij,ik->jk", k, e[start:stop])[stop - start :]
            for after_index in range(index + 1, len(spans)):
                lo, hi, _ = spans[after_index]
                piece = tail[lo - stop : None if hi is None else hi - stop]
                previous = later.get(after_index)
                later[after_index] = piece if previous is None else previous + piece
        rows_grad.append(grad)
        after = grad
    return rows_grad[0] if len(rows_grad) == 1 else ops.concatenate(rows_grad, 0)
