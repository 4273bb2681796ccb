"""The symmetric case of the fused pair-wise kernel: anchors = references.

`S = E E^T` is symmetric and so are the pair masks (label equality), so the
kernel computes only the upper triangle of `S`, as row panels: panel `b` is
`S[rows_b, start_b:] = E_b E[start_b:]^T`, its diagonal block included whole.
Each entry of a panel serves two anchors, its row `i` and its column `j`, and
is in the same set (positive, negative, or the self-pair) for both, so it
needs one logit `l_ij` (the positive or the negative one) and one
exponential per anchor it serves:

1. Forward, one pass over the panels (an online log-sum-exp, as in
   FlashAttention): a panel's masked row maxima (and, right of the diagonal
   block, column maxima) raise the running maxima `M` of its anchors, their
   running sums are rescaled to the new maxima, and the panel adds
   `exp(l_ij - M_i)` along its rows and `exp(l_ij - M_j)` along its columns.
   The shifts are always the maxima of the entries seen, so sums never
   underflow to 0 (gamma=256 and beyond), and a NaN entry makes its sums NaN
   (XLA's max-reduction skips NaN; the sums do not).
2. Backward: `K_ij = dL/ds_ij + dL/ds_ji = slope_ij * (a_i exp(l_ij - M_i) +
   a_j exp(l_ij - M_j))` with `a_i = g_i * Z_i / sum_i` (Eq. 9/10), which is
   symmetric, so `dE = K E` takes each panel once for its rows
   (`K_b E[start_b:]`) and once, transposed, for the rows right of it.

Only the panels (half of `S`) and per-anchor vectors are kept between the
passes; no `(batch, batch)` matrix is ever formed. The panels of each pass
run one after the other so that the elementwise temporaries of one panel
exist at a time, and the backward pass recomputes its logits (and slices of
`E`) from the stored panels instead of keeping the forward pass's alive.

Two layouts of the panels:

- Unrolled (`_spans`): panel `b` is rows `start_b:stop_b` against columns
  `start_b:`, each panel a computation of its own, ordered by control
  dependencies in a TensorFlow graph and by data dependencies that XLA
  keeps (see `_zero`). For eager runs, PyTorch, JAX, plain TensorFlow graphs
  and batch sizes known only at run time.
- Cyclic (`keras_circle.panel_loops`): where XLA compiles a whole TensorFlow
  step and the batch size is static, `count` equal blocks, block `b` against blocks
  `b..b + count // 2` modulo `count`, so that every panel of a pass has one
  width and each pass is a loop over one compiled body: the unrolled layout
  gave XLA a kernel per panel and stage (358 at B=8192) and the compiler's
  memory stayed in the process.

`forward` returns the losses and the `PanelResiduals` (the panels and the
per-anchor shifts, sums and `Z`); `backward` takes them (a custom VJP).
"""

from typing import NamedTuple

import keras
from keras import ops

from keras_circle import fusion
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


def _compiled(fn, static):
    """`fn` as one XLA cluster in a plain TensorFlow graph (`keras_circle.fusion`),
    with a static batch size only: XLA needs the panels' shapes."""
    return fusion.fuse(fn) if static else fn


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

    `spans` and `panels` are the row panels of `S`: a list of spans (see
    `_spans`) and one tensor per panel, or a `panel_loops.Cyclic` layout and
    one stack of equal panels per loop. The other fields are
    per-anchor `(batch_size,)` vectors: the shifts and sums of each masked
    set's exponentials (`LSE = shift + log(sum)`) and `Z` (Eq. 9/10).
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
    zero = ops.cast(zero, panel.dtype)
    # `+ zero` also on the panel: the forward and backward passes compute
    # the same logits from it, which XLA would otherwise compute once and
    # keep alive in between (two more panel-sized buffers per panel).
    return _ordered(panel, after) + zero, positive, negative, zero


def _reduced(row, column, start, fill):
    """Row reductions of a panel (and the column reductions of the anchors
    after it, `column`, or `None`) placed at their anchors, `fill` elsewhere."""
    if column is not None:
        row = ops.concatenate([row, column], 0)
    return ops.pad(row, [(start, 0)], constant_values=fill)


def _selected(positive, values_p, values_n):
    """`values_p` where `positive`, else `values_n` (broadcast to the panel)."""
    return ops.where(positive, values_p, values_n)


