"""The run configuration's schema: typed dataclasses, choices as `Literal`s.

Every closed set of choices is a `typing.Literal`, so the schema itself says
what a key accepts and the loader (`keras_circle.config.loading`) rejects
anything else naming the key. The loss defaults are the paper's settings of
the config's task family (`keras_circle.presets.PRESETS`).
"""

import dataclasses
import typing
from typing import Literal

from keras_circle.presets import PRESETS

Task = Literal["face_recognition", "person_reid", "fine_grained_retrieval"]
Source = Literal["fashion_mnist", "identity_folders", "market1501", "msmt17", "tfds"]
# Small folders in the released layouts, built from the packaged data on
# first use (`keras_circle.data.builtin`): a data path `"builtin:<set>"`
# (or `"builtin:<set>/<path inside it>"`), and the source each one is.
BuiltinSet = Literal["market1501_mini", "faces_mini"]
BUILTIN_SOURCES = {"market1501_mini": "market1501", "faces_mini": "identity_folders"}
BUILTIN_PREFIX = "builtin:"
# Losses on class labels (after a `CosineProxies` head) and on pair labels
# (P x K batches of embeddings); "circle" is both, per `loss.labels`.
ClassLoss = Literal["circle", "am_softmax", "arcface"]
PairLoss = Literal["circle", "triplet", "keras_circle"]
LossName = Literal[ClassLoss, PairLoss]
Labels = Literal["class", "pair"]
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["step", "cosine"]
MixedPrecision = Literal["", "mixed_float16", "mixed_bfloat16"]

TASKS = typing.get_args(Task)
DEFAULT_TASK = "fine_grained_retrieval"


class ConfigError(ValueError):
    """A configuration key is unknown, or its value has the wrong type or range."""


def loss_defaults(task):
    """`{"labels", "gamma", "margin"}` of the paper for `task` (its `PRESETS`)."""
    preset = PRESETS[task]
    return {"labels": preset.labels, "gamma": preset.gamma, "margin": preset.margin}


@dataclasses.dataclass
class DataConfig:
    """Where the images come from and how batches are drawn.

    Attributes:
        source: `"fashion_mnist"` (the packaged subset, offline, any task),
            `"identity_folders"` (faces: `root/<identity>/<image>`),
            `"market1501"`, `"msmt17"` (re-ID folders) or `"tfds"`
            (fine-grained: `name` is `"cub"`, `"cars196"` or `"sop"`).
        root: Data folder for the folder sources, or a built-in small set
            (offline, built in the cache on first use):
            `"builtin:market1501_mini"` (Market-1501 layout) or
            `"builtin:faces_mini/train"` (identity folders; its LFW-style
            `lfw_root` and `lfw_pairs` are `"builtin:faces_mini/lfw"` and
            `"builtin:faces_mini/pairs.txt"`).
        name: TFDS set name for `source="tfds"`.
        tfds_data_dir: TFDS data folder (`None`: TFDS's default).
        split: `"official"` (train and test splits share their classes) or
            `"classes"` (train on the first half of the classes, test on the
            unseen second half, the fine-grained protocol).
        p: Classes per batch (P of P x K).
        k: Images per class (K of P x K).
        image_size: `[height, width]` fed to the model.
        channels: Image channels fed to the model.
        lfw_pairs: LFW `pairs.txt` for face verification (`None`: pairs
            drawn from the test identities).
        lfw_root: Folder of the LFW images (`None`: `root`).
        max_train_images: Keep at most this many training images (0: all).
        max_test_images: Keep at most this many test images (0: all).
    """

    source: Source = "fashion_mnist"
    root: str = ""
    name: str = "cub"
    tfds_data_dir: str | None = None
    split: Literal["official", "classes"] = "official"
    p: int = 16
    k: int = 5
    image_size: list[int] = dataclasses.field(default_factory=lambda: [224, 224])
    channels: Literal[1, 3] = 3
    lfw_pairs: str | None = None
    lfw_root: str | None = None
    max_train_images: int = 0
    max_test_images: int = 0


