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

# The landmarks the usual course text promises ("~1.5 at step 0, ~0.3 by step 50, ~0.1 after 100"), drawn faintly so
# learners can compare; notebook 02 explains why this data does not reach them.
LANDMARKS = [(0, 1.5), (50, 0.3), (100, 0.1)]


def plot_training(log_history: list[dict], landmarks=LANDMARKS):
    """Two panels: train and eval loss against step (with faint landmarks), and the learning-rate schedule."""
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r]
    lrs = [(r["step"], r["learning_rate"]) for r in log_history if "learning_rate" in r]
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(11, 3.5), gridspec_kw={"width_ratios": [2, 1]})
    if landmarks:
        ax.plot(*zip(*landmarks), linestyle=":", color="grey", alpha=0.5, label="landmarks of the usual text")
    if train:
        ax.plot(*zip(*train), marker="o", markersize=3, label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="s", markersize=4, label="eval loss (held out)")
    ax.set(xlabel="step", ylabel="loss (answer tokens only)", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if lrs:
        ax_lr.plot(*zip(*lrs), color="tab:green")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="Schedule")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_confusion(confusion: dict, title: str = "Confusion matrix", ax=None):
    """A confusion matrix from `classification_metrics(...)["confusion"]` (rows gold, columns predicted)."""
    import numpy as np

    matrix = np.array(confusion["matrix"])
    columns = confusion["labels"][:matrix.shape[1]]
    if matrix[:, -1].sum() == 0 and columns[-1] == "invalid":  # hide an empty invalid column
        matrix, columns = matrix[:, :-1], columns[:-1]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30)
    ax.set_yticks(range(matrix.shape[0]), confusion["labels"][:matrix.shape[0]])
    ax.set(xlabel="predicted", ylabel="gold", title=title)
    if fig:
        fig.tight_layout()
    return fig or ax.figure


FORMAT_PANELS = [("size_mb", "size on disk (MB)"), ("load_seconds", "load time (s)"),
                 ("reviews_per_second", "reviews per second"), ("accuracy", "accuracy")]


