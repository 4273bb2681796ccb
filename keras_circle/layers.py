"""`CosineProxies`: one learnable proxy per class, cosine similarities out."""

import keras
from keras import ops

from keras_circle import _checks
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
        num_classes: Number of classes (proxies), a positive int (numpy
            integers too).
        kernel_initializer: Initializer of the proxies. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: Optional regularizer of the proxies. Defaults to
            `None`.
        sample_fraction: Partial FC (An et al. 2021): in training, compare
            each batch with its own classes plus this share of the other
            classes, drawn afresh each step, so that 100k to 1M classes fit in
            one machine's memory. `None` (or `1.0`) compares with every class.
            Defaults to `None`.
        seed: Seed of the class sampling. Defaults to `None`.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...). `dtype`
            defaults to `"float32"` whatever the global policy.

    Called with `labels` (integer class ids `(batch_size,)`, a second model
    input), the layer returns the sampled layout that
    `ClassCircleLoss(sampled=True)` reads: `(batch_size, batch_size + R)`
    cosines whose column `j < batch_size` is the proxy of sample `j`'s class
    (so column `i` is the target of row `i`) and whose last
    `R = round(sample_fraction * num_classes)` columns are proxies of classes
    drawn without replacement from those not in the batch. Entries that
    would count a class twice for a row (a batch class seen again in a later
    column, the row's own class in another column, a drawn batch class) are
    `-inf`: no softmax sees them. Outside training, or with
    `sample_fraction=None`, the layout holds every class once, and the
    sampled loss equals the full one exactly. Only the gathered proxy rows
    get a gradient (a sparse update). Labels must be class ids in
    `[0, num_classes)`: others raise a `ValueError`, or, where no check can
    raise (XLA, `jax.jit`), make every cosine NaN. Without `labels` the layer
    returns the full cosines, as for retrieval or `predict`.

    Input shape:
        `(batch_size, dim)`, and optionally `labels` `(batch_size,)`.

    Output shape:
        `(batch_size, num_classes)` float32 cosines in `[-1, 1]`; with
        `labels`, `(batch_size, batch_size + R)` (`-inf` where masked).

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
        sample_fraction=None,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = _checks.check_count(num_classes, "num_classes")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        if sample_fraction is not None:
            sample_fraction = float(sample_fraction)
            if not 0.0 < sample_fraction <= 1.0:
                raise ValueError(
                    "`sample_fraction` must be in (0, 1] or None; "
                    f"received {sample_fraction}."
                )
        self.sample_fraction = sample_fraction
        self.seed = seed
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if sample_fraction is not None else None
        )
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

    def call(self, inputs, labels=None, training=None):
        inputs = similarity.l2_normalize(ops.cast(inputs, "float32"))
        proxies = ops.cast(self.proxies, "float32")
        if labels is None:
            return ops.matmul(inputs, ops.transpose(similarity.normalize_rows(proxies)))
        labels, factor = self._checked_labels(labels, inputs)
        batch = ops.shape(labels)[0]
        present = ops.scatter(
            ops.expand_dims(labels, 1), ops.ones_like(labels), (self.num_classes,)
        )
        present = present > 0
        fraction = self.sample_fraction if training else None
        if fraction is None or fraction >= 1.0:
            drawn = ops.arange(self.num_classes, dtype="int32")
        else:
            # Uniform scores with the batch's classes pushed below every other
            # class: top_k draws without replacement from the others.
            scores = keras.random.uniform((self.num_classes,), seed=self.seed_generator)
            scores = ops.where(present, -1.0, scores)
            count = max(1, round(fraction * self.num_classes))
            _, drawn = ops.top_k(scores, count)
            drawn = ops.cast(drawn, "int32")
        columns = ops.concatenate([labels, drawn], axis=0)
        # A gather of the proxies: only these rows get a (sparse) gradient.
        gathered = similarity.normalize_rows(ops.take(proxies, columns, axis=0))
        cosine = ops.matmul(inputs, ops.transpose(gathered))
        index = ops.arange(batch, dtype="int32")
        same = ops.equal(labels[:, None], labels[None, :])
        seen_before = ops.any(
            ops.logical_and(same, index[None, :] < index[:, None]), axis=1
        )
        keep_batch = ops.logical_or(
            ops.equal(index[:, None], index[None, :]),
            ops.logical_and(ops.logical_not(same), ops.logical_not(seen_before)[None]),
        )
        keep_drawn = ops.logical_not(ops.take(present, drawn, axis=0))
        keep_drawn = ops.broadcast_to(keep_drawn[None, :], (batch, ops.shape(drawn)[0]))
        keep = ops.concatenate([keep_batch, keep_drawn], axis=1)
        # NaN everywhere (and NaN gradients) if a label check failed where it
        # cannot raise (XLA, `jax.jit`).
        return _checks.poison(ops.where(keep, cosine, float("-inf")), factor)

    def _checked_labels(self, labels, inputs):
        """int32 class ids `(batch_size,)` in `[0, num_classes)`, and the
        poison factor of the run-time checks (see `keras_circle._checks`)."""
        if hasattr(labels, "shape") and len(labels.shape) == 0:
            raise ValueError(
                "`labels` must hold one class id per embedding, shape "
                "(batch_size,); received a scalar."
            )
        labels, whole = _checks.integer_labels(labels, "labels")
        same = _checks.same_batch(labels, inputs, "labels", "inputs")
        in_range = _checks.labels_in_range(
            labels, self.num_classes, "labels", "the `num_classes` of this layer"
        )
        # Out-of-range ids would index the proxies and the scatter out of
        # bounds, which XLA clamps silently: clip them, the poison tells.
        labels = ops.clip(ops.cast(labels, "int32"), 0, self.num_classes - 1)
        return labels, _checks.combine(whole, same, in_range)

    def compute_output_shape(self, input_shape, labels_shape=None):
        if labels_shape is not None:
            return (input_shape[0], None)
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs, labels=None, training=None):
        width = self.num_classes if labels is None else None
        return keras.KerasTensor((inputs.shape[0], width), "float32")

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
                "sample_fraction": self.sample_fraction,
                "seed": self.seed,
            }
        )
        return config
