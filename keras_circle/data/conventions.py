"""Test-time image preprocessing: one spec shared by data, evaluation and export.

A preprocessing *spec* is a JSON-able dict saying how an image file becomes
a model input at test time. `keras_circle.data`'s test-time paths apply it,
the evaluation pipeline maps it over its test images, the exported
`serving_bytes` signature runs the same TensorFlow function inside the
SavedModel, and the export metadata records it whole, so an edge client
(`serving/onnx_inference.py`) can reproduce it without keras-circle:

    {"size": [H, W], "channels": C,
     "resize": "resize" | "resize_shorter_then_center_crop",
     "shorter_side": S,            # the crop policy only
     "normalization": "zero_one" | "symmetric" | "imagenet" | "caffe" | "none",
     "mean": [...], "std": [...], "bgr": bool}   # derived from normalization

In order: decode to `C` channels (grey is repeated to RGB); resize with
`tf.image.resize` bilinear (half-pixel centres, no antialiasing), either the
whole image to `size` (`"resize"`) or the shorter side to `S` keeping the
aspect ratio (rounded) and then the centre `size` cut out; clip to
[0, 255]; reverse the channels if `bgr`; `(pixel - mean) / std`, with
`mean` and `std` in pixel units (per channel, or one value).

Normalizations (`NORMALIZATIONS`): `"zero_one"` divides by 255;
`"symmetric"` maps to [-1, 1] (`"minus_one_to_one"` is its deprecated
name); `"imagenet"` is the torchvision mean/std of [0, 1] pixels; `"caffe"`
is `keras.applications.resnet`'s `preprocess_input`: RGB to BGR and the
ImageNet BGR mean subtracted, no scaling; `"none"` keeps [0, 255] (for a
model that rescales its own input). `BACKBONES` gives the one each
`keras.applications` family expects. Standard library only (NumPy in
`normalize_pixels`), so a client can read the table without TensorFlow.
"""

import numbers
import warnings

RESIZE_POLICIES = ("resize", "resize_shorter_then_center_crop")

# name -> (mean, std, bgr), mean and std in pixel units [0, 255].
NORMALIZATIONS = {
    "zero_one": (0.0, 255.0, False),
    "symmetric": (127.5, 127.5, False),
    # torchvision's (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225) x 255.
    "imagenet": ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], False),
    # keras.applications.imagenet_utils, mode="caffe" (BGR order).
    "caffe": ([103.939, 116.779, 123.68], 1.0, True),
    "none": (0.0, 1.0, False),
}
DEPRECATED_NORMALIZATIONS = {"minus_one_to_one": "symmetric"}

# keras.applications family -> the normalization its `preprocess_input`
# applies ("none": the model rescales inside, `include_preprocessing`).
BACKBONES = {
    "resnet": "caffe",  # ResNet50/101/152
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "symmetric",
    "inception_v3": "symmetric",
    "inception_resnet_v2": "symmetric",
    "xception": "symmetric",
    "mobilenet": "symmetric",
    "mobilenet_v2": "symmetric",
    "nasnet": "symmetric",
    "densenet": "imagenet",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "mobilenet_v3": "none",
    "convnext": "none",
    "regnet": "none",
    "resnet_rs": "none",
}
# Model-name prefixes (as keras.applications names its models) -> family,
# longest first so "resnet50v2" is not read as "resnet".
_NAME_PREFIXES = [
    ("inception_resnet_v2", "inception_resnet_v2"),
    ("efficientnetv2", "efficientnet_v2"),
    ("efficientnet", "efficientnet"),
    ("mobilenetv3", "mobilenet_v3"),
    ("mobilenetv2", "mobilenet_v2"),
    ("mobilenet", "mobilenet"),
    ("inception_v3", "inception_v3"),
    ("resnet-rs", "resnet_rs"),
    ("resnetrs", "resnet_rs"),
    ("resnet_rs", "resnet_rs"),
    ("convnext", "convnext"),
    ("densenet", "densenet"),
    ("xception", "xception"),
    ("nasnet", "nasnet"),
    ("regnet", "regnet"),
    ("vgg16", "vgg16"),
    ("vgg19", "vgg19"),
]
_KEYS = ("size", "channels", "resize", "shorter_side", "normalization")
_DERIVED = ("mean", "std", "bgr")


