"""keras_circle: paper-exact Circle loss and deep metric learning for Keras 3.

The losses and `CosineProxies` use `keras.ops` only and run on every Keras
backend; `keras_circle.data`, `keras_circle.distribute` and
`keras_circle.export` are TensorFlow-only and are imported on use.
"""

# First, before Keras imports TensorFlow: the command line starts quietly.
from keras_circle import console

console.quiet_cli_start()

from keras_circle import metrics  # noqa: E402, F401
from keras_circle.layers import CosineProxies  # noqa: E402
from keras_circle.losses import AMSoftmaxLoss  # noqa: E402
from keras_circle.losses import ArcFaceLoss  # noqa: E402
from keras_circle.losses import CircleLoss  # noqa: E402
from keras_circle.losses import ClassCircleLoss  # noqa: E402
from keras_circle.losses import CosFaceLoss  # noqa: E402
from keras_circle.losses import TripletLoss  # noqa: E402
from keras_circle.losses import UnifiedPairLoss  # noqa: E402
from keras_circle.presets import PRESETS  # noqa: E402
from keras_circle.presets import circle_loss_for  # noqa: E402
from keras_circle.xbm import CrossBatchMemory  # noqa: E402
from keras_circle.xbm import XBMCircleLoss  # noqa: E402

__version__ = "0.1.0"
