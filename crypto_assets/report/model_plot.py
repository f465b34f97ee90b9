"""The report's model figure: each model's primary metric against its naive baseline, per MLflow
run, with registered versions, gate rejections and the champion marked."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from crypto_assets.report.model_history import REPORT_MODELS, ModelSeries
from crypto_assets.report.plots import DEFAULT_DPI, message_figure, new_figure

MODELS_SIZE = (14.0, 9.0)


def plot_model_performance(series: list[ModelSeries], dpi: int = DEFAULT_DPI, note: str | None = None) -> Figure:
    """One panel per model: each MLflow run's primary metric (solid) and its naive baseline
    (dashed) in run order, labelled with the registered version and the run's start time; the
    champion is a gold star, versions the gate rejected are hollow."""
    if not series:
        return message_figure(MODELS_SIZE, "Model performance vs baseline",
                              note or "No MLflow model runs yet.\nTrain the models (training_job) to see them here.", dpi)
    by_exp: dict[str, list[ModelSeries]] = {}
    for s in series:
        by_exp.setdefault(s.experiment, []).append(s)
    n = len(by_exp)
    ncols = 1 if n == 1 else 2
    nrows = (n + ncols - 1) // ncols
    fig = new_figure(MODELS_SIZE, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    palette = ["#1565c0", "#2e7d32", "#c62828", "#6a1b9a", "#ef6c00"]
    for ax, (exp, group) in zip(axes, by_exp.items(), strict=False):
        metric = group[0].metric
        # x is the run's position in the experiment (runs can be seconds or days apart)
        order = sorted({(p.time, p.run_id) for s in group for p in s.points})
        pos = {rid: i for i, (_, rid) in enumerate(order)}
        for k, s in enumerate(group):
            color = palette[k % len(palette)]
            x = np.array([pos[p.run_id] for p in s.points], dtype=float)
            v = np.array([p.value for p in s.points])
            b = np.array([np.nan if p.baseline is None else p.baseline for p in s.points])
            label = s.name.replace("price_model_", "") if exp == "price_model" else "model"
            ax.plot(x, v, color=color, linewidth=1.8, label=f"{label} {metric}", zorder=3)
            rejected = np.array([p.gate == "rejected" for p in s.points])
            ax.scatter(x[~rejected], v[~rejected], color=color, s=40, zorder=4)
            if rejected.any():
                ax.scatter(x[rejected], v[rejected], facecolors="white", edgecolors=color, s=40, linewidths=1.5, zorder=4)
            if np.isfinite(b).any():
                ax.plot(x, b, color=color, linestyle="--", linewidth=1.2, alpha=0.6, marker=".",
                        label=f"{label} baseline", zorder=2)
            if len(s.points) <= 25:
                for p, xi in zip(s.points, x, strict=True):
                    if p.version:
                        ax.annotate(f"v{p.version}", (xi, p.value), textcoords="offset points", xytext=(0, 7),
                                    ha="center", fontsize=8, color=color)
            champ = s.champion
            if champ is not None:
                cx = pos[champ.run_id]
                ax.scatter(cx, champ.value, marker="*", s=320, color="#fdd835", edgecolors="black", linewidths=1.0, zorder=6)
                ax.annotate(f"champion v{champ.version}", (cx, champ.value), textcoords="offset points",
                            xytext=(10, -14), fontsize=9, fontweight="bold", zorder=7)
        better = "higher" if group[0].higher_is_better else "lower"
        ax.set_title(f"{exp} — {metric} ({better} is better)", fontsize=12, fontweight="bold", loc="left")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda val, _pos, order=order: order[int(val)][0].strftime("%m-%d\n%H:%M")
            if 0 <= val < len(order) and val == int(val) else ""))
        ax.set_xlim(-0.5, max(len(order) - 0.5, 1.5))
        ax.margins(y=0.15)
        extra = [Line2D([], [], marker="*", color="#fdd835", markeredgecolor="black", linestyle="", markersize=14, label="champion"),
                 Line2D([], [], marker="o", color="grey", markerfacecolor="white", linestyle="", label="gate rejected")]
        h, _ = ax.get_legend_handles_labels()
        ax.legend(handles=h + extra, fontsize=8, loc="best", framealpha=0.85)
    for ax in axes[len(by_exp):]:
        ax.set_axis_off()
    missing = [m for m in REPORT_MODELS if m not in by_exp]
    sub = "Model performance vs naive baseline, per MLflow run (x: run start, UTC)"
    if missing:
        sub += f"   ·   no runs yet: {', '.join(missing)}"
    fig.suptitle(sub, fontsize=13, fontweight="bold")
    return fig

