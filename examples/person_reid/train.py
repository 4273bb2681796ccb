"""Person re-identification: the recipe `keras_circle.tasks.person_reid`, trained and evaluated.

python examples/person_reid/train.py [CONFIG] [--workdir DIR] [--set key=value]
"""

from keras_circle import tasks
from keras_circle.tasks.person_reid import RECIPE

train_and_evaluate = tasks.example_train_and_evaluate(RECIPE)

if __name__ == "__main__":
    tasks.example_main(RECIPE)
