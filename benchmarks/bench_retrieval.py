"""Time and peak memory of the blockwise retrieval metrics on large galleries.

Each (size, metric) runs in its own subprocess so that `ru_maxrss` is the
peak of that metric alone; the table shows the peak RSS and its increase over
the RSS just before the call (which already holds the data, Python, NumPy and
whatever `keras_circle` imports). Data: random but clustered float32
embeddings (class centres plus noise), `--per-class` samples per class.
Re-ID: a gallery of the given size with 6 cameras, 5% junk (-1) and 10%
distractors (0), and `size // 20` queries of the same identities.

Usage:

    python benchmarks/bench_retrieval.py                 # 30k and 200k
    python benchmarks/bench_retrieval.py --sizes 30000 --metrics recall_at_k
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

METRICS = ("recall_at_k", "map_at_r", "reid_metrics")


def _clustered(rng, n, dim, per_class):
    """Float32 embeddings and labels, generated in chunks to keep the peak low."""
    classes = max(1, n // per_class)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    labels = rng.integers(0, classes, n)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        x[start:stop] = centres[labels[start:stop]]
        x[start:stop] += 1.6 * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
    return x, labels


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _worker(size, metric, dim, per_class):
    from keras_circle import retrieval

    rng = np.random.default_rng(0)
    if metric == "reid_metrics":
        num_queries = size // 20
        x, ids = _clustered(rng, size + num_queries, dim, per_class)
        ids = ids + 1  # 0 and -1 are reserved for distractors and junk
        cams = rng.integers(0, 6, ids.size)
        gallery_ids = ids[num_queries:].copy()
        kind = rng.random(size)
        gallery_ids[kind < 0.05] = -1
        gallery_ids[(kind >= 0.05) & (kind < 0.15)] = 0
        args = (
            x[:num_queries],
            ids[:num_queries],
            cams[:num_queries],
            x[num_queries:],
            gallery_ids,
            cams[num_queries:],
        )
    else:
        args = _clustered(rng, size, dim, per_class)
    baseline = _rss_bytes()
    start = time.perf_counter()
    result = getattr(retrieval, metric)(*args, verbose=0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if isinstance(result, dict) and "cmc" in result:
        result = {"rank1": result["cmc"][1], "mAP": result["mAP"]}
    print(
        json.dumps(
            {"seconds": seconds, "baseline": baseline, "peak": peak, "result": result}
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 200_000])
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument(
        "--worker", nargs=2, metavar=("SIZE", "METRIC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        _worker(int(args.worker[0]), args.worker[1], args.dim, args.per_class)
        return
    print(
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; numpy {np.__version__}; dim {args.dim}, "
        f"{args.per_class} samples per class\n"
    )
    print("| gallery | metric | time (s) | peak RSS (MiB) | increase (MiB) | result |")
    print("|---:|---|---:|---:|---:|---|")
    for size in args.sizes:
        for metric in args.metrics:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(size),
                    metric,
                    "--dim",
                    str(args.dim),
                    "--per-class",
                    str(args.per_class),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            result = row["result"]
            if isinstance(result, dict):
                result = ", ".join(f"{k}={v:.3f}" for k, v in result.items())
            else:
                result = f"{result:.3f}"
            print(
                f"| {size:,} | {metric} | {row['seconds']:.1f} | "
                f"{row['peak'] / 2**20:.0f} | "
                f"{(row['peak'] - row['baseline']) / 2**20:.0f} | {result} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
