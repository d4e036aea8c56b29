from helpers.plots import plot_class_balance


def test_class_balance_has_one_labelled_bar_per_split_and_label():
    counts = {"train": {"negative": 3, "positive": 5}, "test": {"negative": 1, "positive": 2}}
    fig = plot_class_balance(counts, title="T")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [3, 1, 5, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["train", "test"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["negative", "positive"]
    assert ax.get_title() == "T"


def test_loss_curves_draw_one_line_per_run():
    from helpers.plots import plot_loss_curves

    fig = plot_loss_curves({"masked": [(1, 2.0), (2, 1.0)], "unmasked": [(1, 3.0), (2, 2.5), (3, 2.0)]})
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["masked", "unmasked"]
    assert list(lines[1].get_xdata()) == [1, 2, 3] and list(lines[0].get_ydata()) == [2.0, 1.0]


def test_training_plot_has_train_eval_landmarks_and_schedule():
    from helpers.plots import plot_training

    log = [{"step": 1, "loss": 2.0, "learning_rate": 1e-4}, {"step": 2, "loss": 1.0, "learning_rate": 5e-5},
           {"step": 2, "eval_loss": 1.5}]
    fig = plot_training(log)
    loss_ax, lr_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["landmarks of the usual text", "train loss",
                                                                   "eval loss (held out)"]
    assert list(lr_ax.get_lines()[0].get_ydata()) == [1e-4, 5e-5]


def test_confusion_plot_shows_counts_and_hides_an_empty_invalid_column():
    from helpers.plots import plot_confusion

    fig = plot_confusion({"labels": ["neg", "pos", "invalid"], "matrix": [[3, 1, 0], [2, 4, 0]]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["3", "1", "2", "4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["neg", "pos"]
    fig = plot_confusion({"labels": ["neg", "pos", "invalid"], "matrix": [[3, 0, 1], [2, 4, 0]]})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["neg", "pos", "invalid"]


def test_format_comparison_has_four_panels_with_one_bar_per_format():
    from helpers.plots import plot_comparison

    rows = [{"format": f, "size_mb": s, "load_seconds": 1.0, "reviews_per_second": r, "accuracy": a}
            for f, s, r, a in (("HF fp32", 538, 5, 0.7), ("GGUF Q4_K_M", 105, 20, 0.69))]
    fig = plot_comparison(rows)
    assert [ax.get_title() for ax in fig.axes] == ["size on disk (MB)", "load time (s)", "reviews per second", "accuracy"]
    assert [p.get_height() for p in fig.axes[0].patches] == [538, 105]
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == ["HF fp32", "GGUF Q4_K_M"]


def test_comparison_by_method_skips_missing_values():
    from helpers.plots import plot_comparison

    rows = [{"method": "a", "macro_f1": 0.5, "median_latency_s": None}, {"method": "b", "macro_f1": 0.7,
                                                                        "median_latency_s": 0.2}]
    fig = plot_comparison(rows, [("macro_f1", "macro-F1"), ("median_latency_s", "latency")], name_key="method")
    assert [p.get_height() for p in fig.axes[1].patches] == [0, 0.2]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]


def test_reliability_diagram_has_the_diagonal_and_one_line_per_model():
    from helpers.plots import plot_reliability

    cal = {"ece": 0.1, "bins": [{"confidence": 0.5, "accuracy": 0.4, "count": 3}]}
    fig = plot_reliability({"base": cal, "fine-tuned": cal})
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["perfectly calibrated", "base (ECE 0.100)", "fine-tuned (ECE 0.100)"]


def test_learning_curve_plot_has_one_line_per_method_and_the_human_ceiling():
    from helpers.plots import plot_learning_curve

    points = [{"method": "LLM", "size": 144, "macro_f1": 0.6}, {"method": "TF-IDF", "size": 48, "macro_f1": 0.5},
              {"method": "LLM", "size": 48, "macro_f1": 0.4}, {"method": "TF-IDF", "size": 144, "macro_f1": 0.55},
              {"method": "SetFit", "size": 24, "macro_f1": 0.3}]
    fig = plot_learning_curve(points, {"macro_f1_mean": 0.75, "macro_f1_sd": 0.02})
    lines = fig.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines[:3]] == [[48, 144], [48, 144], [24]]  # sorted by size
    assert list(lines[0].get_ydata()) == [0.4, 0.6]
    assert list(lines[3].get_ydata()) == [0.75, 0.75]  # the human line
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][-1] == "one human rater (0.750 ± 0.020)"


def test_ranked_plot_puts_the_best_on_top_with_the_human_line():
    from helpers.plots import plot_ranked

    rows = [{"method": "b", "kind": "classic", "macro_f1": 0.5}, {"method": "a", "kind": "encoder", "macro_f1": 0.7}]
    fig = plot_ranked(rows, {"macro_f1_mean": 0.75, "macro_f1_sd": 0.02})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a"]  # the top bar is the last tick
    assert list(ax.get_lines()[0].get_xdata()) == [0.75, 0.75]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["encoder", "classic", "one human rater (0.750 ± 0.020)"]
    assert len(plot_ranked(rows).axes[0].get_lines()) == 0  # no human data, no line


def test_layer_grid_draws_one_line_per_k_and_rings_the_chosen_point():
    from helpers.plots import plot_layer_grid

    points = [{"layers": k, "rows": n, "train_seconds": n / (10 if k else 5), "eval_macro_f1": 0.5 + n / 10000}
              for k in (0, 10) for n in (480, 960)]
    ax = plot_layer_grid(points, chosen={"layers": 10, "rows": 960}).axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["every block", "top 10 blocks"]
    assert list(lines[1].get_xdata()) == [48.0, 96.0] and list(lines[0].get_ydata()) == [0.548, 0.596]
    ringed = ax.collections[0].get_offsets()
    assert ringed.tolist() == [[96.0, 0.596]] and "960" in [t.get_text() for t in ax.texts]
