"""REST client for an embedder served by TensorFlow Serving.

Follows TF Serving's predict API: `POST /v1/models/NAME[/versions/N]:predict`
with either the row format `{"instances": [...]}` (answer in `predictions`)
or the columnar format `{"inputs": ...}` (answer in `outputs`). Binary
inputs travel as `{"b64": "..."}`. Standard library and NumPy only.

Usage:

    python serving/rest_client.py --url http://localhost:8501 \
        --model circle_embedder cat.png dog.jpg
"""

import argparse
import base64
import json
import urllib.error
import urllib.request

import numpy as np

INPUT_NAME = "image"
BYTES_INPUT_NAME = "image_bytes"
OUTPUT_NAME = "embedding"
SERVING_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"


class PredictError(RuntimeError):
    """The server refused the request (its error message is kept)."""


class PredictClient:
    """Calls the predict endpoint of one served embedder.

    Args:
        url: Server root of TF Serving's REST port. Defaults to
            `"http://localhost:8501"`.
        model: Model name from `models.config`. Defaults to
            `"circle_embedder"`.
        version: Integer version to pin. Defaults to `None`: the server's
            choice (its latest loaded version).
        timeout: Seconds to wait for an answer. Defaults to `30.0`.

    Example:

    >>> client = PredictClient("http://localhost:8501", "circle_embedder")
    >>> embeddings = client.predict(images)  # float32 (batch, H, W, C)
    """

    def __init__(
        self,
        url="http://localhost:8501",
        model="circle_embedder",
        version=None,
        timeout=30.0,
    ):
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.timeout = timeout

    @property
    def path(self):
        """The predict path, e.g. `/v1/models/circle_embedder/versions/2:predict`."""
        path = f"/v1/models/{self.model}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        return path + ":predict"

    def request_body(self, images=None, *, image_bytes=None, format="instances"):
        """The JSON body for float images or for encoded image bytes.

        Args:
            images: Preprocessed images, float32 `(batch, H, W, C)`, for the
                `serving_default` signature. Defaults to `None`.
            image_bytes: List of encoded JPEG/PNG images (bytes) for the
                `serving_bytes` signature. Defaults to `None`.
            format: `"instances"` (row) or `"inputs"` (columnar). Defaults to
                `"instances"`.

        Returns:
            A JSON-able dict.

        Raises:
            ValueError: Unless exactly one of `images`, `image_bytes` is given
                with a usable shape, or for an unknown `format`.
        """
        if format not in ("instances", "inputs"):
            raise ValueError(
                f"`format` must be 'instances' or 'inputs'; got {format!r}."
            )
        if (images is None) == (image_bytes is None):
            raise ValueError("Give exactly one of `images` and `image_bytes`.")
        if images is not None:
            images = np.asarray(images, dtype="float32")
            if images.ndim != 4:
                raise ValueError(
                    f"`images` must be (batch, height, width, channels); got shape "
                    f"{images.shape}."
                )
            signature, name, values = SERVING_SIGNATURE, INPUT_NAME, images.tolist()
        else:
            if isinstance(image_bytes, (bytes, bytearray)):
                raise ValueError("`image_bytes` must be a list of encoded images.")
            values = [{"b64": base64.b64encode(b).decode("ascii")} for b in image_bytes]
            signature, name = BYTES_SIGNATURE, BYTES_INPUT_NAME
        if format == "instances":
            # One named input: each instance may be the bare tensor.
            return {"signature_name": signature, "instances": values}
        return {"signature_name": signature, "inputs": {name: values}}

    def predict(self, images=None, *, image_bytes=None, format="instances"):
        """Sends one predict request; returns float32 `(batch, dim)` embeddings.

        Args:
            images: See `request_body`. Defaults to `None`.
            image_bytes: See `request_body`. Defaults to `None`.
            format: See `request_body`. Defaults to `"instances"`.

        Returns:
            The unit-norm embeddings as a NumPy array.

        Raises:
            PredictError: If the server answers with an error or cannot be
                reached.
        """
        body = self.request_body(images, image_bytes=image_bytes, format=format)
        request = urllib.request.Request(
            self.url + self.path,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise PredictError(
                f"HTTP {error.code} from {self.url + self.path}: "
                f"{_error_message(error.read())}"
            ) from None
        except urllib.error.URLError as error:
            raise PredictError(f"Cannot reach {self.url}: {error.reason}") from None
        result = answer["predictions" if format == "instances" else "outputs"]
        if isinstance(result, dict):
            result = result[OUTPUT_NAME]
        elif result and isinstance(result[0], dict):
            result = [row[OUTPUT_NAME] for row in result]
        return np.asarray(result, dtype="float32")


def _error_message(raw):
    try:
        return json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace")


def main(argv=None):
    """Embeds image files through the server and prints their cosine matrix."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="JPEG/PNG files.")
    parser.add_argument("--url", default="http://localhost:8501")
    parser.add_argument("--model", default="circle_embedder")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument(
        "--format", choices=["instances", "inputs"], default="instances"
    )
    args = parser.parse_args(argv)
    client = PredictClient(args.url, args.model, args.version)
    encoded = []
    for name in args.images:
        with open(name, "rb") as f:
            encoded.append(f.read())
    embeddings = client.predict(image_bytes=encoded, format=args.format)
    print(f"{len(embeddings)} embeddings of size {embeddings.shape[1]}")
    np.set_printoptions(precision=4, suppress=True)
    print("cosine similarities:")
    print(embeddings @ embeddings.T)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
