"""`CosineProxies`: one learnable proxy per class, cosine similarities out."""

import keras
from keras import ops

from keras_circle import similarity


@keras.saving.register_keras_serializable(package="keras_circle")
class CosineProxies(keras.layers.Layer):
    """Cosine similarity between embeddings and one learnable proxy per class.

    The layer owns a `(num_classes, dim)` matrix of class proxies (the weight
    matrix of the last layer in the paper's class-level setting). It maps
    embeddings to the cosine between each L2-normalised embedding and each
    L2-normalised proxy; `ClassCircleLoss` (or a baseline such as
    `AMSoftmaxLoss`) turns those cosines into a loss. Serving drops this layer
    and keeps the embedder.

    The similarity math always runs in float32: under a `mixed_float16` or
    `mixed_bfloat16` policy the layer still reads its proxies and its inputs
    in float32 (its own dtype policy defaults to `"float32"`), because cosines
    scaled by `gamma=256` lose their ordering in half precision.

    Formula:

    ```python
    cosine[i, c] = dot(x[i], w[c]) / (norm(x[i]) * norm(w[c]))
    ```

    Args:
        num_classes: Number of classes (proxies). Must be positive.
        kernel_initializer: Initializer of the proxies. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: Optional regularizer of the proxies. Defaults to
            `None`.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...). `dtype`
            defaults to `"float32"` whatever the global policy.

    Input shape:
        `(batch_size, dim)`.

    Output shape:
        `(batch_size, num_classes)`, float32 cosines in `[-1, 1]`.

    Example:

    ```python
    inputs = keras.Input((128,))
    cosine = keras_circle.CosineProxies(10)(inputs)
    model = keras.Model(inputs, cosine)
    model.compile("sgd", loss=keras_circle.ClassCircleLoss())
    ```

    Reference:
        Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
        Optimization", CVPR 2020, section 3.1 (class-level labels).
    """

    def __init__(
        self,
        num_classes,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(
                "`num_classes` must be a positive int; "
                f"received {num_classes!r} of type {type(num_classes).__name__}."
            )
        if num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive int; received {num_classes}."
            )
        self.num_classes = num_classes
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=2)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                "`CosineProxies` needs a known embedding size: the last axis "
                f"of its input is None (input shape {tuple(input_shape)})."
            )
        self.proxies = self.add_weight(
            name="proxies",
            shape=(self.num_classes, dim),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            dtype="float32",
        )
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: dim})

    def call(self, inputs):
        inputs = ops.cast(inputs, "float32")
        proxies = ops.cast(self.proxies, "float32")
        return ops.matmul(
            similarity.l2_normalize(inputs),
            ops.transpose(similarity.l2_normalize(proxies)),
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], self.num_classes), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
            }
        )
        return config
