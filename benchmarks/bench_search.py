"""Search benchmarks: the retrieval metrics against bare faiss, and approximate indexes at scale.

`--ratio N`: `retrieval.recall_at_k` (ks 1, 2, 4, 8) and `map_at_r` on an
N x 128 clustered gallery, timed in one process against a bare faiss
`IndexFlatIP` self-search (k=9, resp. top-R) plus the label comparison (and,
for MAP@R, its sum): `--rounds` rounds, the four sides in a new random order
each round, medians reported.

`--reid Q G`: `retrieval.reid_metrics` on Q queries against a G gallery,
this tree's against an earlier module's (`--old-retrieval`), interleaved
the same way; both must give the same CMC and mAP.

`--scale N`: an N-row, 128-d gallery and `--queries` queries; build and
search time, RSS increase and recall@10 against exact search for exact
faiss, IVF and HNSW `EmbeddingIndex`es and scikit-learn's brute-force
`NearestNeighbors` (cosine). Data not trivially separable: the packaged
Fashion-MNIST subset (10,000 images, 10 classes), projected on its 128
principal components of pixel space, grown to N by adding Gaussian noise of
0.5x the per-dimension spread to randomly drawn rows (classes overlap).
"""

import argparse
import os
import time

import numpy as np


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _clustered(rng, n, dim=128, per_class=20):
    classes = max(1, n // per_class)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    x = centres[labels] + 1.6 * rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels


def _interleaved(sides, rounds, seed=0):
    """Median seconds of each side: every round runs them all, in a random order.

    One process, sides shuffled afresh each round, so drift in the machine's
    load (it is shared) falls on every side alike. Returns `{name: median}`
    and `{name: last result}`.
    """
    rng = np.random.default_rng(seed)
    names = list(sides)
    times = {name: [] for name in names}
    results = {}
    for round_ in range(rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            t = time.perf_counter()
            results[name] = sides[name]()
            times[name].append(time.perf_counter() - t)
        print(
            f"  round {round_ + 1}/{rounds}: "
            + ", ".join(f"{name} {times[name][-1]:.1f} s" for name in names),
            flush=True,
        )
    medians = {name: float(np.median(t)) for name, t in times.items()}
    medians["_times"] = times
    return medians, results


def _round_ratios(times, ours, theirs):
    """Median and range of the per-round ratios (both sides ran in each round)."""
    ratios = np.array(times[ours]) / np.array(times[theirs])
    return (
        f"per-round ratios: median {np.median(ratios):.2f}, "
        f"{ratios.min():.2f} to {ratios.max():.2f}"
    )


def ratio(n, rounds):
    """Our recall_at_k / map_at_r against bare faiss doing the same user step."""
    import faiss

    from keras_circle import retrieval
    from keras_circle import search

    x, labels = _clustered(np.random.default_rng(0), n)
    search.set_num_threads()
    r = np.bincount(labels)[labels] - 1

    def bare_recall():
        u = search.normalize_rows(x)
        index = faiss.IndexFlatIP(u.shape[1])
        index.add(u)
        _, ids = index.search(u, 9)
        # Leave-one-out: a row finds itself first (no duplicates here).
        neighbours = ids[:, 1:]
        hits = labels[neighbours] == labels[:, None]
        return {k: hits[:, :k].any(axis=1).mean() for k in (1, 2, 4, 8)}

    def bare_map():
        u = search.normalize_rows(x)
        index = faiss.IndexFlatIP(u.shape[1])
        index.add(u)
        _, ids = index.search(u, int(r.max()) + 1)
        rel = labels[ids[:, 1:]] == labels[:, None]
        rel &= np.arange(1, ids.shape[1]) <= r[:, None]
        precision = np.cumsum(rel, axis=1) / np.arange(1, ids.shape[1])
        ok = r > 0
        return np.mean((precision * rel).sum(axis=1)[ok] / r[ok])

    sides = {
        "recall_at_k": lambda: retrieval.recall_at_k(x, labels, verbose=0),
        "faiss k=9": bare_recall,
        "map_at_r": lambda: retrieval.map_at_r(x, labels, verbose=0),
        "faiss top-R": bare_map,
    }
    print(f"{n:,} x 128, {rounds} rounds, sides in random order each round:")
    med, res = _interleaved(sides, rounds)
    print(
        f"recall_at_k {n:,}: ours {med['recall_at_k']:.1f} s, bare faiss k=9 "
        f"{med['faiss k=9']:.1f} s (medians), ratio "
        f"{med['recall_at_k'] / med['faiss k=9']:.2f}; recall@1 "
        f"{res['recall_at_k'][1]:.4f} (bare {res['faiss k=9'][1]:.4f}); "
        + _round_ratios(med["_times"], "recall_at_k", "faiss k=9")
    )
    print(
        f"map_at_r {n:,}: ours {med['map_at_r']:.1f} s, bare faiss top-R "
        f"{med['faiss top-R']:.1f} s (medians), ratio "
        f"{med['map_at_r'] / med['faiss top-R']:.2f}; MAP@R {res['map_at_r']:.4f} "
        f"(bare {res['faiss top-R']:.4f}); "
        + _round_ratios(med["_times"], "map_at_r", "faiss top-R"),
        flush=True,
    )


def _reid_data(rng, num_queries, num_gallery, dim=128, per_id=20, cams=6):
    ids = rng.integers(1, max(2, num_gallery // per_id), num_gallery + num_queries)
    centres = rng.standard_normal((int(ids.max()) + 1, dim), dtype=np.float32)
    x = centres[ids] + 1.6 * rng.standard_normal((ids.size, dim), dtype=np.float32)
    c = rng.integers(0, cams, ids.size)
    q, g = slice(0, num_queries), slice(num_queries, None)
    return x[q], ids[q], c[q], x[g], ids[g], c[g]


def reid(num_queries, num_gallery, rounds, old_module):
    """`reid_metrics` of `old_module` (a file path) against the current one."""
    import importlib.util

    from keras_circle import retrieval

    spec = importlib.util.spec_from_file_location("old_retrieval", old_module)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    args = _reid_data(np.random.default_rng(0), num_queries, num_gallery)
    sides = {
        "before": lambda: old.reid_metrics(*args, verbose=0),
        "after": lambda: retrieval.reid_metrics(*args, verbose=0),
    }
    print(
        f"reid_metrics {num_queries:,} queries x {num_gallery:,} gallery, "
        f"{rounds} rounds, random order:"
    )
    med, res = _interleaved(sides, rounds)
    # The earlier module normalises rows its own way: scores differ by float
    # rounding (~1e-7), so a near-tie may swap and move a query's AP a little.
    gaps = [abs(res["before"]["cmc"][k] - res["after"]["cmc"][k]) for k in (1, 5, 10)]
    gaps.append(abs(res["before"]["mAP"] - res["after"]["mAP"]))
    print(f"largest difference before/after (CMC, mAP): {max(gaps):.1e}")
    assert max(gaps) < 1e-3, res
    print(
        f"reid_metrics: before {med['before']:.1f} s, after {med['after']:.1f} s "
        f"(medians), speed-up {med['before'] / med['after']:.2f}x; mAP "
        f"{res['after']['mAP']:.4f}, rank-1 {res['after']['cmc'][1]:.4f}",
        flush=True,
    )


def _fashion_base(dim):
    from keras_circle.data import load_fashion_mnist_subset

    (x_train, _), (x_test, _), _ = load_fashion_mnist_subset()
    pixels = np.concatenate([x_train, x_test]).reshape(-1, 784).astype(np.float32)
    pixels -= pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels, full_matrices=False)
    return pixels @ vt[:dim].T


def _fashion(base, n, rng):
    dim = base.shape[1]
    spread = base.std(axis=0)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        rows = rng.integers(0, len(base), stop - start)
        x[start:stop] = base[rows] + 0.5 * spread * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
    return x


def scale(n, num_queries, kinds, sklearn_queries):
    from keras_circle import search

    rng = np.random.default_rng(0)
    base = _fashion_base(128)
    gallery = _fashion(base, n, rng)
    queries = _fashion(base, num_queries, rng)
    truth = None
    print(
        f"| index | gallery | build (s) | search {num_queries:,} q (s) | RSS increase (MiB) | recall@10 vs exact |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        base = _rss()
        t = time.perf_counter()
        index = search.EmbeddingIndex(
            128, kind=kind, nlist=min(1024, n // 40), nprobe=24
        )
        if kind == "ivf" and n > 100_000:  # trained on 100k rows: 1M takes minutes
            index.add(gallery[:100_000])
            index.add(gallery[100_000:])
        else:
            index.add(gallery)
        build = time.perf_counter() - t
        t = time.perf_counter()
        _, ids = index.search(queries, 10)
        took = time.perf_counter() - t
        if kind == "flat":
            truth = ids
        recall = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]
        )
        print(
            f"| {kind} | {n:,} | {build:.1f} | {took:.1f} | {(_rss() - base) / 2**20:.0f} | {recall:.3f} |",
            flush=True,
        )
        del index
    if sklearn_queries:
        from sklearn.neighbors import NearestNeighbors

        base = _rss()
        t = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(
            gallery
        )
        build = time.perf_counter() - t
        t = time.perf_counter()
        ids = nn.kneighbors(queries[:sklearn_queries], return_distance=False)
        took = time.perf_counter() - t
        recall = np.mean(
            [
                len(set(a) & set(b)) / 10
                for a, b in zip(ids, truth[:sklearn_queries], strict=True)
            ]
        )
        print(
            f"| scikit-learn brute ({sklearn_queries:,} q) | {n:,} | {build:.1f} | {took:.1f} | {(_rss() - base) / 2**20:.0f} | {recall:.3f} |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ratio", type=int, default=0, help="gallery size of the ratio run"
    )
    parser.add_argument(
        "--scale", type=int, default=0, help="gallery size of the scale run"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (medians)"
    )
    parser.add_argument(
        "--reid",
        type=int,
        nargs=2,
        metavar=("QUERIES", "GALLERY"),
        help="time reid_metrics before (--old-retrieval) and after",
    )
    parser.add_argument(
        "--old-retrieval",
        default="/tmp/old_retrieval.py",
        help="the earlier retrieval module (git show e9225c7:keras_circle/retrieval.py)",
    )
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument("--sklearn-queries", type=int, default=1000)
    args = parser.parse_args()
    if args.ratio:
        ratio(args.ratio, args.rounds)
    if args.reid:
        reid(*args.reid, args.rounds, args.old_retrieval)
    if args.scale:
        scale(args.scale, args.queries, args.kinds, args.sklearn_queries)


if __name__ == "__main__":
    main()
