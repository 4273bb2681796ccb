"""Edge inference: embed image files with an exported ONNX embedder.

Needs onnxruntime, NumPy and Pillow only (no TensorFlow, no keras_circle).
The preprocessing (size, channels, scaling) is read from the model's
metadata, as written by `keras_circle.export.export_onnx`.

Usage:

    python serving/onnx_inference.py embedder.onnx cat.png dog.jpg
"""

import argparse
import json

import numpy as np
import onnxruntime

# pixel value (uint8 range) -> pixel * factor + offset, as in keras_circle.export
SCALES = {
    "zero_one": (1.0 / 255.0, 0.0),
    "minus_one_to_one": (1.0 / 127.5, -1.0),
    "none": (1.0, 0.0),
}
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class OnnxEmbedder:
    """An onnxruntime session over an exported embedder.

    Args:
        path: The `.onnx` file.
        providers: onnxruntime execution providers. Defaults to `None`:
            `["CPUExecutionProvider"]`.

    Example:

    >>> embedder = OnnxEmbedder("embedder.onnx")
    >>> embeddings = embedder.embed_files(["a.png", "b.png"])
    """

    def __init__(self, path, providers=None):
        self.session = onnxruntime.InferenceSession(
            path, providers=providers or ["CPUExecutionProvider"]
        )
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {key: json.loads(value) for key, value in props.items()}
        self.preprocessing = self.metadata.get("preprocessing")
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]

    def embed(self, images):
        """Embeds preprocessed float32 images `(batch, H, W, C)`.

        Raises:
            ValueError: If the shape does not match the model's input.
        """
        images = np.asarray(images, dtype="float32")
        expected = self.input.shape
        if images.ndim != len(expected) or any(
            isinstance(want, int) and got != want
            for got, want in zip(images.shape, expected, strict=True)
        ):
            raise ValueError(
                f"Wrong image shape {images.shape}: the model expects "
                f"{tuple(expected)} (`{self.input.name}`)."
            )
        return self.session.run([self.output.name], {self.input.name: images})[0]

    def load_images(self, paths):
        """Decodes, resizes (bilinear) and scales image files as the metadata says."""
        from PIL import Image

        if not self.preprocessing:
            raise ValueError("This model's metadata has no image preprocessing.")
        height, width = self.preprocessing["size"]
        mode = _MODES[self.preprocessing["channels"]]
        factor, offset = SCALES[self.preprocessing["scale"]]
        batch = []
        for path in paths:
            with Image.open(path) as image:
                image = image.convert(mode)
                if image.size != (width, height):
                    image = image.resize((width, height), Image.BILINEAR)
                pixels = np.asarray(image, dtype="float32")
            batch.append(pixels.reshape(height, width, -1))
        return np.stack(batch) * factor + offset

    def embed_files(self, paths):
        """Embeds image files; returns float32 `(len(paths), dim)`."""
        return self.embed(self.load_images(paths))


def main(argv=None):
    """Prints the embedding size and the cosine matrix of the given images."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="Exported .onnx file.")
    parser.add_argument("images", nargs="+", help="Image files.")
    args = parser.parse_args(argv)
    embedder = OnnxEmbedder(args.model)
    embeddings = embedder.embed_files(args.images)
    print(f"{len(embeddings)} embeddings of size {embeddings.shape[1]}")
    np.set_printoptions(precision=4, suppress=True)
    print("cosine similarities:")
    print(embeddings @ embeddings.T)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
