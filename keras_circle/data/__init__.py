"""Data loading (TensorFlow only, extra `[tensorflow]`: tf.data, tf.image; TFDS: `[tfds]`).

Class-balanced P x K sampling (`pk_batches`), loaders for the fine-grained
(TFDS), person re-ID (Market-1501, MSMT17 folders) and face (identity
folders, LFW pairs) data sets, per-family preprocessing (the test-time
conventions shared with export: `conventions`), and a Fashion-MNIST
subset that ships with the package, from which small Market-1501 and
face folders are built on first use (`builtin_set`, `data_path`). The glyph benchmark loader
(`load_glyphs`) and the Fashion-MNIST subset compute in NumPy only, but
importing them through this package imports TensorFlow.
"""

from keras_circle.data.builtin import BUILTIN_SETS
from keras_circle.data.builtin import builtin_set
from keras_circle.data.builtin import data_path
from keras_circle.data.conventions import BACKBONES
from keras_circle.data.conventions import NORMALIZATIONS
from keras_circle.data.conventions import backbone_normalization
from keras_circle.data.conventions import check_spec
from keras_circle.data.conventions import make_spec
from keras_circle.data.faces import load_identity_folders
from keras_circle.data.faces import load_lfw_identities
from keras_circle.data.faces import load_lfw_pairs
from keras_circle.data.faces import sample_verification_pairs
from keras_circle.data.fashion_mnist import fashion_mnist_subset_info
from keras_circle.data.fashion_mnist import load_fashion_mnist_subset
from keras_circle.data.files import decode_image_file
from keras_circle.data.files import files_dataset
from keras_circle.data.fine_grained import FINE_GRAINED_SETS
from keras_circle.data.fine_grained import load_fine_grained
from keras_circle.data.glyphs import GlyphCacheError
from keras_circle.data.glyphs import Glyphs
from keras_circle.data.glyphs import cross_typeface_split
from keras_circle.data.glyphs import ensure_glyphs
from keras_circle.data.glyphs import glyph_metrics
from keras_circle.data.glyphs import glyphs_info
from keras_circle.data.glyphs import load_glyphs
from keras_circle.data.preprocessing import face_spec
from keras_circle.data.preprocessing import fine_grained_spec
from keras_circle.data.preprocessing import preprocess_face
from keras_circle.data.preprocessing import preprocess_fine_grained
from keras_circle.data.preprocessing import preprocess_reid
from keras_circle.data.preprocessing import random_erasing
from keras_circle.data.preprocessing import reid_spec
from keras_circle.data.preprocessing import test_time_image
from keras_circle.data.preprocessing import test_time_preprocess
from keras_circle.data.reid import ReidSplit
from keras_circle.data.reid import load_market1501
from keras_circle.data.reid import load_msmt17
from keras_circle.data.reid import parse_market1501_name
from keras_circle.data.reid import parse_msmt17_name
from keras_circle.data.sampler import ArraySource
from keras_circle.data.sampler import FileSource
from keras_circle.data.sampler import TfdsSource
from keras_circle.data.sampler import epoch_plan
from keras_circle.data.sampler import pk_batches
from keras_circle.data.sampler import pk_dataset_fn

__all__ = [
    "ArraySource",
    "BACKBONES",
    "BUILTIN_SETS",
    "FINE_GRAINED_SETS",
    "FileSource",
    "GlyphCacheError",
    "Glyphs",
    "NORMALIZATIONS",
    "ReidSplit",
    "TfdsSource",
    "backbone_normalization",
    "builtin_set",
    "check_spec",
    "cross_typeface_split",
    "data_path",
    "decode_image_file",
    "ensure_glyphs",
    "epoch_plan",
    "face_spec",
    "fashion_mnist_subset_info",
    "files_dataset",
    "fine_grained_spec",
    "glyph_metrics",
    "glyphs_info",
    "load_fashion_mnist_subset",
    "load_fine_grained",
    "load_glyphs",
    "load_identity_folders",
    "load_lfw_identities",
    "load_lfw_pairs",
    "load_market1501",
    "load_msmt17",
    "make_spec",
    "parse_market1501_name",
    "parse_msmt17_name",
    "pk_batches",
    "pk_dataset_fn",
    "preprocess_face",
    "preprocess_fine_grained",
    "preprocess_reid",
    "random_erasing",
    "reid_spec",
    "sample_verification_pairs",
    "test_time_image",
    "test_time_preprocess",
]
