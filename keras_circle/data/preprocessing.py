"""Per-family image preprocessing for `dataset.map` (TensorFlow only: tf.image).

Each function takes `(image, label)`, where `image` is a uint8 tensor
`(height, width, channels)` or the encoded bytes of a JPEG/PNG file (a scalar
string), and returns `(float32 image, label)`. Grey images are repeated to
three channels. With `training=False` the output is a deterministic function
of the input; with `training=True` the augmentations of each field's usual
recipe are drawn from TensorFlow's random ops (seed them with
`keras.utils.set_random_seed`). Bind the flag with `functools.partial`:

    ds.map(functools.partial(preprocess_reid, training=True))
"""

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NORMALIZATIONS = ("imagenet", "symmetric")


def _as_rgb(image):
    """uint8 `(h, w, 3)` from uint8 pixels or encoded bytes."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    elif image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return tf.ensure_shape(image, (None, None, 3))


def _normalize(image, normalization):
    """Float pixels in [0, 255] to the model's input range."""
    if normalization == "imagenet":
        return (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    if normalization == "symmetric":
        return image / 127.5 - 1.0
    raise ValueError(
        f"`normalization` must be one of {_NORMALIZATIONS}; got {normalization!r}."
    )


def random_erasing(image, probability=0.5, area=(0.02, 0.4), aspect=(0.3, 3.3)):
    """Random erasing (Zhong et al., AAAI 2020), Algorithm 1.

    With probability `probability`, one rectangle of area `S_e = uniform(area)
    * H * W` and aspect ratio `r_e = uniform(aspect)` (height `sqrt(S_e *
    r_e)`, width `sqrt(S_e / r_e)`) is placed uniformly inside the image and
    filled with uniform random pixel values (the paper's RE-R). As in the
    paper, rectangles that do not fit are redrawn, up to 100 times; all 100
    are drawn at once and the first that fits is used. `keras.layers.
    RandomErasing` has no aspect-ratio range, hence this function.

    Args:
        image: float tensor `(height, width, channels)` with pixels in
            [0, 255].
        probability: chance of erasing. Defaults to `0.5`.
        area: range of the erased fraction of the image. Defaults to
            `(0.02, 0.4)`.
        aspect: range of the height / width ratio. Defaults to `(0.3, 3.3)`.

    Returns:
        The image with at most one rectangle erased.

    Reference:
        Zhong et al., "Random Erasing Data Augmentation", AAAI 2020.
    """
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    s_e = tf.random.uniform((100,), *area) * h * w
    r_e = tf.random.uniform((100,), *aspect)
    h_e = tf.math.floor(tf.sqrt(s_e * r_e))
    w_e = tf.math.floor(tf.sqrt(s_e / r_e))
    fits = (h_e < h) & (w_e < w) & (h_e > 0) & (w_e > 0)
    first = tf.argmax(tf.cast(fits, tf.int32))
    do_erase = tf.reduce_any(fits) & (tf.random.uniform(()) < probability)
    he, we = h_e[first], w_e[first]
    y0 = tf.math.floor(tf.random.uniform(()) * (h - he + 1.0))
    x0 = tf.math.floor(tf.random.uniform(()) * (w - we + 1.0))
    rows = tf.range(h)[:, None]
    cols = tf.range(w)[None, :]
    inside = (rows >= y0) & (rows < y0 + he) & (cols >= x0) & (cols < x0 + we)
    inside = (inside & do_erase)[:, :, None]
    noise = tf.random.uniform(shape, 0.0, 255.0)
    return tf.where(inside, noise, image)


def preprocess_face(image, label, *, training=False, size=(112, 112)):
    """Face recognition input: resize to 112x112 and scale to [-1, 1].

    The input is expected to be an aligned face crop (as MS1M, CASIA-WebFace
    and LFW exports are); it is resized, not cropped. At train time it is
    flipped left-right at random.

    Args:
        image: uint8 `(height, width, channels)` or encoded bytes.
        label: passed through.
        training: whether to augment. Defaults to `False`.
        size: output `(height, width)`. Defaults to `(112, 112)`.

    Returns:
        `(image, label)`, image float32 `(112, 112, 3)` in [-1, 1].

    Example:

    >>> ds = ds.map(keras_circle.data.preprocess_face)
    """
    image = tf.image.resize(tf.cast(_as_rgb(image), tf.float32), size)
    if training:
        image = tf.image.random_flip_left_right(image)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return _normalize(image, "symmetric"), label


def preprocess_reid(
    image, label, *, training=False, size=(256, 128), normalization="imagenet"
):
    """Person re-ID input: 256x128 (height x width) with the usual augmentations.

    Test time: resize to `size`, normalise. Train time (the "bag of tricks"
    recipe of Luo et al. 2019): resize, random left-right flip, zero-pad 10
    pixels on each side and randomly crop back to `size`, random erasing
    (p=0.5, area 0.02-0.4, aspect 0.3-3.3, random pixel fill), normalise.

    Args:
        image: uint8 `(height, width, channels)` or encoded bytes.
        label: passed through.
        training: whether to augment. Defaults to `False`.
        size: output `(height, width)`. Defaults to `(256, 128)`.
        normalization: `"imagenet"` (ImageNet mean and standard deviation,
            for ImageNet-pretrained backbones) or `"symmetric"` ([-1, 1]).
            Defaults to `"imagenet"`.

    Returns:
        `(image, label)`, image float32 `(256, 128, 3)`.
    """
    image = tf.image.resize(tf.cast(_as_rgb(image), tf.float32), size)
    if training:
        image = tf.image.random_flip_left_right(image)
        image = tf.pad(image, [[10, 10], [10, 10], [0, 0]])
        image = tf.image.random_crop(image, (*size, 3))
        image = random_erasing(image)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return _normalize(image, normalization), label


def preprocess_fine_grained(
    image, label, *, training=False, size=224, resize=256, normalization="imagenet"
):
    """Fine-grained retrieval input (CUB, Cars196, SOP): 224x224 crops.

    Train time: a random resized crop (Inception style: 8-100% of the area,
    aspect 3/4-4/3, drawn by `tf.image.sample_distorted_bounding_box`) resized
    to `size`, and a random left-right flip. Test time: the shorter side is
    resized to `resize` (aspect kept) and the centre `size` x `size` is cut.

    Args:
        image: uint8 `(height, width, channels)` or encoded bytes.
        label: passed through.
        training: whether to augment. Defaults to `False`.
        size: output side. Defaults to `224`.
        resize: shorter side before the centre crop at test time. Defaults
            to `256`.
        normalization: `"imagenet"` or `"symmetric"` ([-1, 1]). Defaults to
            `"imagenet"`.

    Returns:
        `(image, label)`, image float32 `(224, 224, 3)`.
    """
    image = _as_rgb(image)
    if training:
        begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.zeros((1, 0, 4)),
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.slice(image, begin, crop_size)
        image = tf.image.resize(tf.cast(image, tf.float32), (size, size))
        image = tf.image.random_flip_left_right(image)
    else:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = resize / tf.reduce_min(shape)
        new_shape = tf.cast(tf.math.round(shape * scale), tf.int32)
        image = tf.image.resize(tf.cast(image, tf.float32), new_shape)
        offset = (new_shape - size) // 2
        image = tf.image.crop_to_bounding_box(image, offset[0], offset[1], size, size)
    image = tf.ensure_shape(tf.clip_by_value(image, 0.0, 255.0), (size, size, 3))
    return _normalize(image, normalization), label


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "preprocess_face",
    "preprocess_fine_grained",
    "preprocess_reid",
    "random_erasing",
]
