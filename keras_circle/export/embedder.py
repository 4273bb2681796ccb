"""The embedder inside a trained model, loaded, checked and made float32.

The embedder rule: with `embedding_layer="name"`, the output of that layer
(or the named nested model itself); otherwise, when the model's last layer is
a `CosineProxies`, the tensor that layer receives; otherwise the model's
output. The chosen output must be one float tensor `(batch_size, dim)`.
"""

import os

import keras

from keras_circle.layers import CosineProxies


def load_model(model):
    """Returns `model` as a `keras.Model`, loading it if it is a path.

    Args:
        model: A `keras.Model` or the path of a `.keras` file.

    Returns:
        A `keras.Model`.

    Raises:
        TypeError: If `model` is neither.
        FileNotFoundError: If the path is not a file.
    """
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"`model` {path!r} is not a file; expected a keras.Model or the "
                "path of a .keras file."
            )
        # Importing keras_circle.layers above registered CosineProxies.
        return keras.saving.load_model(path, compile=False)
    if not isinstance(model, keras.Model):
        shown = repr(model)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TypeError(
            "`model` must be a keras.Model or the path of a .keras file; got "
            f"{shown} ({type(model).__name__})."
        )
    return model


def get_embedder(model, embedding_layer=None):
    """Returns the embedder inside `model`, following the module's rule.

    Args:
        model: A `keras.Model` or the path of a `.keras` file.
        embedding_layer: Name of the layer whose output is the embedding, or
            of a nested model that is the embedder. Defaults to `None`: the
            input of a final `CosineProxies`, else the model's output.

    Returns:
        A `keras.Model` mapping the model's input to `(batch_size, dim)`.

    Raises:
        TypeError: If `model` is not a `keras.Model` or a path.
        ValueError: If no single rank-2 float embedding output exists.

    Example:

    >>> embedder = keras_circle.export.get_embedder(trainer)
    """
    model = load_model(model)
    if embedding_layer is not None:
        layer = model.get_layer(embedding_layer)
        if isinstance(layer, keras.Model):
            return check_embedder(layer, f"layer {embedding_layer!r}")
        output = layer.output
    else:
        outputs = model_inputs_outputs(model)[1]
        if len(outputs) != 1:
            raise ValueError(
                f"Model {model.name!r} has {len(outputs)} outputs; pass "
                "`embedding_layer=` to name the one that is the embedding."
            )
        last = model.layers[-1]
        output = last.input if isinstance(last, CosineProxies) else outputs[0]
    if isinstance(output, (list, tuple)):
        raise ValueError(
            f"The embedding candidate of model {model.name!r} is {len(output)} "
            "tensors, not one; pass `embedding_layer=`."
        )
    inputs = model_inputs_outputs(model)[0]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    embedder = keras.Model(inputs, output, name=f"{model.name}_embedder")
    return check_embedder(embedder, f"model {model.name!r}")


def model_inputs_outputs(model):
    """`(inputs, outputs)` lists of a Functional or Sequential model."""
    try:
        return list(model.inputs), list(model.outputs)
    except (AttributeError, TypeError, ValueError):
        raise ValueError(
            f"Model {model.name!r} has no symbolic inputs/outputs (a subclassed "
            "model?); export a Functional or Sequential model."
        ) from None


def check_embedder(embedder, what):
    """Returns `embedder` if it has one input and one `(batch, dim)` output."""
    inputs, outputs = model_inputs_outputs(embedder)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"No usable embedding output in {what}: the embedder must have one "
            f"input and one output; got {len(inputs)} and {len(outputs)}."
        )
    output = outputs[0]
    if len(output.shape) != 2 or output.shape[-1] is None:
        raise ValueError(
            f"No usable embedding output in {what}: expected (batch_size, dim) "
            f"with a known dim, got shape {tuple(output.shape)}. Pass "
            "`embedding_layer=` to pick the embedding layer."
        )
    if not keras.backend.is_float_dtype(output.dtype):
        raise ValueError(f"No usable embedding output in {what}: dtype {output.dtype}.")
    return embedder


def as_float32(embedder):
    """A float32 copy of a mixed-precision embedder (same weights)."""

    def layers(model):
        for layer in model.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from layers(layer)

    if all(layer.compute_dtype == "float32" for layer in layers(embedder)):
        return embedder

    def to_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(
        embedder, clone_function=to_float32, recursive=True
    )
    clone.set_weights(embedder.get_weights())
    return clone
