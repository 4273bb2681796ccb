"""Loss functions (per-sample vectors) and `keras.losses.Loss` classes."""

from keras_circle.losses.base import IntegerLabelLoss
from keras_circle.losses.baselines import AMSoftmaxLoss
from keras_circle.losses.baselines import ArcFaceLoss
from keras_circle.losses.baselines import CosFaceLoss
from keras_circle.losses.baselines import UnifiedPairLoss
from keras_circle.losses.baselines import am_softmax_loss
from keras_circle.losses.baselines import arcface_loss
from keras_circle.losses.baselines import unified_pair_loss
from keras_circle.losses.class_level import ClassCircleLoss
from keras_circle.losses.class_level import class_circle_loss
from keras_circle.losses.pairwise import CircleLoss
from keras_circle.losses.pairwise import pairwise_circle_loss
from keras_circle.losses.triplet import TripletLoss
from keras_circle.losses.triplet import triplet_loss
