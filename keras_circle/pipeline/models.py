"""Embedders, heads, losses and optimizers built from a `Config`.

Backbones (`keras_circle.backbones`): `small_cnn`, a `keras.applications`
model without its top, average-pooled, or a keras-hub preset. `model.weights`
is a local file (loaded with `load_weights` on the backbone, so it must
match the architecture without its top) or `"imagenet"`, the backbone's
ImageNet weights from the Keras cache; `prepare_weights` fetches them
before the run loads any data.
"""

import keras

import keras_circle as kc
from keras_circle import backbones
from keras_circle.config import ConfigError


def prepare_backbone(config):
    """Everything the embedder needs from outside, before the data loads.

    The weights file of `model.weights` (downloaded into the Keras cache
    for `"imagenet"`), or a keras-hub preset's availability.

    Returns:
        The weights path, or `None`.

    Raises:
        ConfigError: naming `model.weights` or `model.backbone`.
    """
    if backbones.is_hub(config.model.backbone):
        backbones.check_hub_preset(config.model.backbone)
        return None
    return backbones.prepare_weights(config.model)


def input_normalization(config, default):
    """The pixel normalization of `config`'s backbone (`default` for small_cnn).

    A keras.applications backbone on RGB input gets its ImageNet family's
    convention (`keras_circle.data.conventions.BACKBONES`); a keras-hub
    backbone raw pixels, as it rescales inside. Recipes build their training
    and test-time specs with it, and the export serves the same spec.
    """
    if config.data.channels != 3 and not backbones.is_hub(config.model.backbone):
        # Caffe-style and ImageNet conventions are defined for RGB only; a
        # grey run trains from scratch (ImageNet weights need 3 channels).
        return default
    return backbones.input_normalization(config.model, default)


def small_cnn(input_shape, embedding_dim, width=32):
    """A fast CNN for 28x28-to-64x64 images (tests, the demo).

    Args:
        input_shape: `(height, width, channels)`.
        embedding_dim: Embedding size.
        width: Filters of the first block (doubled in the second).

    Returns:
        A `keras.Model` named `"embedder"` from images to embeddings.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for filters in (width, 2 * width):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4 * width, activation="relu")(x)
    # float32 output: similarity math stays exact under mixed precision.
    outputs = keras.layers.Dense(embedding_dim, dtype="float32", name="embedding")(x)
    return keras.Model(inputs, outputs, name="embedder")


def build_embedder(config):
    """The embedder of `config.model` for `config.data`'s image size."""
    height, width = config.data.image_size
    shape = (height, width, config.data.channels)
    mc = config.model
    if mc.backbone == "small_cnn":
        model = small_cnn(shape, mc.embedding_dim, mc.width)
        if mc.weights:
            backbones.load_weights(model, backbones.prepare_weights(mc))
        return model
    if backbones.is_hub(mc.backbone):
        backbone = backbones.hub_backbone(mc.backbone, shape)
    else:
        path = backbones.prepare_weights(mc) if mc.weights else None
        backbone = backbones.application_backbone(mc.backbone, shape, path)
    inputs = keras.Input(shape, name="image")
    x = backbone(inputs)
    x = keras.layers.Dense(mc.embedding_dim, use_bias=False)(x)
    # BN-neck (Luo et al. 2019): a normalised feature for cosine heads.
    x = keras.layers.BatchNormalization(dtype="float32", name="embedding")(x)
    return keras.Model(inputs, x, name="embedder")


def build_training_model(config, embedder, num_classes):
    """The model `fit` trains: the embedder, plus proxies for class labels.

    `keras.losses.Circle` (`loss.name="keras_circle"`) does not normalise and
    its documentation asks for L2-normalised embeddings: it gets them through
    a `keras.layers.UnitNormalization` (our losses normalise inside).
    """
    if config.loss.labels == "pair":
        if config.loss.name != "keras_circle":
            return embedder
        unit = keras.layers.UnitNormalization(name="unit_embedding")(embedder.output)
        return keras.Model(embedder.input, unit, name="trainer")
    cosine = kc.CosineProxies(num_classes, name="proxies")(embedder.output)
    return keras.Model(embedder.input, cosine, name="trainer")


def build_models(config, num_classes):
    """`(training model, embedder)`: `config.model`, with a head for class labels."""
    embedder = build_embedder(config)
    return build_training_model(config, embedder, num_classes), embedder


def build_loss(config):
    """The loss of `config.loss`; `loss.labels` says what the model outputs.

    Class labels: the cosine logits of a `CosineProxies` head. Pair labels:
    embeddings of P x K batches. The config has checked that `loss.name`
    takes those labels.
    """
    lc = config.loss
    if lc.labels == "class":
        if lc.name == "circle":
            return kc.ClassCircleLoss(gamma=lc.gamma, margin=lc.margin)
        if lc.name == "am_softmax":
            return kc.AMSoftmaxLoss(gamma=lc.gamma, margin=lc.margin)
        if lc.name == "arcface":
            return kc.ArcFaceLoss(gamma=lc.gamma, margin=lc.margin)
    elif lc.name == "circle":
        return kc.CircleLoss(gamma=lc.gamma, margin=lc.margin)
    elif lc.name == "triplet":
        return kc.TripletLoss(margin=lc.margin, l2_normalize=True)
    elif lc.name == "keras_circle":
        return keras.losses.Circle(gamma=lc.gamma, margin=lc.margin)
    raise ConfigError(
        f"`loss.name={lc.name!r}` does not take `loss.labels={lc.labels!r}`."
    )


# The Eq. 8 circle of a loss that has none (the triplet margin is a distance):
# the pair-wise Circle loss's default, so runs compare on one circle.
_DEFAULT_CIRCLE_MARGIN = kc.CircleLoss().margin


def statistics_margin(config):
    """The margin `m` of the Eq. 8 circle the pair-wise diagnostics use.

    The loss's margin for the Circle losses (`circle`, `keras_circle`);
    Circle loss's default 0.4 for the triplet loss, whose margin is a
    distance, not Eq. 8's `m`.
    """
    lc = config.loss
    if lc.name in ("circle", "keras_circle"):
        return lc.margin
    return _DEFAULT_CIRCLE_MARGIN


def build_metrics(config):
    """The training diagnostics of `config.loss` (`keras_circle.metrics`).

    Pair labels: `circle_statistics(statistics_margin(config))`. Class
    labels: `class_circle_statistics()` on the `CosineProxies` cosines.
    """
    if config.loss.labels == "class":
        return kc.metrics.class_circle_statistics()
    return kc.metrics.circle_statistics(statistics_margin(config))


def build_optimizer(config, total_steps):
    """SGD (momentum 0.9) or Adam; the rate decays in steps or as a cosine."""
    tc = config.train
    boundaries = sorted({max(1, int(f * total_steps)) for f in tc.lr_decay_at})
    values = [tc.learning_rate * 0.1**i for i in range(len(boundaries) + 1)]
    if tc.lr_schedule == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(tc.learning_rate, total_steps)
    elif boundaries:
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        schedule = tc.learning_rate
    decay = tc.weight_decay or None
    if tc.optimizer == "adam":
        return keras.optimizers.AdamW(schedule, weight_decay=decay or 0.0)
    return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=decay)
