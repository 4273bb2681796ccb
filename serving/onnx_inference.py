"""Edge inference: embed (and search) image files with an exported ONNX embedder.

Needs onnxruntime, NumPy and Pillow only (no TensorFlow, no keras_circle).
The preprocessing spec is read from the model's metadata, as written by
`keras_circle.export.export_onnx`, and applied as
`keras_circle.data.test_time_image` does: decode, resize bilinearly with
TensorFlow's sampling (half-pixel centres, no antialiasing; the whole image,
or the shorter side then a centre crop), clip, reverse to BGR if asked,
`(pixel - mean) / std`. A file exported with a gallery also returns the
top-k `ids` and `scores`.

Usage:

    python serving/onnx_inference.py embedder.onnx cat.png dog.jpg
"""

import argparse
import json

import numpy as np
import onnxruntime

# Metadata of exports before the spec had mean/std: scale -> (mean, std).
_OLD_SCALES = {
    "zero_one": (0.0, 255.0),
    "minus_one_to_one": (127.5, 127.5),
    "none": (0.0, 1.0),
}
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _axis_weights(in_size, out_size):
    """Lower/upper source indices and weights of TF's bilinear resize on one axis."""
    scale = np.float32(in_size) / np.float32(out_size)
    where = (np.arange(out_size, dtype=np.float32) + 0.5) * scale - 0.5
    floor = np.floor(where)
    lower = np.maximum(floor, 0).astype(int)
    upper = np.minimum(np.ceil(where), in_size - 1).astype(int)
    return lower, upper, (where - floor).astype(np.float32)[:, None]


def resize_bilinear(pixels, height, width):
    """`tf.image.resize(pixels, (height, width))` (bilinear) in NumPy.

    Args:
        pixels: float32 `(h, w, c)`.
        height: Output height.
        width: Output width.

    Returns:
        float32 `(height, width, c)`.
    """
    top, bottom, dy = _axis_weights(pixels.shape[0], height)
    left, right, dx = _axis_weights(pixels.shape[1], width)
    rows = pixels[top] + (pixels[bottom] - pixels[top]) * dy[..., None]
    return rows[:, left] + (rows[:, right] - rows[:, left]) * dx


def preprocess(pixels, spec):
    """uint8 pixels `(h, w, c)` to a model input, as the spec says."""
    pixels = np.asarray(pixels, dtype=np.float32)
    height, width = spec["size"]
    if spec.get("resize", "resize") == "resize":
        if pixels.shape[:2] != (height, width):
            pixels = resize_bilinear(pixels, height, width)
    else:
        shape = np.array(pixels.shape[:2], dtype=np.float32)
        scale = np.float32(spec["shorter_side"]) / shape.min()
        new = np.round(shape * scale).astype(int)
        pixels = resize_bilinear(pixels, *new)
        top, left = (new - (height, width)) // 2
        pixels = pixels[top : top + height, left : left + width]
    pixels = np.clip(pixels, 0.0, 255.0)
    if "mean" in spec:
        mean, std, bgr = spec["mean"], spec["std"], spec["bgr"]
    else:
        (mean, std), bgr = _OLD_SCALES[spec["scale"]], False
    if bgr:
        pixels = pixels[..., ::-1]
    mean = np.asarray(mean, dtype=np.float32)
    return (pixels - mean) / np.asarray(std, dtype=np.float32)


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
        outputs = {output.name: output for output in self.session.get_outputs()}
        self.output = (
            outputs["embedding"] if "embedding" in outputs else outputs.popitem()[1]
        )
        self.has_search = "ids" in outputs and "scores" in outputs

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
        """Decodes and preprocesses image files as the metadata's spec says."""
        from PIL import Image

        if not self.preprocessing:
            raise ValueError("This model's metadata has no image preprocessing.")
        channels = self.preprocessing["channels"]
        batch = []
        for path in paths:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert(_MODES[channels]))
            pixels = pixels.reshape(*pixels.shape[:2], channels)
            batch.append(preprocess(pixels, self.preprocessing))
        return np.stack(batch).astype(np.float32)

    def search(self, images):
        """`(ids, scores)` of the gallery stored in the file, best first.

        Raises:
            ValueError: If the file was exported without a gallery.
        """
        if not self.has_search:
            raise ValueError("This ONNX file has no search outputs (no gallery).")
        images = np.asarray(images, dtype="float32")
        return tuple(self.session.run(["ids", "scores"], {self.input.name: images}))

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
    if embedder.has_search:
        ids, scores = embedder.search(embedder.load_images(args.images))
        for path, row, row_scores in zip(args.images, ids, scores, strict=True):
            found = ", ".join(
                f"{i} ({s:.4f})" for i, s in zip(row, row_scores, strict=True)
            )
            print(f"{path}: {found}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
