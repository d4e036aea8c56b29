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
