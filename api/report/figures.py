"""The report's plots as inline SVG (matplotlib, imported only when a plot is drawn, so
that starting the API does not import it)."""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BEFORE_COLOR, AFTER_COLOR = "#8a8f98", "#1f6feb"
CLEAN_COLOR, ROBUST_COLOR = "#2da44e", "#cf222e"


# rcParams are one global dict: the few settings the plots need are set under this lock.
_PLOT_LOCK = threading.Lock()


def epoch_curves_svg(history: Sequence[Mapping[str, Any]], *, best_epoch: int | None) -> str:
    """Three panels: validation accuracy (clean, robust), training loss, learning rate."""
    epochs = [row.get("epoch") for row in history]
    figure = _figure(width=9.6, height=3.0)
    accuracy, loss, rate = figure.subplots(1, 3)
    for key, label, color in (
        ("val_clean_accuracy", "val clean", CLEAN_COLOR),
        ("val_robust_accuracy", "val robust", ROBUST_COLOR),
    ):
        accuracy.plot(epochs, _series(history, key), marker="o", label=label, color=color)
    accuracy.set(title="validation accuracy", xlabel="epoch", ylim=(-0.02, 1.02))
    accuracy.legend(loc="best", fontsize=8)
    loss.plot(epochs, _series(history, "train_loss"), marker="o", color="#6e40c9")
    loss.set(title="training loss", xlabel="epoch")
    rate.plot(epochs, _series(history, "lr"), marker="o", color="#bc4c00")
    rate.set(title="learning rate (end of epoch)", xlabel="epoch")
    for axes in (accuracy, loss, rate):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        if best_epoch is not None:
            axes.axvline(best_epoch, color="#57606a", linestyle="--", linewidth=1)
    return _svg(figure, "epochs")


def epsilon_curves_svg(
    curves: Mapping[str, Mapping[float, float]],
    *,
    intervals: Mapping[str, Mapping[float, tuple[float, float]]] | None = None,
) -> str:
    """Accuracy against the attack's radius, one line per evaluation (before, after), each in
    a band of its 95% intervals where `intervals` has them."""
    figure = _figure(width=5.6, height=3.2)
    axes = figure.subplots()
    colors = {"before": BEFORE_COLOR, "after": AFTER_COLOR}
    for label, curve in curves.items():
        points = sorted(curve.items())
        axes.plot(
            [eps for eps, _ in points],
            [acc for _, acc in points],
            marker="o",
            label=label,
            color=colors.get(label),
        )
        band = (intervals or {}).get(label) or {}
        shaded = [(eps, band[eps]) for eps, _ in points if eps in band]
        if shaded:
            axes.fill_between(
                [eps for eps, _ in shaded],
                [low for _, (low, _high) in shaded],
                [high for _, (_low, high) in shaded],
                color=colors.get(label),
                alpha=0.15,
                linewidth=0,
            )
    axes.set(xlabel="epsilon", ylabel="accuracy", ylim=(-0.02, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _svg(figure, "epsilon")


def _figure(*, width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas, set here: no GUI backend, no global pyplot state
    return figure


def _svg(figure: Figure, name: str) -> str:
    from matplotlib import rc_context

    buffer = io.StringIO()
    # Text as text (no glyph definitions) and ids salted by plot, so that several SVGs can
    # share one HTML document without clashing ids.
    with _PLOT_LOCK, rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    values = []
    for row in history:
        value = row.get(key)
        values.append(float(value) if isinstance(value, int | float) else math.nan)
    return values
