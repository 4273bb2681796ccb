"""Whether an embedder rescales its own raw pixels (so the export must not).

The usual Keras pattern puts `keras.layers.Rescaling(1 / 255)` first, and
some `keras.applications` backbones rescale inside (EfficientNet and
MobileNetV3 with a `Rescaling`, ConvNeXt with a `Normalization` holding the
ImageNet mean in pixel units). Such a model expects pixels in [0, 255]:
scaling them in the export as well divides by 255 twice.

`find_input_scaling` walks the layers in the order Keras keeps them (inputs
first), into nested models, past layers that keep the pixel range
(padding, reshapes, resizing and crops, augmentation layers that are
identities at inference, dropout), and looks at the first layer that
computes: a `Rescaling` whose scale maps [0, 255] to about a unit range, or
a `Normalization` whose mean is above 1.5 (pixel units), means the model
takes raw pixels.
"""

import keras
import numpy as np

# Layers that neither change the pixel range nor compute from it.
_PASSTHROUGH = tuple(
    getattr(keras.layers, name)
    for name in (
        "InputLayer",
        "ZeroPadding2D",
        "Reshape",
        "Permute",
        "Resizing",
        "CenterCrop",
        "Cropping2D",
        "Dropout",
        "GaussianNoise",
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomCrop",
        "RandomContrast",
        "RandomBrightness",
        "Identity",
    )
    if hasattr(keras.layers, name)
)


def _values(value):
    if value is None:
        return None
    return np.abs(np.asarray(keras.ops.convert_to_numpy(value), dtype="float64"))


def _describe(layer, path):
    """A description if `layer` takes raw [0, 255] pixels, else `None`."""
    where = " inside ".join([repr(layer.name), *(repr(p) for p in reversed(path))])
    if isinstance(layer, keras.layers.Rescaling):
        scale = _values(layer.scale)
        # 1/255 -> [0, 1], 1/127.5 -> [-1, 1], 1/(255 std) with an ImageNet
        # std near 0.22 (keras-hub's converters, per channel) -> unit
        # variance: pixels in, unit range out.
        if scale is not None and np.all((scale * 255 > 0.5) & (scale * 255 < 5.0)):
            return f"Rescaling layer {where} (x * {layer.scale} + {layer.offset})"
        return None
    if isinstance(layer, keras.layers.Normalization):
        mean = _values(getattr(layer, "mean", None))
        if mean is not None and mean.size and float(mean.max()) > 1.5:
            return f"Normalization layer {where} (mean {np.round(mean, 3).tolist()})"
    return None


def find_input_scaling(model, _path=()):
    """Describes how `model` rescales raw pixels itself, or returns `None`.

    Args:
        model: A Functional or Sequential `keras.Model`.

    Returns:
        A one-line description naming the layer (and the nested models it
        sits in) when the first computing layer on the input path takes
        pixels in [0, 255]; `None` otherwise.

    Example:

    >>> keras_circle.export.find_input_scaling(keras.applications.EfficientNetB0())
    "Rescaling layer 'rescaling' inside 'efficientnetb0' (x * 0.0039... + 0.0)"
    """
    found, _ = _walk(model, _path)
    return found


def _walk(model, path):
    """`(description or None, reached a computing layer)`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found, stopped = _walk(layer, (*path, model.name))
            if stopped:
                return found, True
            continue
        if isinstance(layer, _PASSTHROUGH):
            continue
        return _describe(layer, (*path, model.name)), True
    return None, False
