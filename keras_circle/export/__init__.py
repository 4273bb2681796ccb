"""TensorFlow-only: export an embedder as a TF Serving SavedModel and as ONNX.

Both exporters take a trained model (a training model ending in a
`CosineProxies` head, a bare embedder, or the path of a `.keras` file), keep
the embedder, append L2 normalisation, compute in float32, verify the written
artifact against Keras, and only then publish it (a staged version folder is
renamed onto the next free version, an ONNX file is `os.replace`d), so a
failed export never touches what is already served.

One module per job: `embedder` (which part of the model is exported),
`fingerprint` (which embedder an export holds; the shape-change check),
`graph` (the float32 serving functions, preprocessing and verification),
`input_scaling` (whether the model rescales raw pixels itself), `gallery`
(the embeddings `serving_search` ranks),
`publish` (staging, version numbers, file modes; standard library only) and
`exporters` (the two public functions).
"""

from keras_circle.export.embedder import get_embedder
from keras_circle.export.exporters import MAX_OPSET
from keras_circle.export.exporters import MIN_OPSET
from keras_circle.export.exporters import export_onnx
from keras_circle.export.exporters import export_saved_model
from keras_circle.export.fingerprint import METADATA_PATH
from keras_circle.export.fingerprint import model_fingerprint
from keras_circle.export.gallery import fingerprint_id
from keras_circle.export.graph import BYTES_INPUT_NAME
from keras_circle.export.graph import BYTES_SIGNATURE
from keras_circle.export.graph import IDS_NAME
from keras_circle.export.graph import INPUT_NAME
from keras_circle.export.graph import OUTPUT_NAME
from keras_circle.export.graph import SCORES_NAME
from keras_circle.export.graph import SEARCH_SIGNATURE
from keras_circle.export.graph import SERVING_SIGNATURE
from keras_circle.export.graph import ExportVerificationError
from keras_circle.export.graph import default_preprocessing
from keras_circle.export.input_scaling import find_input_scaling
from keras_circle.export.publish import next_version