@dataclasses.dataclass
class ModelConfig:
    """The embedder.

    Attributes:
        backbone: `"small_cnn"` (tests, demo), a `keras.applications`
            name: `"resnet50"`, `"resnet101"`, `"resnet152"`,
            `"inception_v3"`, `"efficientnet_b0"`, or `"hub:<preset>"`, a
            keras-hub image backbone (a preset name or a local preset
            folder; the `[hub]` extra). `keras_circle.backbones` checks it.
        weights: `"imagenet"` (the backbone's ImageNet weights from the
            Keras cache, downloaded once), a local weights file
            (`.weights.h5`, `.h5`, `.keras`), or `None` (random
            initialisation). Checked before any data loads. A keras-hub
            preset brings its own weights.
        embedding_dim: Size of the embedding.
        width: Base width of `small_cnn`.
    """

    backbone: str = "resnet50"
    weights: str | None = None
    embedding_dim: int = 512
    width: int = 32


@dataclasses.dataclass
class LossConfig:
    """The loss: Circle loss with the paper's settings, or a baseline.

    Keys a config file leaves out take the paper's values for its task
    (`keras_circle.PRESETS`); these class defaults are those of the default
    task, fine-grained retrieval.

    Attributes:
        name: `"circle"` (class-level or pair-wise per `labels`), `"am_softmax"`,
            `"arcface"` (class level), `"triplet"` (pair wise, semi-hard),
            `"keras_circle"` (`keras.losses.Circle`, pair wise).
        labels: `"class"` (a `CosineProxies` head) or `"pair"` (P x K).
        gamma: Scale factor.
        margin: Relaxation margin.
    """

    name: LossName = "circle"
    labels: Labels = PRESETS[DEFAULT_TASK].labels
    gamma: float = PRESETS[DEFAULT_TASK].gamma
    margin: float = PRESETS[DEFAULT_TASK].margin


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and the run's machinery.

    Attributes:
        epochs: Passes of `steps_per_epoch` batches.
        steps_per_epoch: Batches per epoch (0: training images // (P * K)).
        backup_every: Steps between resumable backups; must divide
            `steps_per_epoch` (0: once per epoch). A killed run restarts from
            the last backup with the same total number of steps.
        optimizer: `"sgd"` (momentum 0.9) or `"adam"`.
        learning_rate: Peak learning rate.
        lr_schedule: `"step"` (divided by 10 at each of `lr_decay_at`) or
            `"cosine"` (cosine decay to 0 over the run; `lr_decay_at` unused).
        lr_decay_at: Fractions of training where the rate is divided by 10.
        weight_decay: Decoupled weight decay (0 for none).
        seed: Seed of weights and sampling.
        mixed_precision: `""`, `"mixed_float16"` or `"mixed_bfloat16"`.
        xla: `jit_compile` on one replica; off with more (Keras's
            `jit_compile=True` fails under `MirroredStrategy`,
            keras-team/keras#19005).
        replicas: Use the first this many visible devices (0: all of them).
        tensorboard: Write TensorBoard logs under `workdir/logs`.
        verbose: Keras `fit` verbosity (1: progress bars).
    """

    epochs: int = 10
    steps_per_epoch: int = 0
    backup_every: int = 0
    optimizer: Optimizer = "sgd"
    learning_rate: float = 0.01
    lr_schedule: Schedule = "step"
    lr_decay_at: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.75])
    weight_decay: float = 0.0
    seed: int = 0
    mixed_precision: MixedPrecision = ""
    xla: bool = False
    replicas: int = 0
    tensorboard: bool = True
    verbose: int = 1


@dataclasses.dataclass
class EvalConfig:
    """Evaluation and the artifacts at the end.

    Attributes:
        ks: Ranks K of Recall@K (or CMC rank-k for re-ID).
        batch_size: Inference batch size.
        plots: Write PNG plots.
        export_saved_model: Export a TF Serving SavedModel.
        export_onnx: Export an ONNX file.
        flip_test: Person re-ID only: embed each test image as the mean of
            its embedding and its mirror image's (fast-reid's flip test).
        rerank: Person re-ID only: rank by k-reciprocal re-ranking (Zhong
            et al. 2017; k1 20, k2 6, lambda 0.3).
    """

    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8])
    batch_size: int = 256
    plots: bool = True
    export_saved_model: bool = True
    export_onnx: bool = True
    flip_test: bool = False
    rerank: bool = False


@dataclasses.dataclass
class Config:
    """A whole run: one task family on one data set.

    Attributes:
        task: `"face_recognition"`, `"person_reid"` or
            `"fine_grained_retrieval"`; names the recipe
            (`keras_circle.tasks.<task>`: data, protocol) and the loss
            defaults.
        data, model, loss, train, eval: the sections above.
    """

    task: Task = DEFAULT_TASK
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
