"""keras_circle: paper-exact Circle loss and deep metric learning for Keras 3.

The losses and `CosineProxies` use `keras.ops` only and run on every Keras
backend; `keras_circle.data`, `keras_circle.distribute` and
`keras_circle.export` are TensorFlow-only and are imported on use.
"""

from keras_circle import metrics  # noqa: F401
from keras_circle.layers import CosineProxies
from keras_circle.losses import AMSoftmaxLoss
from keras_circle.losses import ArcFaceLoss
from keras_circle.losses import CircleLoss
from keras_circle.losses import ClassCircleLoss
from keras_circle.losses import CosFaceLoss
from keras_circle.losses import TripletLoss
from keras_circle.losses import UnifiedPairLoss
from keras_circle.presets import PRESETS
from keras_circle.presets import circle_loss_for
from keras_circle.xbm import CrossBatchMemory
from keras_circle.xbm import XBMCircleLoss

__version__ = "0.1.0"
