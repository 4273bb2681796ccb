"""The paper's gamma and margin for its three task families (section 4.1)."""

import dataclasses

from keras_circle.losses.class_level import ClassCircleLoss
from keras_circle.losses.pairwise import CircleLoss


@dataclasses.dataclass(frozen=True)
class Preset:
    """Settings of one task family.

    Attributes:
        labels: `"class"` (a `CosineProxies` head and `ClassCircleLoss`) or
            `"pair"` (`CircleLoss` on embeddings).
        gamma: Scale factor.
        margin: Relaxation margin.
        datasets: The data sets the paper trains this family on.
    """

    labels: str
    gamma: float
    margin: float
    datasets: tuple

    def loss(self, **kwargs):
        """A loss instance with these settings (`kwargs` override them)."""
        cls = ClassCircleLoss if self.labels == "class" else CircleLoss
        return cls(**{"gamma": self.gamma, "margin": self.margin, **kwargs})


PRESETS = {
    "face_recognition": Preset("class", 256.0, 0.25, ("MS-Celeb-1M",)),
    "person_reid": Preset("class", 128.0, 0.25, ("Market-1501", "MSMT17")),
    "fine_grained_retrieval": Preset(
        "pair", 80.0, 0.4, ("CUB-200-2011", "Cars196", "Stanford Online Products")
    ),
}


def circle_loss_for(task, **kwargs):
    """The Circle loss of a task family with the paper's settings.

    Args:
        task: `"face_recognition"`, `"person_reid"` or
            `"fine_grained_retrieval"`.
        **kwargs: Overrides (`gamma`, `margin`, `reduction`, ...).

    Returns:
        A `ClassCircleLoss` (face recognition, person re-ID) or a `CircleLoss`
        (fine-grained retrieval).

    Example:

    ```python
    loss = keras_circle.circle_loss_for("person_reid")  # gamma 128, m 0.25
    ```
    """
    if task not in PRESETS:
        raise ValueError(f"`task` must be one of {sorted(PRESETS)}; received {task!r}.")
    return PRESETS[task].loss(**kwargs)
