"""Face recognition: the recipe `keras_circle.tasks.face_recognition`, trained and evaluated.

python examples/face_recognition/train.py [CONFIG] [--workdir DIR] [--set key=value]
"""

from keras_circle import tasks
from keras_circle.tasks.face_recognition import RECIPE

train_and_evaluate = tasks.example_train_and_evaluate(RECIPE)

if __name__ == "__main__":
    tasks.example_main(RECIPE)
