import dataclasses
import json

import pandas as pd
import pytest
from take_home import run_take_home
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.config import LABELS, make_config
from helpers.data import (DataError, balance_shift, balanced_sample, broken_copies, class_balance, conflict_sentence,
                          label_consistency_report, load_amazon, load_dataset, load_hutto, load_tweets,
                          parse_rater_ratings, prepare_splits, rating_to_label, read_labelled_file, read_or_message,
                          refusals_sentence, short_classes, split_by_group, split_tokens, to_chat_records)

GOOD_CSV = "text,label\n" + "".join(f"review {i} {lab},{lab.upper()}\n" for i in range(6) for lab in LABELS)


def read(path, **kw):
    return read_labelled_file(path, kw.pop("text_column", "text"), kw.pop("label_column", "label"), LABELS, **kw)


@pytest.mark.parametrize("rating, label", [(1.0, "positive"), (0.99, "neutral"), (-0.99, "neutral"),
                                           (-1.0, "negative"), (3.5, "positive"), (0.0, "neutral")])
def test_rating_threshold_edges(rating, label):
    assert rating_to_label(rating, 1.0) == label


def test_amazon_snippets_are_all_there_grouped_by_review():
    df = load_amazon()
    assert len(df) == 3708 and df["group"].nunique() == 300
    assert class_balance(df, LABELS) == {"negative": 941, "neutral": 1253, "positive": 1514}
    assert df["rating"].between(-4, 4).all()


def test_tweets_load_from_their_latin1_file():
    df = load_tweets()
    assert len(df) == 38158 and class_balance(df, LABELS) == {"negative": 16186, "neutral": 15018, "positive": 6954}


def test_split_keeps_each_group_on_one_side_and_follows_the_seed():
    df = load_amazon()
    rest, held = split_by_group(df, 0.25, seed=1)
    assert not set(rest["group"]) & set(held["group"]) and len(rest) + len(held) == len(df)
    assert held.equals(split_by_group(df, 0.25, seed=1)[1])
    assert not held.equals(split_by_group(df, 0.25, seed=2)[1])


def test_prepare_splits_is_balanced_and_leak_free(cfg):
    splits = prepare_splits(cfg)
    assert splits.sizes() == {"train": 48, "eval": 12, "test": 24}
    assert class_balance(splits.test, LABELS) == {lab: 8 for lab in LABELS}
    groups = [set(getattr(splits, name)["group"]) for name in ("train", "eval", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_too_few_rows_per_class_names_the_class():
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["positive", "positive", "negative", "neutral"]})
    with pytest.raises(DataError, match=r"too few rows per class \(negative: 1, neutral: 1; at least 2 needed\)"):
        balanced_sample(df, 6, LABELS, seed=0, min_per_class=2)


def test_user_csv_is_read_with_labels_normalised(write, cfg):
    df = read(write("mine.csv", GOOD_CSV))
    assert len(df) == 18 and set(df["label"]) == set(LABELS)
    assert df["group"].nunique() == 18  # no group column: each distinct text is its own group
    many = "text,label\n" + "".join(f"review {i} {lab},{lab}\n" for i in range(30) for lab in LABELS)
    cfg.dataset, cfg.train_size, cfg.eval_size, cfg.test_size, cfg.min_per_class = str(write("x.csv", many)), 12, 3, 6, 1
    assert prepare_splits(cfg).sizes() == {"train": 12, "eval": 3, "test": 6}


def test_group_column_is_used_when_present(write):
    df = read(write("g.csv", "text,label,group\na,positive,r1\nb,negative,r1\n"))
    assert list(df["group"]) == ["r1", "r1"]


def test_jsonl_with_other_column_names(write):
    path = write("mine.jsonl", '{"review": "great", "stars": "positive"}\n\n{"review": "bad", "stars": "negative"}\n')
    df = read(path, text_column="review", label_column="stars")
    assert list(df["label"]) == ["positive", "negative"]


def test_missing_column_names_file_columns_and_fix(write):
    path = write("mine.csv", "review,label\ngood,positive\n")
    with pytest.raises(DataError, match=r"mine\.csv: no column 'text'\. Columns found: review, label\. Set text_column="):
        read(path)


def test_unknown_label_names_the_row(write):
    path = write("mine.csv", "text,label\nfine,positive\ngreat,good\nmeh,ok\n")
    with pytest.raises(DataError, match=r"mine\.csv, row 2: unknown label 'good' \(2 such row\(s\)\)\. Labels must be "
                                        r"one of: negative, neutral, positive"):
        read(path)


def test_empty_text_names_the_row(write):
    path = write("mine.csv", 'text,label\nfine,positive\n"  ",negative\n')
    with pytest.raises(DataError, match=r"empty text in row 2"):
        read(path)