def forward_step(labels, logits, start, stop, right):
    """One panel of the online log-sum-exp: the running maxima, sums and shifts
    of the anchors it touches, updated."""

    neg_inf = float("-inf")

    def step(panel, max_p, max_n, sum_p, sum_n, shift_p, shift_n, after):
        s, positive, negative, zero = _panel(labels, start, stop, panel, after)
        logit_p, logit_n = logits.values(s)
        values = _selected(positive, logit_p, logit_n)
        # Column reductions only right of the diagonal block: its own columns
        # are anchors of the panel, served by their rows.
        width = stop - start if right else None
        new_max = []
        for mask, running in ((positive, max_p), (negative, max_n)):
            masked = ops.where(mask, values, neg_inf)
            column = ops.max(masked[:, width:], axis=0) if right else None
            panel_max = _reduced(ops.max(masked, axis=1), column, start, neg_inf)
            new_max.append(ops.maximum(running + zero, panel_max))
        max_p, max_n = new_max
        # Anchors without entries of a set so far: any finite shift (their
        # sum is 0). A shift only grows: the old sums scale by at most 1.
        new_p = ops.where(ops.isfinite(max_p), max_p, 0.0)
        new_n = ops.where(ops.isfinite(max_n), max_n, 0.0)
        sum_p = sum_p * ops.exp(ops.minimum(shift_p - new_p, 0.0))
        sum_n = sum_n * ops.exp(ops.minimum(shift_n - new_n, 0.0))
        shift_p, shift_n = new_p, new_n
        rows = ops.exp(
            values
            - _selected(
                positive,
                ops.expand_dims(shift_p[start:stop], 1),
                ops.expand_dims(shift_n[start:stop], 1),
            )
        )
        columns = None
        if right:
            columns = ops.exp(
                values[:, width:]
                - _selected(
                    positive[:, width:], shift_p[None, stop:], shift_n[None, stop:]
                )
            )
        parts = []
        for mask in (positive, negative):
            column = None
            if right:
                column = ops.sum(ops.where(mask[:, width:], columns, 0.0), axis=0)
            row = ops.sum(ops.where(mask, rows, 0.0), axis=1)
            parts.append(_reduced(row, column, start, 0.0))
        sum_p, sum_n = sum_p + parts[0], sum_n + parts[1]
        return max_p, max_n, sum_p, sum_n, shift_p, shift_n

    return step


