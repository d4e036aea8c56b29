from helpers.plots import plot_class_balance


def test_class_balance_has_one_labelled_bar_per_split_and_label():
    counts = {"train": {"negative": 3, "positive": 5}, "test": {"negative": 1, "positive": 2}}
    fig = plot_class_balance(counts, title="T")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [3, 1, 5, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["train", "test"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["negative", "positive"]
    assert ax.get_title() == "T"