def test_non_utf8_file_names_the_line_and_the_fix(write):
    path = write("latin.csv", "text,label\nok,positive\n".encode() + "café,neutral\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv, line 3: the file is not utf-8 .*iconv.*encoding='latin-1'"):
        read(path)
    assert read(path, encoding="latin-1")["text"].iloc[1] == "café"


def test_empty_missing_and_broken_files(write, tmp_path):
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        read(write("empty.csv", "\n  \n"))
    with pytest.raises(DataError, match=r"no such file"):
        read(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: not valid JSON"):
        read(write("bad.jsonl", '{"text": "a", "label": "positive"}\n{oops\n'))


def test_hub_dataset_offline_says_what_to_do(cfg, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg.dataset = "hub:stanfordnlp/sst2"
    with pytest.raises(DataError, match=r"needs the internet; offline, use dataset='amazon'"):
        load_dataset(cfg)


def test_chat_records_are_conversational_prompt_completion(cfg):
    df = pd.DataFrame({"text": ["it broke"], "label": ["negative"]})
    [record] = to_chat_records(df, cfg)
    assert record == {"prompt": [{"role": "system", "content": cfg.system_prompt},
                                 {"role": "user", "content": "it broke"}],
                      "completion": [{"role": "assistant", "content": "negative"}]}


def test_consistency_report_finds_only_conflicting_duplicates():
    df = pd.DataFrame({"text": ["Good phone", "good  phone", "GOOD PHONE", "same", "same", "alone"],
                       "label": ["positive", "positive", "neutral", "negative", "negative", "neutral"]})
    report = label_consistency_report(df)
    assert len(report) == 1
    assert report.iloc[0]["labels"] == {"neutral": 1, "positive": 2} and report.iloc[0]["copies"] == 3


def test_hutto_corpora_load_with_groups_and_thresholded_labels():
    tweets = load_hutto("tweets")
    assert len(tweets) == 4200 and tweets["group"].nunique() == 4200  # a tweet stands alone
    assert (tweets.loc[tweets["rating"] >= 1.0, "label"] == "positive").all()
    amazon = load_hutto("amazon")
    assert amazon["group"].nunique() == 300 and amazon["group"].iloc[-1] == "amazon-309"  # reviews stay together
    with pytest.raises(DataError, match="Unknown corpus 'reddit'"):
        load_hutto("reddit")


def test_rater_ratings_file_skips_blank_lines_and_names_a_bad_line():
    assert parse_rater_ratings("1_1\t-0.9\t0.7\t[0, -1, -2]\r\n\r\n2\t1\t0\t[1, 1]\n", "f") == {"1_1": [0, -1, -2],
                                                                                           "2": [1, 1]}
    with pytest.raises(DataError, match="f, line 2: expected id, mean, sd and a list of ratings"):
        parse_rater_ratings("1\t0\t0\t[1]\n2\t0\t0\n", "f")


def test_a_header_only_file_says_it_has_no_rows(write):
    with pytest.raises(DataError, match=r"header_only.csv: no data rows after the header"):
        read(write("header_only.csv", "text,label\n"))


def test_a_two_class_file_asks_for_its_own_labels_and_then_works(write, cfg):
    import dataclasses

    two = "text,label\n" + "".join(f"review {i} {lab},{lab}\n" for i in range(12) for lab in ("negative", "positive"))
    path = write("two.csv", two)
    with pytest.raises(DataError, match=r"two.csv: no row has the label\(s\) neutral; the data's labels are: "
                                        r"negative positive. Set labels to those \(--labels negative positive"):
        prepare_splits(dataclasses.replace(cfg, dataset=str(path), min_per_class=0))
    two_class = dataclasses.replace(cfg, dataset=str(path), labels=("negative", "positive"), min_per_class=0,
                                    train_size=8, eval_size=2, test_size=4)
    splits = prepare_splits(two_class)
    assert class_balance(splits.test, two_class.labels) == {"negative": 2, "positive": 2}
    assert balanced_sample(splits.train, 4, LABELS, seed=0, min_per_class=0)["label"].isin(LABELS).all()


def test_jsonl_text_with_unicode_line_separators_is_one_record(write):
    rows = [{"text": f"first\u2028second\u2029third {i} {lab}", "label": lab} for i in range(2) for lab in LABELS]
    df = read(write("sep.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)))
    assert len(df) == 6 and df["text"].str.contains("\u2028").all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400) | st.text(max_size=300).map(str.encode) | st.lists(
    st.tuples(st.text(max_size=20), st.sampled_from(LABELS + ("", "POSITIVE", "good", "neutral "))), max_size=8).map(
    lambda rows: "text,label\n".encode() + b"".join(f'"{t.replace(chr(34), "")}",{lab}\n'.encode() for t, lab in rows)) |
    st.lists(st.dictionaries(st.sampled_from(["text", "label", "group"]), st.text(max_size=10) | st.sampled_from(LABELS)
                             | st.integers() | st.none()), max_size=6).map(
    lambda rows: b"".join(json.dumps(r).encode() + b"\n" for r in rows)),
       suffix=st.sampled_from([".csv", ".jsonl"]),
       encoding=st.sampled_from(["utf-8", "latin-1"]))
def test_any_bytes_give_a_frame_or_one_data_error(tmp_path, data, suffix, encoding):
    path = tmp_path / f"any{suffix}"
    path.write_bytes(data)
    try:
        df = read(path, encoding=encoding)
    except DataError as err:
        assert str(err).startswith(str(path))  # names the file, then the problem
        return
    assert list(df.columns) == ["text", "label", "group", "rating"] and len(df) > 0
    assert df["label"].isin(LABELS + ("",)).all() and (df["text"].str.strip() != "").all()  # "": unlabelled


def test_a_long_review_keeps_its_beginning_and_fits_the_training_length(cfg):
    from helpers.data import fit_frame, fit_review, review_budget
    from helpers.model import load_tokenizer

    tokenizer = load_tokenizer(cfg)
    budget = review_budget(tokenizer, cfg)
    frame = tokenizer.apply_chat_template([{"role": "system", "content": cfg.system_prompt},
                                           {"role": "user", "content": ""}, {"role": "assistant", "content": "negative"}],
                                          tokenize=False)
    assert budget == cfg.max_length - len(tokenizer(frame, add_special_tokens=False)["input_ids"]) - 2
    long = "The start matters. " + "and then it went on " * 400  # ~2,000 tokens
    fitted = fit_review(long, tokenizer, cfg)
    assert long.startswith(fitted) and fitted.startswith("The start matters.")
    assert budget - 3 <= len(tokenizer(fitted, add_special_tokens=False)["input_ids"]) <= budget
    assert fit_review("short and sweet", tokenizer, cfg) == "short and sweet"
    df, report = fit_frame(pd.DataFrame({"text": ["short", long], "label": ["positive", "negative"]}), tokenizer, cfg)
    assert list(df["text"]) == ["short", fitted] and report["shortened"] == 1 and report["reviews"] == 2
    assert report["longest_tokens"] > 1500 and report["tokens_cut"] == report["longest_tokens"] - budget
    import dataclasses

    with pytest.raises(DataError, match=r"max_length=20 leaves .* tokens for a review"):
        review_budget(tokenizer, dataclasses.replace(cfg, max_length=20))


def test_the_split_report_names_a_rare_class_and_oversampling_fills_only_the_training_share(write, cfg):
    import dataclasses

    from helpers.data import split_report, split_sentence

    rows = [(f"review {i} {lab}", lab) for lab, n in (("negative", 60), ("neutral", 9), ("positive", 60))
            for i in range(n)]
    path = write("rare.csv", "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    rare = dataclasses.replace(cfg, dataset=str(path), train_size=48, eval_size=6, test_size=24, min_per_class=1,
                               oversample=False)
    df = load_dataset(rare)
    splits = prepare_splits(rare, df)
    report = {r["label"]: r for r in split_report(df, splits, rare)}
    assert report["neutral"]["available"] == 9 and report["neutral"]["train"] < 16 and report["neutral"]["train_short"]
    assert report["positive"]["train"] == 16 and report["positive"]["train_short"] == 0
    said = split_sentence(list(report.values()), rare)
    assert said.startswith("Too few rows for an equal share: neutral (9 rows") and "Set oversample=True" in said
    default = dataclasses.replace(rare, oversample=make_config("smoke").oversample)  # the default fills it
    filled = prepare_splits(default, df)
    assert class_balance(filled.train, LABELS)["neutral"] == 16  # drawn again up to its share
    assert filled.test.equals(splits.test)  # the test split is never filled
    distinct = report["neutral"]["train"]
    assert filled.train.loc[filled.train["label"] == "neutral", "text"].nunique() == distinct
    said = split_sentence(split_report(df, filled, default), default)
    assert f"neutral (9 rows in all) got 16 training rows ({distinct} distinct)" in said and "Set it to False" in said


@pytest.mark.slow
def test_split_seed_fixes_the_split_while_the_training_seed_varies(cfg):
    import dataclasses

    same = prepare_splits(dataclasses.replace(cfg, seed=cfg.seed + 1))  # split_seed was fixed when cfg was made
    moved = prepare_splits(make_config("smoke", run_dir=cfg.run_dir, seed=cfg.seed + 1))  # None: follows the seed
    first = prepare_splits(cfg)
    assert cfg.split_seed == cfg.seed and list(same.test["text"]) == list(first.test["text"])
    assert list(same.train["text"]) == list(first.train["text"]) and list(moved.test["text"]) != list(first.test["text"])


def test_the_deep_profile_trains_two_epochs_over_the_whole_balanced_split():
    deep = make_config("deep")
    rows = len(prepare_splits(deep).train)
    assert rows > 2000 and deep.max_steps == 2 * -(-rows // deep.batch_size)


def test_split_tokens_counts_each_split_s_training_text(cfg):
    from helpers.model import load_tokenizer

    splits, tokenizer = prepare_splits(cfg), load_tokenizer(cfg)
    tokens = split_tokens(splits, tokenizer, cfg)
    record = to_chat_records(splits.test.head(1), cfg)[0]
    one = len(tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True,
                                            return_dict=True)["input_ids"])
    assert set(tokens) == {"train", "eval", "test"} and tokens["test"] >= one * len(splits.test) // 4 > 0
    longer = dataclasses.replace(splits, test=splits.test.assign(text=splits.test["text"] + " and then some more words"))
    assert split_tokens(longer, tokenizer, cfg)["test"] > tokens["test"]


def test_short_classes_count_distinct_training_rows(cfg):
    splits = prepare_splits(cfg)
    assert short_classes(splits, cfg) == []  # the smoke split is balanced
    few = splits.train[splits.train["label"] != "neutral"]
    neutral = splits.train[splits.train["label"] == "neutral"].head(3)
    drawn = pd.concat([few, neutral] + [neutral] * 5)  # oversampled draws fill the count, not the distinct rows
    assert short_classes(dataclasses.replace(splits, train=drawn), cfg) == ["neutral"]


def test_balance_shift_names_the_moves_and_the_class_that_grows_most():
    said = balance_shift({"negative": 10, "neutral": 20, "positive": 10}, {"negative": 15, "neutral": 8, "positive": 17},
                         "threshold 1 -> 0.5")
    assert said == ("threshold 1 -> 0.5: negative 10 -> 15 (+5), neutral 20 -> 8 (-12), positive 10 -> 17 (+7). "
                    "Positive grows most.")
    assert "moved no row" in balance_shift({"a": 1, "b": 2}, {"a": 1, "b": 2}, "same")


def test_conflicts_are_split_into_majorities_to_trust_and_ties_to_drop():
    df = pd.DataFrame({"text": ["Great", "great ", "great", "meh", "Meh", "fine"],
                       "label": ["positive", "positive", "negative", "neutral", "negative", "neutral"]})
    said = conflict_sentence(label_consistency_report(df), "toy")
    assert (said["texts"], said["rows"], said["with_a_majority"], said["tied"]) == (2, 5, 1, 1)
    assert said["median_majority_share"] == pytest.approx(2 / 3)
    assert "In 1 of them one label holds most copies (median share 67%)" in said["sentence"]
    assert "no text carries two labels" in conflict_sentence(label_consistency_report(df.tail(1)), "toy")["sentence"]


def test_broken_copies_are_each_refused_in_one_line_and_the_intact_one_is_read(tmp_path):
    cfg = make_config("smoke")
    df = pd.DataFrame({"text": [f"review {i}" for i in range(6)], "label": list(LABELS) * 2})
    results = {name: read_or_message(path, cfg) for name, path in broken_copies(df, tmp_path, cfg).items()}
    assert len(results["intact"][0]) == 6 and results["intact"][1] == ""
    assert "no column 'text'" in results["wrong column name"][1]
    assert "unknown label 'good'" in results["label 'good'"][1] and "empty text in row 6" in results["empty text"][1]
    said = refusals_sentence(results)
    assert said.startswith("The course read the intact file (6 rows) and refused 3 of 4 files") and "one line" in said
    assert "no broken file was caught" in refusals_sentence({"intact": results["intact"]})


@pytest.mark.slow
def test_the_take_home_cell_builds_the_course_s_record_and_renders_it(cfg, tmp_path):
    """Notebook 00's take-home cell on its own: the prompt/completion dict is the course's record for the same row,
    and the chat template renders it with the answer after the assistant header."""
    from helpers.model import resolve_model

    row = prepare_splits(cfg).train.head(1)
    inputs = dict(model_dir=str(resolve_model(cfg)), system_prompt=cfg.system_prompt, review=row["text"].iloc[0],
                  label=row["label"].iloc[0])
    out = run_take_home("00_setup_and_data", inputs, tmp_path / "script").stdout
    assert out.splitlines()[0] == str(to_chat_records(row, cfg)[0])
    assert f"<|im_start|>assistant\n{row['label'].iloc[0]}<|im_end|>" in out
    assert f"<|im_start|>system\n{cfg.system_prompt}<|im_end|>" in out