def backbone_normalization(name):
    """The normalization a `keras.applications` backbone expects.

    Args:
        name: A family in `BACKBONES` (`"resnet"`, `"efficientnet"`) or a
            model name as keras.applications gives it (`"resnet50"`,
            `"resnet101v2"`, `"efficientnetb0"`, `"convnext_tiny"`).

    Returns:
        A key of `NORMALIZATIONS`; `"none"` for models that rescale inside.

    Raises:
        ValueError: If the name is not a known family or model.

    Example:

    >>> keras_circle.data.backbone_normalization("resnet50")
    'caffe'
    """
    key = str(name).lower()
    if key in BACKBONES:
        return BACKBONES[key]
    for prefix, family in _NAME_PREFIXES:
        if key.startswith(prefix):
            return BACKBONES[family]
    if key.startswith("resnet"):
        return BACKBONES["resnet_v2" if key.endswith("v2") else "resnet"]
    raise ValueError(f"Unknown backbone {name!r}; known families: {sorted(BACKBONES)}.")


def canonical_normalization(name, what="normalization"):
    """`name` checked and with deprecated names mapped (with a warning)."""
    if name in DEPRECATED_NORMALIZATIONS:
        new = DEPRECATED_NORMALIZATIONS[name]
        warnings.warn(
            f"{what} {name!r} is deprecated; use {new!r} (the same mapping).",
            DeprecationWarning,
            stacklevel=3,
        )
        return new
    if name not in NORMALIZATIONS:
        raise ValueError(
            f"`{what}` must be one of {sorted(NORMALIZATIONS)}; got {name!r}."
        )
    return name


def make_spec(
    size,
    *,
    channels=3,
    normalization="zero_one",
    resize="resize",
    shorter_side=None,
):
    """A checked preprocessing spec (see the module docstring).

    Args:
        size: Output `(height, width)`, or one int for a square.
        channels: 1, 3 or 4. Defaults to `3`.
        normalization: A key of `NORMALIZATIONS`. Defaults to `"zero_one"`.
        resize: `"resize"` or `"resize_shorter_then_center_crop"`. Defaults
            to `"resize"`.
        shorter_side: The shorter side before the centre crop; needed by
            the crop policy only. Defaults to `None`.

    Returns:
        The spec dict, with `mean`, `std` and `bgr` filled in.

    Example:

    >>> keras_circle.data.make_spec(224, resize="resize_shorter_then_center_crop",
    ...     shorter_side=256, normalization="imagenet")
    """
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = [int(size), int(size)]
    spec = {"size": size, "channels": channels, "resize": resize}
    if shorter_side is not None:
        spec["shorter_side"] = shorter_side
    spec["normalization"] = normalization
    return check_spec(spec)


def _positive_int(value):
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value > 0
    )


