"""Backbones of `model.backbone`: keras.applications with ImageNet weights, keras-hub.

`model.weights` takes a local weights file (`.weights.h5`, `.h5`,
`.keras`), `"imagenet"` (a `keras.applications`
backbone's own ImageNet weights, without the classifier), or `None`
(random initialisation). ImageNet weights come from the Keras cache,
`$KERAS_HOME/models/` (`~/.keras/models/` when `KERAS_HOME` is unset), the
folder `keras.applications` downloads them to: a file already there is
used as it is, otherwise it is downloaded once with a socket timeout of
`DOWNLOAD_TIMEOUT` seconds. `prepare_weights(config)` does all of this
before a run loads any data, so an offline machine stops at once with one
message naming the file and where to put it (`WeightsUnavailableError`, a
`ConfigError`).

Each backbone takes the pixels its weights were trained with:
`input_normalization(config)` is the `keras_circle.data.conventions` entry
of its family (caffe-style BGR mean subtraction for ResNet, [-1, 1] for
Inception, raw pixels for EfficientNet, which rescales inside), and the
data, the evaluation and the export all use that one spec.

`model.backbone="hub:<preset>"` loads a keras-hub backbone (the `[hub]`
extra) from a preset name or a local preset folder; its image converter's
scale and offset become a `Rescaling` layer in front of it, so the model
takes raw [0, 255] pixels (normalization `"none"`).
"""

import dataclasses
import os
import socket
import zipfile

import keras

from keras_circle.config.schema import ConfigError

DOWNLOAD_TIMEOUT = 20.0
HUB_PREFIX = "hub:"
_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class Application:
    """A `keras.applications` backbone and its ImageNet weights file.

    Attributes:
        model: The `keras.applications` function (`"ResNet50"`).
        family: Its key in `keras_circle.data.conventions.BACKBONES`.
        min_size: The smallest image side it accepts (`keras.applications`'
            own minimum).
        weights_file: The file name of its ImageNet weights without the
            classifier, as `keras.applications` caches it.
        weights_url: Where Keras downloads that file from.
        weights_md5: Its MD5, as `keras.applications` checks it.
    """

    model: str
    family: str
    min_size: int
    weights_file: str
    weights_url: str
    weights_md5: str


def _resnet(model, md5):
    name = f"{model.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return Application(model, "resnet", 32, name, f"{_KERAS_URL}resnet/{name}", md5)


_INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# File names, addresses and hashes as keras.applications 3.x has them.
APPLICATIONS = {
    "resnet50": _resnet("ResNet50", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": _resnet("ResNet101", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": _resnet("ResNet152", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    "inception_v3": Application(
        "InceptionV3",
        "inception_v3",
        75,
        _INCEPTION_FILE,
        f"{_KERAS_URL}inception_v3/{_INCEPTION_FILE}",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "efficientnet_b0": Application(
        "EfficientNetB0",
        "efficientnet",
        32,
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
        "50bc09e76180e00e4465e1a485ddc09d",
    ),
}
WEIGHTS_SUFFIXES = (".weights.h5", ".h5", ".keras")


class WeightsUnavailableError(ConfigError):
    """The ImageNet weights of `model.weights="imagenet"` are not on this machine."""


def is_hub(backbone):
    """Whether `model.backbone` names a keras-hub preset (`"hub:<preset>"`)."""
    return str(backbone).startswith(HUB_PREFIX)


def check_backbone(model_config, image_size, channels):
    """Config checks of `model.backbone` and `model.weights` that need no file.

    Raises:
        ConfigError: an unknown backbone, an image smaller than the backbone
            takes, ImageNet weights for a backbone without them or for
            other than 3 channels, or weights given for a hub preset.
    """
    backbone, weights = model_config.backbone, model_config.weights
    if is_hub(backbone):
        if not backbone[len(HUB_PREFIX) :].strip():
            raise ConfigError(
                "`model.backbone` 'hub:' needs a keras-hub preset name or folder "
                "after the colon, e.g. 'hub:resnet_50_imagenet'."
            )
        if weights is not None:
            raise ConfigError(
                f"`model.weights` must be null with `model.backbone` {backbone!r}: "
                f"a keras-hub preset brings its own weights; got {weights!r}."
            )
        return
    known = ["small_cnn", *APPLICATIONS]
    if backbone not in known:
        raise ConfigError(
            f"`model.backbone` must be one of {known} or 'hub:<preset>'; got "
            f"{backbone!r}."
        )
    if weights == "imagenet":
        if backbone == "small_cnn":
            raise ConfigError(
                "`model.weights` 'imagenet' needs a keras.applications backbone "
                f"({list(APPLICATIONS)}); `model.backbone` is 'small_cnn'."
            )
        if channels != 3:
            raise ConfigError(
                "`model.weights` 'imagenet' needs RGB input: set `data.channels` "
                f"to 3; got {channels}."
            )
    if backbone in APPLICATIONS:
        smallest = APPLICATIONS[backbone].min_size
        for i, size in enumerate(image_size):
            if size < smallest:
                raise ConfigError(
                    f"`data.image_size[{i}]` must be >= {smallest}: `model.backbone` "
                    f"{backbone!r} takes images of at least {smallest} x {smallest} "
                    f"pixels; got {list(image_size)}."
                )


def keras_cache_dir():
    """The Keras cache folder: `$KERAS_HOME`, else `~/.keras`.

    As `keras.utils.get_file` picks it (`/tmp/.keras` when that folder is
    not writable), but read when called (Keras reads `KERAS_HOME` once, at
    import), and with its `models/` folder created, so that Keras does not
    fall back to `/tmp/.keras` only because `~/.keras` does not exist yet.
    """
    if "KERAS_HOME" in os.environ:
        base = os.path.expanduser(os.environ["KERAS_HOME"])
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    try:
        os.makedirs(os.path.join(base, "models"), exist_ok=True)
    except OSError:
        pass
    return base if os.access(base, os.W_OK) else os.path.join("/tmp", ".keras")


def imagenet_weights_path(backbone):
    """Where the ImageNet weights of `backbone` lie in the Keras cache."""
    return os.path.join(
        keras_cache_dir(), "models", APPLICATIONS[backbone].weights_file
    )


def fetch_imagenet_weights(backbone, timeout=DOWNLOAD_TIMEOUT):
    """The path of `backbone`'s ImageNet weights, downloaded once into the cache.

    A file already in the cache is used as it is; otherwise
    `keras.utils.get_file` downloads it (checking its MD5), and any socket
    operation of the download that waits more than `timeout` seconds fails.

    Raises:
        WeightsUnavailableError: the download failed (offline, timed out,
            refused), naming the file and the folder to put it in.
    """
    app = APPLICATIONS[backbone]
    path = imagenet_weights_path(backbone)
    if os.path.isfile(path):
        return path
    # urllib (under get_file) takes no timeout; the socket default applies
    # to every connect and read of the download, and is restored after.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return keras.utils.get_file(
            app.weights_file,
            app.weights_url,
            cache_dir=keras_cache_dir(),
            cache_subdir="models",
            file_hash=app.weights_md5,
        )
    except Exception as error:  # get_file raises a bare Exception on URL errors
        raise WeightsUnavailableError(
            f"`model.weights` 'imagenet': the ImageNet weights of {backbone!r} are "
            f"not in the Keras cache and could not be downloaded ({error}). "
            f"Download {app.weights_url} on a machine with network access and "
            f"put it at {path} (the Keras cache, $KERAS_HOME/models, "
            f"~/.keras/models by default), or set `model.weights` to the path of "
            "that file."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _is_zip(path):
    return zipfile.is_zipfile(path)


def _is_hdf5(path):
    import h5py

    # Opening reads the superblock: a file cut short fails here, where
    # `h5py.is_hdf5` only looks at the signature.
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def _check_file(path):
    if not any(path.endswith(s) for s in WEIGHTS_SUFFIXES):
        raise ConfigError(
            f"`model.weights` {path!r} is not a weights file: expected a name "
            f"ending in {list(WEIGHTS_SUFFIXES)}, 'imagenet' or null."
        )
    if not (_is_zip(path) if path.endswith(".keras") else _is_hdf5(path)):
        raise ConfigError(
            f"`model.weights` file {path!r} is not a readable "
            f"{'.keras (zip)' if path.endswith('.keras') else 'HDF5'} file (cut "
            "short by an interrupted download?); delete it and download it again."
        )


def prepare_weights(model_config):
    """The weights file of `model.weights`, ready before any data loads.

    `"imagenet"` is fetched into the Keras cache (`fetch_imagenet_weights`);
    any other value is a local path, which must exist and be a weights file.

    Returns:
        The file's path, or `None` when `model.weights` is null.

    Raises:
        ConfigError: a missing or unreadable file, naming `model.weights`.
        WeightsUnavailableError: ImageNet weights that cannot be downloaded.
    """
    weights = model_config.weights
    if weights is None:
        return None
    if weights == "imagenet" and model_config.backbone in APPLICATIONS:
        path = fetch_imagenet_weights(model_config.backbone)
    elif os.path.isfile(weights):
        path = weights
    else:
        raise ConfigError(
            f"`model.weights` {weights!r}: no such file; expected the path of a "
            f"weights file ({', '.join(WEIGHTS_SUFFIXES)}), 'imagenet' or null."
        )
    _check_file(str(path))
    return str(path)


def load_weights(model, path):
    """`model.load_weights(path)`, a mismatch named by `model.weights`."""
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        raise ConfigError(
            f"`model.weights` file {path!r} does not fit the {model.name!r} "
            f"backbone: {error}"
        ) from None


def input_normalization(model_config, default):
    """The pixel normalization the backbone of `model_config` expects.

    A `keras.applications` backbone: its family's entry of
    `keras_circle.data.conventions.BACKBONES`, whatever its weights (a
    from-scratch run can later take ImageNet weights, and EfficientNet
    rescales inside either way). A keras-hub backbone: `"none"`, as it
    rescales inside. `small_cnn`: `default`, the recipe's own choice.
    """
    # Not at the top: keras_circle.data imports TensorFlow; the config
    # checks of this module need none.
    from keras_circle.data.conventions import BACKBONES

    backbone = model_config.backbone
    if is_hub(backbone):
        return "none"
    if backbone in APPLICATIONS:
        return BACKBONES[APPLICATIONS[backbone].family]
    return default


def application_backbone(backbone, input_shape, weights_path=None):
    """A `keras.applications` model, images to average-pooled features."""
    app = APPLICATIONS[backbone]
    model = getattr(keras.applications, app.model)(
        include_top=False, weights=None, input_shape=input_shape, pooling="avg"
    )
    if weights_path:
        load_weights(model, weights_path)
    return model


def _import_keras_hub(backbone):
    try:
        import keras_hub
    except ImportError:
        raise ConfigError(
            f"`model.backbone` {backbone!r} needs keras-hub: pip install "
            "'keras-circle[hub]'."
        ) from None
    return keras_hub


def check_hub_preset(backbone):
    """Before any data loads: keras-hub importable, a preset folder present.

    A preset that is a path (it holds a `/` or starts with `.` or `~`) must
    be a folder with keras-hub's `config.json`; a preset name is looked up
    (and downloaded) when the model is built.
    """
    preset = backbone[len(HUB_PREFIX) :]
    _import_keras_hub(backbone)
    if os.sep in preset or preset.startswith((".", "~")):
        folder = os.path.expanduser(preset)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ConfigError(
                f"`model.backbone` {backbone!r}: {folder!r} is not a keras-hub "
                "preset folder (no config.json); save one with "
                "`backbone.save_to_preset(folder)`."
            )


def hub_backbone(backbone, input_shape, timeout=DOWNLOAD_TIMEOUT):
    """A keras-hub image backbone, raw pixels to pooled features.

    The preset's image converter gives the scale and offset its weights were
    trained with; they become a `Rescaling` layer in front of the backbone
    (the data are resized to `data.image_size` beforehand, so the
    converter's own resizing is not used). Feature maps are averaged over
    space, token sequences over tokens.

    Raises:
        ConfigError: keras-hub missing, a preset that does not load, has no
            image converter, is not an image backbone or does not take
            `input_shape`.
    """
    keras_hub = _import_keras_hub(backbone)
    preset = os.path.expanduser(backbone[len(HUB_PREFIX) :])
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        model = keras_hub.models.Backbone.from_preset(preset)
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as error:  # keras-hub raises many kinds
        raise ConfigError(
            f"`model.backbone` {backbone!r}: keras-hub could not load the preset "
            f"with an image converter ({type(error).__name__}: {error}). A preset "
            "is a keras-hub preset name (downloaded once into the KaggleHub "
            "cache) or a folder written by `save_to_preset`, holding a backbone "
            "and an image converter."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ConfigError(
            f"`model.backbone` {backbone!r} is not an image backbone: its inputs "
            f"are {[tuple(x.shape) for x in model.inputs]}."
        )
    inputs = keras.Input(input_shape, name="pixels")
    scale = 1.0 if converter.scale is None else converter.scale
    offset = 0.0 if converter.offset is None else converter.offset
    x = keras.layers.Rescaling(scale, offset, name="hub_rescaling")(inputs)
    try:
        x = model(x)
    except Exception as error:  # a fixed input size, mostly
        preset_size = list(model.inputs[0].shape[1:3])
        hint = "" if None in preset_size else f"; the preset takes {preset_size}"
        raise ConfigError(
            f"`model.backbone` {backbone!r} does not take `data.image_size` "
            f"{list(input_shape[:2])} ({error}){hint}."
        ) from None
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="hub_pool")(x)
    elif len(x.shape) == 3:
        x = keras.layers.GlobalAveragePooling1D(name="hub_pool")(x)
    return keras.Model(inputs, x, name="hub_backbone")
