"""Embeddings per second: Keras, the exported SavedModel and onnxruntime.

One run exports a realistic embedder with `keras_circle.export` (default:
`keras.applications.ResNet50(weights=None)` trunk at 112x112x3, the face
recognition input size, global average pooling and a 512-d Dense embedding),
then times, at batch 1 and 64, the median over `--repeats` calls of:
Keras `predict`, a direct Keras call `model(x)`, the SavedModel's
`serving_default` loaded with `tf.saved_model.load`, and an onnxruntime
session. It prints the parity (max abs difference from Keras) and a markdown
table with the machine it ran on.

Usage:

    python benchmarks/bench_serving.py [--arch resnet50|small] [--repeats 7]
"""

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_circle import export  # noqa: E402

BATCH_SIZES = (1, 64)


def build_embedder(arch, size):
    """A trunk, global average pooling and a 512-d linear embedding."""
    inputs = keras.Input((size, size, 3))
    if arch == "resnet50":
        trunk = keras.applications.ResNet50(
            include_top=False, weights=None, input_shape=(size, size, 3)
        )
        x = trunk(inputs)
    else:
        x = inputs
        for filters in (32, 64, 128, 256):
            x = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(512)(x), name=f"{arch}_embedder")


def median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [
                line.split(":", 1)[1].strip() for line in f if "model name" in line
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{cpu}, {psutil.cpu_count(logical=True)} logical cores "
        f"({psutil.cpu_count(logical=False)} physical), "
        f"load average {os.getloadavg()[0]:.1f}; TF {tf.__version__}, "
        f"Keras {keras.__version__}, onnxruntime {onnxruntime.__version__}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["resnet50", "small"], default="resnet50")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    embedder = build_embedder(args.arch, args.size)
    workdir = tempfile.mkdtemp(prefix="bench_serving_")
    start = time.perf_counter()
    version = export.export_saved_model(embedder, os.path.join(workdir, "m"))
    saved_seconds = time.perf_counter() - start
    start = time.perf_counter()
    onnx_path = export.export_onnx(embedder, os.path.join(workdir, "e.onnx"))
    onnx_seconds = time.perf_counter() - start

    serve = tf.saved_model.load(version).signatures["serving_default"]
    session = onnxruntime.InferenceSession(
        onnx_path, providers=["CPUExecutionProvider"]
    )

    def normalized(y):
        y = np.asarray(y, dtype="float64")
        return y / np.linalg.norm(y, axis=-1, keepdims=True)

    runtimes = {
        "Keras `predict`": lambda x: embedder.predict(x, batch_size=len(x), verbose=0),
        "Keras `model(x)`": lambda x: embedder(x, training=False),
        "SavedModel": lambda x: serve(image=tf.constant(x))["embedding"],
        "onnxruntime": lambda x: session.run(["embedding"], {"image": x})[0],
    }
    rates = {name: {} for name in runtimes}
    parity = {}
    for batch_size in BATCH_SIZES:
        x = np.random.default_rng(batch_size).uniform(
            0, 1, (batch_size, args.size, args.size, 3)
        )
        x = x.astype("float32")
        want = normalized(embedder(x, training=False))
        parity[batch_size] = {
            name: float(np.abs(np.asarray(runtimes[name](x)) - want).max())
            for name in ("SavedModel", "onnxruntime")
        }
        for name, run in runtimes.items():
            seconds = median_seconds(lambda run=run, x=x: run(x), args.repeats)
            rates[name][batch_size] = batch_size / seconds

    print(f"\nModel: {embedder.name} at {args.size}x{args.size}x3, 512-d embedding, ")
    print(f"{embedder.count_params():,} parameters; float32; median of {args.repeats}.")
    print(f"Export time: SavedModel {saved_seconds:.1f} s, ONNX {onnx_seconds:.1f} s.")
    print(f"Machine: {machine()}\n")
    for batch_size, diffs in parity.items():
        text = ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
        print(f"max |export - Keras| at batch {batch_size}: {text}")
    header = " | ".join(f"batch {b} (emb/s)" for b in BATCH_SIZES)
    print(f"\n| runtime | {header} |")
    print("|---|" + "---:|" * len(BATCH_SIZES))
    for name, by_batch in rates.items():
        cells = " | ".join(f"{by_batch[b]:,.1f}" for b in BATCH_SIZES)
        print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
