"""Packaging for keras-circle: Circle loss and deep metric learning for Keras 3."""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent
# `tensorflow` is the full wheel: on Linux it runs on a GPU when the CUDA
# libraries are there (`pip install "tensorflow[and-cuda]"` brings them).
# tensorflow-cpu is its own distribution of the same `tensorflow` module:
# installing both leaves one overwriting the other, so no extra that can be
# combined with another names both. Neither brings tensorboard (TF 2.21).
TENSORFLOW = ["tensorflow>=2.16", "tensorboard>=2.16"]
TENSORFLOW_CPU = ["tensorflow-cpu>=2.16", "tensorboard>=2.16"]
# keras-hub requires tensorflow-text, which requires `tensorflow` (never
# tensorflow-cpu): the hub extra names the full wheel itself.
HUB = ["keras-hub>=0.21", "tensorflow>=2.16"]

# Exact versions of the heavy stack live in constraints.txt; these are the
# ranges the code is written against.
setup(
    name="keras-circle",
    version="0.1.0",
    description="Paper-exact Circle loss (Sun et al., CVPR 2020) for Keras 3, "
    "from training to serving.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_circle", "keras_circle.*"]),
    package_data={"keras_circle": ["data/*.npz", "data/*.json"]},
    include_package_data=True,
    # The losses, layers, metrics, search and plots need no TensorFlow (they
    # run on JAX too), so TensorFlow is an extra: a machine that already has
    # `tensorflow` (the GPU build) must not get `tensorflow-cpu` beside it.
    install_requires=[
        "keras>=3.7",
        "h5py>=3.10",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "tqdm>=4.60",
        # keras_circle.search and the retrieval metrics search with faiss.
        "faiss-cpu>=1.8",
    ],
    extras_require={
        # keras_circle.data, distribute, training, pipeline, demo, export and
        # the CLI's train / evaluate / demo / export (every module whose first
        # docstring line says TensorFlow only). TensorFlow does not bring
        # tensorboard, which the training runs log to.
        "tensorflow": TENSORFLOW,
        # The same with the smaller CPU-only wheel; not with `hub` or `all`,
        # which need `tensorflow`.
        "cpu": TENSORFLOW_CPU,
        # keras-hub backbones (`model.backbone="hub:<preset>"`).
        "hub": HUB,
        # PyTorch and pytorch-metric-learning are only for benchmarks/bench_losses.py.
        "bench": ["torch>=2.3", "pytorch-metric-learning>=2.5"],
        "onnx": ["tf2onnx>=1.16", "onnx>=1.15", "onnxruntime>=1.17"],
        "tfds": ["tensorflow-datasets>=4.9", "importlib_resources>=6"],
        "jax": ["jax>=0.4.30", "jaxlib>=0.4.30"],
        # The PyTorch backend (CI runs the backend-agnostic tests on it). On
        # Linux, PyPI's torch is the CUDA build (about 3 GB with its nvidia-*
        # packages); PyTorch's own index has the CPU build.
        "torch": ["torch>=2.3"],
        # retrieval.clustering_scores (NMI, AMI) scores with scikit-learn.
        "clustering": ["scikit-learn>=1.4"],
        "dev": [
            "hypothesis>=6.100",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "psutil>=5.9",
            "ruff>=0.6",
            "scikit-learn>=1.4",
            "pillow>=10",
        ],
        # Everything but PyTorch, JAX, the test tools and the CPU-only
        # TensorFlow (`tensorflow`: a GPU machine keeps its build).
        "all": [
            *TENSORFLOW,
            *HUB[:1],
            "tf2onnx>=1.16",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "tensorflow-datasets>=4.9",
            "importlib_resources>=6",
            "scikit-learn>=1.4",
        ],
    },
    entry_points={"console_scripts": ["keras-circle=keras_circle.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
