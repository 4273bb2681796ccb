"""Figure plumbing shared by `keras_circle.plots` and `keras_circle.curves`.

Figures are drawn with matplotlib's object API on the Agg canvas: no
pyplot, no change to the global backend, safe in threads and on machines
without a display.
"""

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_axes(figsize=(5.5, 4.5)):
    """A new `(figure, axes)` on its own Agg canvas."""
    figure = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def save_figure(figure, path):
    """Writes `figure` as a PNG at `path` (folders created); returns `path`."""
    if path is None:
        raise ValueError("`path` is required: where to write the PNG; got None.")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def fitted_limits(low, high, *, floor=0.0, ceiling=100.0, room=0.0):
    """Axis limits around the data range `[low, high]`, padded, within bounds.

    The padding is 8% of the range (at least 2 units); `room` is extra space
    above for labels drawn over the points.
    """
    pad = max(2.0, 0.08 * (high - low))
    return max(floor, low - pad), min(ceiling + room, high + pad + room)