def plot_comparison(rows: list[dict], panels=FORMAT_PANELS, name_key: str = "format"):
    """One bar panel per (key, title), one bar per row named by `name_key`; a missing value draws no bar."""
    names = [r[name_key] for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        values = [r.get(key) if r.get(key) is not None else 0 for r in rows]
        bars = ax.bar(range(len(rows)), values, color=[f"C{i}" for i in range(len(rows))])
        ax.bar_label(bars, fmt="%.2f" if max(values, default=0) <= 1 else "%.1f", fontsize=8)
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_reliability(calibrations: dict):
    """Reliability diagram: accuracy against confidence per bin, one line per model, the diagonal = calibrated.
    `calibrations` maps a name to `expected_calibration_error(...)`'s result."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for name, cal in calibrations.items():
        ax.plot([b["confidence"] for b in cal["bins"]], [b["accuracy"] for b in cal["bins"]], marker="o",
                label=f"{name} (ECE {cal['ece']:.3f})")
    ax.set(xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title="Reliability of label-scoring probabilities")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _human_band(ax, human: dict | None, vertical: bool):
    """The human ceiling as a line (mean over draws) with a band of ± one standard deviation."""
    if not human:
        return
    mean, sd = human["macro_f1_mean"], human["macro_f1_sd"]
    span, line = (ax.axvspan, ax.axvline) if vertical else (ax.axhspan, ax.axhline)
    span(mean - sd, mean + sd, color="grey", alpha=0.15)
    line(mean, color="grey", linestyle="--", label=f"one human rater ({mean:.3f} ± {sd:.3f})")


def _finished(fig, ax, **labels):
    """A line chart's common ending: its labels and title, a light grid, a small legend bottom right."""
    ax.set(**labels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_learning_curve(points: list[dict], human: dict | None = None, title: str = "Learning curve",
                        ylabel: str = "macro-F1 (test)"):
    """Macro-F1 against the number of training examples (log scale), one line per method, with the human ceiling.
    `points` are {"method", "size", "macro_f1"} rows."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    methods = list(dict.fromkeys(p["method"] for p in points))
    for i, method in enumerate(methods):
        mine = sorted((p["size"], p["macro_f1"]) for p in points if p["method"] == method)
        ax.plot(*zip(*mine), marker="osD^v<>"[i % 7], label=method)
    _human_band(ax, human, vertical=False)
    ax.set_xscale("log")
    ax.minorticks_off()
    sizes = sorted({p["size"] for p in points})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    return _finished(fig, ax, xlabel="training examples (balanced)", ylabel=ylabel, title=title)


def plot_distillation_curve(points: list[dict], teacher: float, upper: list[dict] | None = None):
    """The student's test macro-F1 against the unlabelled rows it learned from (`points`: {"size", "macro_f1"}; size 0
    is MiniLM on the gold rows only), with its teacher's macro-F1 as a dashed line and, where the pool's labels are
    known, MiniLM on those gold labels (`upper`, the same form)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot([p["size"] for p in points], [p["macro_f1"] for p in points], marker="o", label="student (teacher's probabilities)")
    if upper:
        ax.plot([p["size"] for p in upper], [p["macro_f1"] for p in upper], marker="s", linestyle=":",
                label="MiniLM on the pool's gold labels")
    ax.axhline(teacher, color="grey", linestyle="--", label=f"teacher (fine-tuned LLM), {teacher:.3f}")
    return _finished(fig, ax, xlabel="unlabelled rows labelled by the teacher (0: the gold rows only)",
                     ylabel="macro-F1 (test)", title="Distillation: what the pool is worth")


def plot_layer_grid(points: list[dict], chosen: dict | None = None):
    """Speed against accuracy: eval macro-F1 against training seconds, one line per "LoRA on the top K blocks"
    setting, each point labelled with its training rows; `chosen` ({"layers", "rows"}) is ringed."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, layers in enumerate(sorted({p["layers"] for p in points}, key=lambda k: (k != 0, -k))):
        mine = sorted((p for p in points if p["layers"] == layers), key=lambda p: p["rows"])
        ax.plot([p["train_seconds"] for p in mine], [p["eval_macro_f1"] for p in mine], marker="osD^v<>"[i % 7],
                label="every block" if layers == 0 else f"top {layers} blocks")
        for p in mine:
            ax.annotate(f"{p['rows']}", (p["train_seconds"], p["eval_macro_f1"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    for p in points:
        if chosen and (p["layers"], p["rows"]) == (chosen["layers"], chosen["rows"]):
            ax.scatter([p["train_seconds"]], [p["eval_macro_f1"]], s=240, facecolors="none", edgecolors="k",
                       label="the workshop's setting")
    return _finished(fig, ax, xlabel="training seconds (one epoch; rows next to each point)",
                     ylabel="macro-F1 (eval split)", title="LoRA on the top K blocks: speed against accuracy")


KIND_COLOURS = {"fine-tuned LLM": "C3", "LLM": "C1", "encoder": "C0", "classic": "C2"}


def plot_ranked(rows: list[dict], human: dict | None = None, title: str = "macro-F1 on the test split"):
    """Horizontal bars of macro-F1, best at the top, coloured by kind of method, with the human ceiling."""
    rows = sorted(rows, key=lambda r: r["macro_f1"])
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.32 * len(rows)))
    bars = ax.barh(range(len(rows)), [r["macro_f1"] for r in rows],
                   color=[KIND_COLOURS.get(r.get("kind"), "C7") for r in rows])
    ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_yticks(range(len(rows)), [r["method"] for r in rows], fontsize=8)
    _human_band(ax, human, vertical=True)
    ax.set(xlabel="macro-F1", xlim=(0, 1), title=title)
    kinds = [k for k in KIND_COLOURS if any(r.get("kind") == k for r in rows)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLOURS[k], label=k) for k in kinds]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
