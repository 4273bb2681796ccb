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
"""

import keras
from keras import ops


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
    same = ops.equal(ops.expand_dims(labels[start:stop], 1), labels[None, start:])
    rows = ops.shape(same)[0]
    columns = ops.shape(same)[1]
    not_self = ops.not_equal(
        ops.expand_dims(ops.arange(rows, dtype="int32"), 1),
        ops.expand_dims(ops.arange(columns, dtype="int32"), 0),
    )
    return ops.logical_and(same, not_self), ops.logical_not(same)


class Panels:
    """The upper-triangle row panels of `S = E E^T` and the passes over them.

    Args:
        e: L2-normalised embeddings `(batch_size, dim)`, no gradient.
        labels: Integer labels `(batch_size,)`.
        logits_fn: Maps similarities to a `kernels.PairLogitValues`.
        block_size: Rows per panel, or `None` for one panel holding all of
            `S`. With a batch size unknown until run time, `DYNAMIC_PANELS`
            panels of equal height.
    """

    def __init__(self, e, labels, logits_fn, block_size):
        self.e, self.labels, self.logits_fn = e, labels, logits_fn
        self.spans = _spans(e.shape[0], block_size, ops.shape(e)[0])
        self.panels = [
            ops.matmul(e[start:stop], ops.transpose(e[start:]))
            for start, stop, _ in self.spans
        ]

    def _panel(self, start, stop, panel, after):
        """`(s, positive, negative, zero)` of a panel, all waiting for `after`.

        `zero` (see `_zero`) is for the per-anchor vectors the panel uses.
        """
        zero = _zero(after)
        labels = _ordered(self.labels + ops.cast(zero, self.labels.dtype), after)
        positive, negative = _masks(labels, start, stop)
        return _ordered(panel, after), positive, negative, ops.cast(zero, panel.dtype)

    def _pass(self, per_panel, combine, fill):
        """Per-anchor `(p, n)` vectors from `per_panel` over every panel, in order.

        `per_panel(start, stop, s, positive, negative, right, zero)` (see
        `_panel`) returns, for
        each of the two sets, `(row_values, column_values)`: reductions along
        the panel's rows (its anchors) and, if `right`, along all its columns
        (else `None`). Of the column values only those right of the diagonal
        block count (the anchors after the panel): reducing whole columns and
        dropping the rest costs less than slicing the panel. The values are
        placed at their anchors (`fill` elsewhere) and combined over panels
        with `combine`.
        """
        totals, after = None, None
        for (start, stop, right), panel in zip(self.spans, self.panels, strict=True):
            s, positive, negative, zero = self._panel(start, stop, panel, after)
            parts = []
            for row, column in per_panel(
                start, stop, s, positive, negative, right, zero
            ):
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

    def forward(self):
        """Per-anchor `(losses, valid)`; keeps what `backward` needs."""
        neg_inf = float("-inf")

        def maxima(start, stop, s, positive, negative, right, zero):
            logit_p, logit_n = self.logits_fn(s)
            out = []
            for logits, mask in ((logit_p, positive), (logit_n, negative)):
                masked = ops.where(mask, logits, neg_inf)
                column = ops.max(masked, axis=0) if right else None
                out.append((ops.max(masked, axis=1), column))
            return out

        max_p, max_n = self._pass(maxima, ops.maximum, neg_inf)
        # Rows without entries of a set: any finite shift (their sum is 0).
        self.shift_p = ops.where(ops.isfinite(max_p), max_p, 0.0)
        self.shift_n = ops.where(ops.isfinite(max_n), max_n, 0.0)

        def sums(start, stop, s, positive, negative, right, zero):
            logit_p, logit_n = self.logits_fn(s)
            out = []
            for logits, mask, shift in (
                (logit_p, positive, self.shift_p),
                (logit_n, negative, self.shift_n),
            ):
                shift = shift + zero
                rows = ops.exp(logits - ops.expand_dims(shift[start:stop], 1))
                column = None
                if right:
                    columns = ops.exp(logits - shift[None, start:])
                    column = ops.sum(ops.where(mask, columns, 0.0), axis=0)
                out.append((ops.sum(ops.where(mask, rows, 0.0), axis=1), column))
            return out

        self.sum_p, self.sum_n = self._pass(sums, ops.add, 0.0)
        valid = ops.logical_and(self.sum_p > 0, self.sum_n > 0)
        ones = ops.ones_like(self.sum_p)
        inner = ops.where(
            valid,
            self.shift_p
            + ops.log(ops.where(valid, self.sum_p, ones))
            + self.shift_n
            + ops.log(ops.where(valid, self.sum_n, ones)),
            0.0,
        )
        # Z = 1 - exp(-L) = sigmoid(LSE_p + LSE_n) (Eq. 9/10), 0 if invalid.
        self.z = ops.where(valid, ops.sigmoid(inner), 0.0)
        return ops.where(valid, ops.softplus(inner), 0.0), valid

    def backward(self, g):
        """`dE = K E` for upstream gradients `g` of the per-anchor losses."""
        scale_p = g * self.z / ops.where(self.sum_p > 0, self.sum_p, 1.0)
        scale_n = g * self.z / ops.where(self.sum_n > 0, self.sum_n, 1.0)
        e = self.e
        rows_grad, later, after = [], {}, None
        for index, ((start, stop, right), panel) in enumerate(
            zip(self.spans, self.panels, strict=True)
        ):
            s, positive, negative, zero = self._panel(start, stop, panel, after)
            values = self.logits_fn(s)
            k = None
            for logits, slope, scale, shift, mask in zip(
                values,
                values.slopes(),
                (scale_p, scale_n),
                (self.shift_p, self.shift_n),
                (positive, negative),
                strict=True,
            ):
                # One set after the other: fewer panel-sized temporaries.
                logits = _ordered(logits, k)
                scale, shift = scale + zero, shift + zero
                term = ops.expand_dims(scale[start:stop], 1) * ops.exp(
                    logits - ops.expand_dims(shift[start:stop], 1)
                )
                term = term + scale[None, start:] * ops.exp(
                    logits - shift[None, start:]
                )
                k = ops.where(mask, slope * term, 0.0 if k is None else k)
            grad = ops.matmul(k, e[start:])
            if index in later:
                grad = grad + later.pop(index)
            if right:
                # The same entries as K[j, i], for the anchors after the panel
                # (the diagonal block's rows of K^T E_b are dropped).
                tail = ops.einsum("ij,ik->jk", k, e[start:stop])[stop - start :]
                for after_index in range(index + 1, len(self.spans)):
                    lo, hi, _ = self.spans[after_index]
                    piece = tail[lo - stop : None if hi is None else hi - stop]
                    previous = later.get(after_index)
                    later[after_index] = piece if previous is None else previous + piece
            rows_grad.append(grad)
            after = grad
        return rows_grad[0] if len(rows_grad) == 1 else ops.concatenate(rows_grad, 0)
