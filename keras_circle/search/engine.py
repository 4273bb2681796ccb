"""The exact search engine: input checks, normalisation, blockwise top-k on faiss.

`neighbours` is the exact top-k that `keras_circle.retrieval` ranks with.
Ties: scores are faiss's float32 inner products; among equal scores the lower
reference position ranks first (the top-k is searched one place deeper, and a
row whose k-th score is tied with the next one is re-ranked exactly with
NumPy). Scores that differ only by float rounding (about 1e-7) may rank in
either order.
"""

import os

import faiss
import numpy as np

from keras_circle import _checks

# Queries per faiss call when the caller does not say: faiss's own BLAS tile
# is 4096 queries x 1024 gallery rows, so bigger calls gain nothing.
DEFAULT_BLOCK_SIZE = 4096
# Exact re-ranking of tied rows holds at most this many bytes of scores.
_MEMORY_BUDGET = 256 * 2**20
_threads_set = False


def set_num_threads(num_threads=None):
    """Sets faiss's OpenMP threads.

    Args:
        num_threads: threads, or `None` for `OMP_NUM_THREADS` when set, else
            the CPUs this process may run on (`os.sched_getaffinity`), not
            the machine's count: a container limited to 2 of 64 cores would
            otherwise run 64 threads on 2. Defaults to `None`.
    """
    global _threads_set
    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            num_threads = int(env)
        elif hasattr(os, "sched_getaffinity"):
            num_threads = len(os.sched_getaffinity(0))
        else:
            num_threads = os.cpu_count() or 1
    _checks.check_integer(num_threads, "num_threads")
    faiss.omp_set_num_threads(int(num_threads))
    _threads_set = True


def ensure_threads():
    """Calls `set_num_threads()` once, unless it was called already."""
    if not _threads_set:
        set_num_threads()


def check_matrix(x, name, *, min_rows=1, dim=None):
    """A finite real 2-D NumPy array `(rows, dim)`, else a ValueError naming `name`.

    Integers become float64; floats keep their dtype (float64 values beyond
    float32's range are fine: `normalize_rows` rescales rows first).
    """
    if x is None:
        raise ValueError(f"`{name}` is required; got None.")
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D `(num_samples, dim)`; got shape {x.shape}."
        )
    if x.shape[0] < min_rows or x.shape[1] == 0:
        raise ValueError(
            f"`{name}` must have at least {min_rows} row(s) and one column; "
            f"got shape {x.shape}."
        )
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"`{name}` must have dim {dim} (the index's); got shape {x.shape}."
        )
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"`{name}` must be real numbers; got dtype {x.dtype}.")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ValueError(
            f"`{name}` must be finite; got NaN or inf, first in row {bad}."
        )
    return x


def normalize_rows(x):
    """Float32 C-contiguous unit rows of finite `x`; a zero row stays zero.

    Each row is first divided by its largest magnitude, so its squares can
    neither overflow (norms above ~1.8e19 in float32) nor underflow (below
    ~1e-19): scaling a row by any positive factor leaves the result alone.
    """
    scale = np.max(np.abs(x), axis=1, keepdims=True)
    scale[scale == 0] = 1
    y = np.ascontiguousarray(x / scale, dtype=np.float32)
    # Every entry is now in [-1, 1] and one is +-1: the norm is in [1, sqrt(dim)].
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    norms[norms == 0] = 1
    y /= norms
    return y


def _exact_top(queries, reference, k, self_rows):
    """NumPy top-k of unit rows, lower reference index first on ties."""
    scores = queries @ reference.T
    if self_rows is not None:
        scores[np.arange(len(self_rows)), self_rows] = -np.inf
    columns = np.broadcast_to(np.arange(reference.shape[0]), scores.shape)
    order = np.lexsort((columns, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def neighbours(queries, reference, k, *, exclude_self=False, block_size=None):
    """Exact cosine top-k of unit rows, block after block of queries.

    Yields `(start, stop, scores, ids)` for `queries[start:stop]`: float32
    scores `(rows, k)` falling, int64 reference positions, ties to the lower
    position. Memory is bounded by the block (faiss tiles the reference).

    Args:
        queries: float32 unit rows `(num_queries, dim)` (see `normalize_rows`).
        reference: float32 unit rows `(num_reference, dim)`, or the same
            array as `queries` with `exclude_self`.
        k: neighbours per query (clamped to what the reference holds), or an
            int array `(num_queries,)`: each block then gets its largest k.
        exclude_self: query `i` is reference row `i` and is left out of its
            own neighbours (by position, so an exact duplicate elsewhere in
            the reference still counts). Defaults to `False`.
        block_size: queries per faiss call. Defaults to `None`: 4096.
    """
    ensure_threads()
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(reference)
    available = reference.shape[0] - int(exclude_self)
    block_size = block_size or DEFAULT_BLOCK_SIZE
    # About 24 bytes an entry: scores, their negation and the int64 order.
    exact_rows = max(1, _MEMORY_BUDGET // (24 * reference.shape[0]))
    for start in range(0, queries.shape[0], block_size):
        stop = min(start + block_size, queries.shape[0])
        block_k = int(np.max(k[start:stop])) if np.ndim(k) else int(k)
        block_k = min(block_k, available)
        if block_k < 1:
            empty = np.empty((stop - start, 0))
            yield start, stop, empty.astype(np.float32), empty.astype(np.int64)
            continue
        # One place deeper than needed (two with self): shows whether the
        # k-th score is tied with a neighbour faiss may have left out.
        depth = min(block_k + 1 + int(exclude_self), reference.shape[0])
        scores, ids = index.search(queries[start:stop], depth)
        if exclude_self:
            scores[ids == np.arange(start, stop)[:, None]] = -np.inf
        order = np.lexsort((ids, -scores), axis=1)
        kept = min(depth - int(exclude_self), available)
        order = order[:, :kept]
        scores = np.take_along_axis(scores, order, axis=1)
        ids = np.take_along_axis(ids, order, axis=1)
        if kept > block_k:
            tied = np.flatnonzero(scores[:, block_k - 1] == scores[:, block_k])
            for i in range(0, tied.size, exact_rows):
                rows = tied[i : i + exact_rows]
                self_rows = rows + start if exclude_self else None
                scores[rows, :block_k], ids[rows, :block_k] = _exact_top(
                    queries[rows + start], reference, block_k, self_rows
                )
        yield start, stop, scores[:, :block_k], ids[:, :block_k].astype(np.int64)