def check_spec(spec, *, default=None, input_shape=None):
    """Checks a spec, fills defaults and derived keys; returns a new dict.

    Args:
        spec: A spec dict, possibly partial. The old export key `"scale"`
            is accepted for `"normalization"` (with a `DeprecationWarning`).
        default: A spec whose keys fill those `spec` lacks. Defaults to
            `None`.
        input_shape: The model input `(batch, H, W, C)` the spec must match
            (`None` sizes match anything). Defaults to `None`.

    Returns:
        The complete spec, keys in the module docstring's order.

    Raises:
        ValueError: Naming the bad key, what it got and what it expects.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"`preprocessing` must be a dict; got {spec!r}.")
    spec = dict(spec)
    if "scale" in spec:
        if "normalization" in spec:
            raise ValueError(
                "`preprocessing` has both `scale` and `normalization`; give "
                "`normalization` only."
            )
        warnings.warn(
            "preprocessing key 'scale' is deprecated; use 'normalization'.",
            DeprecationWarning,
            stacklevel=2,
        )
        spec["normalization"] = spec.pop("scale")
    unknown = sorted(set(spec) - set(_KEYS) - set(_DERIVED))
    if unknown:
        raise ValueError(
            f"Unknown preprocessing key(s) {unknown}; expected keys among "
            f"{list(_KEYS)}."
        )
    given = {key: spec.pop(key) for key in _DERIVED if key in spec}
    merged = {key: value for key, value in (default or {}).items() if key in _KEYS}
    if spec.get("resize", merged.get("resize")) == "resize":
        merged.pop("shorter_side", None)
    merged.update(spec)
    merged.setdefault("resize", "resize")
    merged.setdefault("normalization", "zero_one")
    if input_shape is not None:
        if len(input_shape) != 4:
            raise ValueError(
                "`preprocessing` needs an image input (batch, H, W, C); the "
                f"model input has shape {tuple(input_shape)}."
            )
        if merged.get("channels") is None:
            merged["channels"] = input_shape[3]
        if merged.get("size") is None and None not in input_shape[1:3]:
            merged["size"] = list(input_shape[1:3])
    size = merged.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2) or not all(
        _positive_int(s) for s in size
    ):
        raise ValueError(
            f"preprocessing `size` must be [height, width], positive ints; got {size!r}."
        )
    if merged.get("channels") not in (1, 3, 4):
        raise ValueError(
            f"preprocessing `channels` must be 1, 3 or 4; got {merged.get('channels')!r}."
        )
    if merged["resize"] not in RESIZE_POLICIES:
        raise ValueError(
            f"preprocessing `resize` must be one of {list(RESIZE_POLICIES)}; got "
            f"{merged['resize']!r}."
        )
    name = canonical_normalization(
        merged["normalization"], "preprocessing `normalization`"
    )
    if name in ("imagenet", "caffe") and merged["channels"] != 3:
        raise ValueError(
            f"preprocessing normalization {name!r} needs 3 channels (RGB); got "
            f"channels={merged['channels']}."
        )
    out = {"size": [int(s) for s in size], "channels": int(merged["channels"])}
    out["resize"] = merged["resize"]
    if out["resize"] == "resize_shorter_then_center_crop":
        shorter = merged.get("shorter_side")
        if not _positive_int(shorter) or shorter < max(out["size"]):
            raise ValueError(
                "preprocessing `shorter_side` must be an int >= the crop size "
                f"{max(out['size'])} with resize='resize_shorter_then_center_crop'; "
                f"got {shorter!r}."
            )
        out["shorter_side"] = int(shorter)
    elif merged.get("shorter_side") is not None:
        raise ValueError(
            "preprocessing `shorter_side` only applies to "
            "resize='resize_shorter_then_center_crop'."
        )
    mean, std, bgr = NORMALIZATIONS[name]
    out.update(normalization=name, mean=mean, std=std, bgr=bgr)
    for key, value in given.items():
        if value != out[key]:
            raise ValueError(
                f"preprocessing `{key}` {value!r} does not match normalization "
                f"{name!r}, which means {key}={out[key]!r}."
            )
    if input_shape is not None:
        wanted = [*out["size"], out["channels"]]
        for got, want in zip(wanted, input_shape[1:], strict=True):
            if want is not None and got != want:
                raise ValueError(
                    f"preprocessing (size {out['size']}, channels "
                    f"{out['channels']}) does not match the model input shape "
                    f"{tuple(input_shape)}."
                )
    return out


def normalize_pixels(pixels, spec):
    """NumPy version of the spec's last steps, for pixels already resized.

    Args:
        pixels: float array `(..., H, W, C)` in [0, 255], RGB order.
        spec: A checked spec.

    Returns:
        float32 array: channels reversed if `bgr`, then `(pixels - mean) / std`.
    """
    import numpy as np

    pixels = np.asarray(pixels, dtype="float32")
    if spec["bgr"]:
        pixels = pixels[..., ::-1]
    mean = np.asarray(spec["mean"], dtype="float32")
    std = np.asarray(spec["std"], dtype="float32")
    return ((pixels - mean) / std).astype("float32")
