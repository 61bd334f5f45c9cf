"""Charts for the HTML report, drawn with matplotlib into an SVG embedded as an ``<img>`` data URI.

An SVG inside ``<img>`` cannot run scripts or load anything, so even a label a student influenced
stays inert; matplotlib is imported only when a result actually has a chart.
"""

from __future__ import annotations

import base64
import io

from grader.contracts.result import Chart

MARKERS = ["o", "D", "*", "s", "^", "v", "P", "X"]
SIZES = {"o": 22, "D": 40, "*": 160, "s": 40, "^": 40, "v": 40, "P": 40, "X": 40}


def chart_svg(chart: Chart) -> bytes:
    """The chart as an SVG document (deterministic: no date in its metadata)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    for index, series in enumerate(chart.series):
        marker = MARKERS[index % len(MARKERS)]
        axes.scatter(
            [p.x for p in series.points],
            [p.y for p in series.points],
            marker=marker,
            s=SIZES[marker],
            label=series.name,
            alpha=0.85,
            zorder=2 + index,
        )
        for point in series.points:
            if point.label:
                axes.annotate(point.label, (point.x, point.y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes.set_xlabel(chart.x_label)
    axes.set_ylabel(chart.y_label)
    axes.set_title(chart.title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def chart_data_uri(chart: Chart) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(chart_svg(chart)).decode("ascii")
