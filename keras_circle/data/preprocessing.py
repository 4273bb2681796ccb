"""Per-family image preprocessing for `dataset.map` (TensorFlow only, extra `[tensorflow]`).

Each function takes `(image, label)`, where `image` is a uint8 tensor
`(height, width, channels)` or the encoded bytes of a JPEG/PNG file (a scalar
string), and returns `(float32 image, label)`. Grey images are repeated to
three channels. With `training=False` the output is a deterministic function
of the input; with `training=True` the augmentations of each field's usual
recipe are drawn from TensorFlow's random ops (seed them with
`keras.utils.set_random_seed`). Bind the flag with `functools.partial`:

    ds.map(functools.partial(preprocess_reid, training=True))

The test-time paths are `test_time_image(image, spec)` with the spec of
`face_spec`, `reid_spec` or `fine_grained_spec` (see
`keras_circle.data.conventions`): the function the exported `serving_bytes`
signature runs, so served embeddings equal evaluated ones.
"""

import tensorflow as tf

from keras_circle.data.conventions import canonical_normalization
from keras_circle.data.conventions import check_spec
from keras_circle.data.conventions import make_spec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_pixels(image, channels=3):
    """uint8 `(h, w, channels)` from uint8 pixels or encoded bytes.

    Grey pixels are repeated to RGB when 3 channels are asked for.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=channels, expand_animations=False)
    else:
        if image.shape.rank == 2:
            image = image[..., None]
        if image.shape[-1] == 1 and channels == 3:
            image = tf.image.grayscale_to_rgb(image)
    return tf.ensure_shape(image, (None, None, channels))


def normalize(image, spec):
    """Float pixels in [0, 255] to the model's input, as `spec` says."""
    if spec["bgr"]:
        image = image[..., ::-1]
    mean = tf.constant(spec["mean"], tf.float32)
    std = tf.constant(spec["std"], tf.float32)
    return (image - mean) / std


def resize_image(image, spec):
    """Float pixels resized by the spec's policy; `(H, W, C)` out."""
    height, width = spec["size"]
    if spec["resize"] == "resize":
        return tf.image.resize(image, (height, width))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = spec["shorter_side"] / tf.reduce_min(shape)
    new_shape = tf.cast(tf.math.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape)
    offset = (new_shape - (height, width)) // 2
    return tf.image.crop_to_bounding_box(image, offset[0], offset[1], height, width)


def test_time_image(image, spec):
    """The test-time preprocessing of one image, as `spec` says.

    Decode, resize, clip to [0, 255], normalise: the function the
    evaluation pipeline maps over test images and the exported
    `serving_bytes` signature runs on each request.

    Args:
        image: uint8 `(height, width, channels)` or `(height, width)`, or
            encoded JPEG/PNG/GIF/BMP bytes (a scalar string).
        spec: A preprocessing spec (`keras_circle.data.make_spec`).

    Returns:
        float32 `(H, W, C)`.

    Example:

    >>> spec = keras_circle.data.fine_grained_spec()
    >>> x = keras_circle.data.test_time_image(tf.io.read_file("bird.jpg"), spec)
    """
    spec = check_spec(spec)
    image = decode_pixels(image, spec["channels"])
    image = resize_image(tf.cast(image, tf.float32), spec)
    image = tf.clip_by_value(image, 0.0, 255.0)
    height, width = spec["size"]
    image = tf.ensure_shape(image, (height, width, spec["channels"]))
    return normalize(image, spec)


def test_time_preprocess(spec):
    """`(image, label) -> (test_time_image(image, spec), label)` for `dataset.map`."""
    spec = check_spec(spec)
    return lambda image, label: (test_time_image(image, spec), label)


def face_spec(size=(112, 112), normalization="symmetric"):
    """The test-time spec of `preprocess_face`: resize, `normalization`."""
    return make_spec(list(size), normalization=normalization)


def reid_spec(size=(256, 128), normalization="imagenet"):
    """The test-time spec of `preprocess_reid`: resize, `normalization`."""
    return make_spec(list(size), normalization=normalization)


def fine_grained_spec(size=224, resize=256, normalization="imagenet"):
    """The test-time spec of `preprocess_fine_grained`: shorter side, centre crop."""
    return make_spec(
        size,
        normalization=normalization,
        resize="resize_shorter_then_center_crop",
        shorter_side=resize,
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


def preprocess_face(
    image, label, *, training=False, size=(112, 112), normalization="symmetric"
):
    """Face recognition input: resize to 112x112 and scale to [-1, 1].

    The input is expected to be an aligned face crop (as MS1M, CASIA-WebFace
    and LFW exports are); it is resized, not cropped. At train time it is
    flipped left-right at random.

    Args:
        image: uint8 `(height, width, channels)` or encoded bytes.
        label: passed through.
        training: whether to augment. Defaults to `False`.
        size: output `(height, width)`. Defaults to `(112, 112)`.
        normalization: A key of `keras_circle.data.NORMALIZATIONS` (an
            ImageNet backbone's own, `keras_circle.data.backbone_normalization`).
            Defaults to `"symmetric"`, [-1, 1].

    Returns:
        `(image, label)`, image float32 `(112, 112, 3)`, [-1, 1] by default.

    Example:

    >>> ds = ds.map(keras_circle.data.preprocess_face)
    """
    spec = face_spec(size, canonical_normalization(normalization))
    if not training:
        return test_time_image(image, spec), label
    image = tf.image.resize(tf.cast(decode_pixels(image), tf.float32), size)
    image = tf.image.random_flip_left_right(image)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return normalize(image, spec), label


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
        normalization: A key of `keras_circle.data.NORMALIZATIONS`:
            `"imagenet"` (ImageNet mean and standard deviation), `"symmetric"`
            ([-1, 1]), `"caffe"`, `"zero_one"` or `"none"`. Defaults to
            `"imagenet"`.

    Returns:
        `(image, label)`, image float32 `(256, 128, 3)`.
    """
    spec = reid_spec(size, canonical_normalization(normalization))
    if not training:
        return test_time_image(image, spec), label
    image = tf.image.resize(tf.cast(decode_pixels(image), tf.float32), size)
    image = tf.image.random_flip_left_right(image)
    image = tf.pad(image, [[10, 10], [10, 10], [0, 0]])
    image = tf.image.random_crop(image, (*size, 3))
    image = random_erasing(image)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return normalize(image, spec), label


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
        normalization: A key of `keras_circle.data.NORMALIZATIONS`, as in
            `preprocess_reid`. Defaults to `"imagenet"`.

    Returns:
        `(image, label)`, image float32 `(224, 224, 3)`.
    """
    spec = fine_grained_spec(size, resize, canonical_normalization(normalization))
    if not training:
        return test_time_image(image, spec), label
    image = decode_pixels(image)
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
    image = tf.ensure_shape(tf.clip_by_value(image, 0.0, 255.0), (size, size, 3))
    return normalize(image, spec), label


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "decode_pixels",
    "face_spec",
    "fine_grained_spec",
    "preprocess_face",
    "preprocess_fine_grained",
    "preprocess_reid",
    "random_erasing",
    "reid_spec",
    "test_time_image",
    "test_time_preprocess",
]
