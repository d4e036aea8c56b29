"""Figures from numbers handed in: no model is loaded here. Each function returns the matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt


def plot_class_balance(counts: dict[str, dict[str, int]], title: str = "Class balance"):
    """Grouped bars: one group per split (train, eval, test), one bar per label, counts on top."""
    splits = list(counts)
    labels = list(next(iter(counts.values())))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, label in enumerate(labels):
        xs = [s + (i - (len(labels) - 1) / 2) * width for s in range(len(splits))]
        bars = ax.bar(xs, [counts[s][label] for s in splits], width, label=label)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylabel("examples")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_loss_curves(curves: dict[str, list], title: str = "Training loss", ylabel: str = "loss"):
    """One line per run: `curves` maps a name to [(step, loss), ...]."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, points in curves.items():
        steps, losses = zip(*points) if points else ((), ())
        ax.plot(steps, losses, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
