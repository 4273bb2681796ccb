"""Fine-grained retrieval: the recipe `keras_circle.tasks.fine_grained_retrieval`, trained and evaluated.

python examples/fine_grained_retrieval/train.py [CONFIG] [--workdir DIR] [--set key=value]
"""

from keras_circle import tasks
from keras_circle.tasks.fine_grained_retrieval import RECIPE

train_and_evaluate = tasks.example_train_and_evaluate(RECIPE)

if __name__ == "__main__":
    tasks.example_main(RECIPE)