def forward(e, labels, logits, block_size):
    """Per-anchor `(losses, valid)` of `S = E E^T`, and the `PanelResiduals`.

    One pass over the panels (an online log-sum-exp): each panel raises the
    running maxima of the anchors it touches, rescales their running sums to
    the new maxima and adds its own exponentials. Each entry is a positive, a
    negative or the self-pair, so it needs one logit and one exponential per
    anchor it serves (its row and, right of the diagonal block, its column).

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
    size = ops.shape(e)[0]
    max_p = max_n = ops.full((size,), neg_inf, "float32")
    sum_p = sum_n = ops.zeros((size,), "float32")
    shift_p = shift_n = ops.zeros((size,), "float32")
    static = e.shape[0] is not None
    after = None
    for (start, stop, right), panel in zip(spans, panels, strict=True):
        step = _compiled(forward_step(labels, logits, start, stop, right), static)
        max_p, max_n, sum_p, sum_n, shift_p, shift_n = step(
            panel, max_p, max_n, sum_p, sum_n, shift_p, shift_n, after
        )
        after = (sum_p, sum_n)
    losses, valid, z = softplus_losses(shift_p, shift_n, sum_p, sum_n)
    residuals = PanelResiduals(
        e, labels, spans, panels, shift_p, shift_n, sum_p, sum_n, z
    )
    return losses, valid, residuals


def softplus_losses(shift_p, shift_n, sum_p, sum_n):
    """Per-anchor `(losses, valid, z)` from the shifts and sums of both sets."""
    valid = ops.logical_and(sum_p > 0, sum_n > 0)
    ones = ops.ones_like(sum_p)
    losses, z = similarity.pair_softplus(
        shift_p + ops.log(ops.where(valid, sum_p, ones)),
        shift_n + ops.log(ops.where(valid, sum_n, ones)),
        valid,
    )
    return losses, valid, z


def anchor_scales(residuals, g):
    """`(a_p, a_n)`: `g * Z / sum` of each set per anchor (0 where the set is
    empty), the factors of `K` (see `backward`) for upstream gradients `g`."""
    z, sum_p, sum_n = residuals.z, residuals.sum_p, residuals.sum_n
    return (
        g * z / ops.where(sum_p > 0, sum_p, 1.0),
        g * z / ops.where(sum_n > 0, sum_n, 1.0),
    )


def backward_step(labels, logits, start, stop, right):
    """`(K_diag, K_right, zero)` of one panel: `K_ij = dL/ds_ij + dL/ds_ji`
    (see `backward`) on its diagonal block and right of it (`None` when the
    panel has no columns right of its diagonal block).

    The two blocks are computed apart, each from its own columns of the
    panel: slicing one `K` would write it out twice (a copy per block).
    """

    def block(s, positive, negative, row, column):
        """`K` of the entries `s`, given the per-anchor `(scale_p, scale_n,
        shift_p, shift_n)` of their rows and of their columns."""
        (logit_p, logit_n), (slope_p, slope_n) = logits.values_and_slopes(s)
        values = _selected(positive, logit_p, logit_n)
        sp_row, sn_row, hp_row, hn_row = row
        sp_col, sn_col, hp_col, hn_col = column
        # Row i and column j of an entry are in the same set (the masks are
        # symmetric): one exponential for each of the two anchors.
        term = _selected(positive, sp_row, sn_row) * ops.exp(
            values - _selected(positive, hp_row, hn_row)
        ) + _selected(positive, sp_col, sn_col) * ops.exp(
            values - _selected(positive, hp_col, hn_col)
        )
        return ops.where(
            ops.logical_or(positive, negative),
            _selected(positive, slope_p, slope_n) * term,
            0.0,
        )

    def step(panel, scale_p, scale_n, shift_p, shift_n, after):
        s, positive, negative, zero = _panel(labels, start, stop, panel, after)
        vectors = [v + zero for v in (scale_p, scale_n, shift_p, shift_n)]
        row = tuple(ops.expand_dims(v[start:stop], 1) for v in vectors)

        def column(lo, hi):
            return tuple(v[None, lo:hi] for v in vectors)

        if not right:
            k = block(s, positive, negative, row, column(start, None))
            return k, None, zero
        width = stop - start
        k_diag, k_right = (
            block(s[:, cols], positive[:, cols], negative[:, cols], row, column(*at))
            for cols, at in (
                (slice(None, width), (start, stop)),
                (slice(width, None), (stop, None)),
            )
        )
        return k_diag, k_right, zero

    return step


def backward(residuals, logits, g):
    """`dE = K E` for upstream gradients `g` of the per-anchor losses."""
    e, labels, spans, panels, shift_p, shift_n, sum_p, sum_n, z = residuals
    scale_p, scale_n = anchor_scales(residuals, g)
    static = e.shape[0] is not None
    # The first panel waits for the upstream gradient (see `_panel`).
    rows_grad, later, after = [], {}, scale_p
    for index, ((start, stop, right), panel) in enumerate(
        zip(spans, panels, strict=True)
    ):
        step = _compiled(backward_step(labels, logits, start, stop, right), static)
        k, k_right, zero = step(panel, scale_p, scale_n, shift_p, shift_n, after)
        # Fresh slices of `e` per panel: shared with the forward pass, XLA
        # would keep every panel's slices alive from one pass to the other.
        e_rows = e[start:stop] + zero
        grad = ops.matmul(k, e_rows)
        if index in later:
            grad = grad + later.pop(index)
        if right:
            grad = grad + ops.matmul(k_right, e[stop:] + zero)
            # The same entries as K[j, i], for the anchors after the panel
            # (the diagonal block is symmetric: counted once, above).
            tail = ops.einsum("ij,ik->jk", k_right, e_rows)
            for after_index in range(index + 1, len(spans)):
                lo, hi, _ = spans[after_index]
                piece = tail[lo - stop : None if hi is None else hi - stop]
                previous = later.get(after_index)
                later[after_index] = piece if previous is None else previous + piece
        rows_grad.append(grad)
        after = grad
    return rows_grad[0] if len(rows_grad) == 1 else ops.concatenate(rows_grad, 0)
