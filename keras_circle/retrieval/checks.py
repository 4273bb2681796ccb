"""Input checks and the blockwise similarity loop shared by the metrics and plots.

NumPy only. Embeddings become L2-normalised float32 rows (`check_embeddings`);
labels become int64 (`check_labels`).
"""

import math

import numpy as np

from keras_circle import _checks
from keras_circle import console
from keras_circle.search import check_matrix
from keras_circle.search import normalize_rows

# Rows of a block stop at this many even when the memory budget allows more:
# bigger matmuls gain nothing on CPU and the progress bar stays useful.
_MAX_BLOCK_ROWS = 1024
MEMORY_BUDGET = 256 * 2**20
# "auto" verbosity shows a progress bar from this many blocks on.
_AUTO_PROGRESS_BLOCKS = 32


def to_numpy(x, name):
    """A NumPy array of `x` (tensors of any backend too)."""
    if x is None:
        raise ValueError(f"`{name}` is required; got None.")
    if not isinstance(x, np.ndarray) and hasattr(x, "shape"):
        import keras  # Tensors of any backend; lazy so NumPy users skip it.

        x = keras.ops.convert_to_numpy(x)
    return np.asarray(x)


def check_embeddings(x, name, min_rows=1):
    """L2-normalised float32 rows of `x`, else a ValueError naming `name`.

    Each row is scaled by its largest magnitude before its norm is taken,
    so huge (1e30) and tiny (1e-30) rows normalise like any other; NaN and
    inf are rejected before any cast.
    """
    return normalize_rows(check_matrix(to_numpy(x, name), name, min_rows=min_rows))


def check_embedding_pair(queries, reference, queries_name, reference_name):
    """`check_embeddings` of both sets, which must have the same dim."""
    q = check_embeddings(queries, queries_name)
    r = check_embeddings(reference, reference_name)
    if q.shape[1] != r.shape[1]:
        raise ValueError(
            f"`{queries_name}` and `{reference_name}` must have the same dim; "
            f"got {q.shape[1]} and {r.shape[1]}."
        )
    return q, r


def check_labels(x, num, name, expected_name):
    """Integer labels `(num,)` as int64 (whole floats and bools accepted)."""
    x = to_numpy(x, name)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.shape[0] != num:
        raise ValueError(
            f"`{name}` must have shape ({num},), one entry per row of "
            f"`{expected_name}`; got shape {x.shape}."
        )
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
        return x.astype(np.int64)
    if np.issubdtype(x.dtype, np.floating):
        whole = np.isfinite(x) & (x == np.round(x))
        if not np.all(whole):
            bad = int(np.argmin(whole))
            raise ValueError(
                f"`{name}` must hold integers; got {x[bad].item()!r} at index {bad}."
            )
        return x.astype(np.int64)
    raise ValueError(f"`{name}` must hold integers; got dtype {x.dtype}.")


def check_ranks(ks, name):
    """A tuple of positive Python ints from one int or a sequence."""
    values = (ks,) if np.ndim(ks) == 0 else tuple(ks)
    ok = len(values) > 0 and all(
        isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1
        for k in values
    )
    if not ok:
        raise ValueError(f"`{name}` must be positive integers; got {ks!r}.")
    return tuple(int(k) for k in values)


def check_block_size(block_size):
    """`block_size` unchanged when it is None or a positive integer."""
    return _checks.check_integer(
        block_size, "block_size", none="for automatic (queries per block)"
    )


def progress(num_blocks, verbose):
    """A Keras progress bar over blocks, or None."""
    if verbose == "auto":
        verbose = num_blocks >= _AUTO_PROGRESS_BLOCKS
    if not verbose:
        return None
    import keras

    return keras.utils.Progbar(
        num_blocks, unit_name="block", verbose=console.progress_verbosity(1)
    )


def query_blocks(
    queries, gallery, bytes_per_entry, block_size, verbose, exclude_self=False
):
    """Yields `(start, stop, sims)`, sims of `queries[start:stop]` vs gallery.

    `bytes_per_entry` is what the caller spends per similarity entry
    (similarities, indices, masks); it sets the block size from the budget.
    With `exclude_self`, queries are the gallery and the self-pair is -inf.
    """
    num, num_gallery = queries.shape[0], gallery.shape[0]
    if block_size is None:
        block_size = MEMORY_BUDGET // max(1, bytes_per_entry * num_gallery)
        block_size = int(min(max(block_size, 1), _MAX_BLOCK_ROWS))
    num_blocks = math.ceil(num / block_size)
    bar = progress(num_blocks, verbose)
    for i, start in enumerate(range(0, num, block_size)):
        stop = min(start + block_size, num)
        sims = queries[start:stop] @ gallery.T
        if exclude_self:
            sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        yield start, stop, sims
        if bar is not None:
            bar.update(i + 1)
