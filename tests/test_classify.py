import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import classify
from helpers.classify import ClassifyError, classify_file, find_model, load_classifier

pytestmark = pytest.mark.slow  # notebooks, servers, llama.cpp or course runs: left out of make test-fast

ADDED = ["row", "predicted_label", "p_negative", "p_neutral", "p_positive"]


@pytest.fixture
def cfg(cfg):
    """The smoke profile on one thread: these tests share the machine."""
    cfg.threads = 1
    return cfg


@pytest.fixture
def hf_model(cfg):
    from helpers.model import resolve_model

    return Path(resolve_model(cfg))


@pytest.fixture
def tiny_q4(tiny_gguf):
    """The session's tiny model quantized to Q4_K_M by llama.cpp's own tools (tests/conftest.py)."""
    return tiny_gguf[3]


class Calls(list):
    fail_after = None


@pytest.fixture
def asked(monkeypatch):
    """Every batch of texts the model is asked to label. With `asked.fail_after = n` the model breaks after n
    batches, like a run that dies half-way."""
    real = classify.load_classifier
    calls = Calls()

    def load(cfg, path):
        probabilities = real(cfg, path)

        def counted(texts):
            if calls.fail_after is not None and len(calls) >= calls.fail_after:
                raise RuntimeError("the model broke")
            calls.append(list(texts))
            return probabilities(texts)
        return counted

    monkeypatch.setattr(classify, "load_classifier", load)
    return calls


def read_output(path):
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def errors_of(summary):
    return [(int(r["row"]), r["reason"]) for r in read_output(summary["errors"])]


def check_labels(rows, cfg):
    for r in rows:
        p = np.array([float(r[f"p_{label}"]) for label in cfg.labels])
        assert abs(p.sum() - 1) < 2e-4 and r["predicted_label"] == cfg.labels[p.argmax()]


REVIEWS = ["Great value, works as described", "It broke after\na week.", "Café ☕ — fine, I guess",
           "Terrible support", "Five stars!"]


def test_csv_with_the_hf_model_keeps_every_column_and_adds_label_and_probabilities(cfg, write, hf_model):
    from helpers.predict import score_labels
    from helpers.model import load_model

    lines = ["id,text,stars"] + [f'{i},"{t}",{i % 5}' for i, t in enumerate(REVIEWS, 1)]
    path = write("reviews.csv", b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")  # BOM, as Excel saves it
    summary = classify_file(cfg, path, model_path=hf_model, batch_size=2, progress=False)

    assert summary["output"] == path.with_name("reviews.labelled.csv") and summary["model"] == hf_model
    assert (summary["rows_labelled"], summary["rows_skipped"], summary["bad_rows"]) == (5, 0, 0)
    assert sum(summary["label_counts"].values()) == 5 and summary["reviews_per_second"] > 0
    rows = read_output(summary["output"])
    assert list(rows[0]) == ["id", "text", "stars"] + ADDED
    assert [(r["id"], r["text"], r["stars"], r["row"]) for r in rows] == [
        (str(i), t, str(i % 5), str(i)) for i, t in enumerate(REVIEWS, 1)]
    check_labels(rows, cfg)
    model, tokenizer = load_model(cfg, hf_model)
    expected = score_labels(model, tokenizer, REVIEWS, cfg, progress=False)
    got = np.array([[float(r[f"p_{label}"]) for label in cfg.labels] for r in rows])
    assert np.abs(got - expected).max() <= 5e-5  # the model's own probabilities, rounded to 4 decimals
    assert read_output(summary["errors"]) == []


def test_jsonl_with_a_q4_k_m_gguf_keeps_every_field(cfg, write, tiny_q4):
    from helpers.model import load_tokenizer
    from helpers.predict import gguf_probabilities, load_gguf

    records = [{"id": i, "text": t, "meta": {"tags": ["a", "ü"], "score": None}} for i, t in enumerate(REVIEWS)]
    path = write("reviews.ndjson", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out = path.with_name("custom.ndjson")
    summary = classify_file(cfg, path, output_path=out, model_path=tiny_q4, batch_size=3, progress=False)

    assert summary["output"] == out and summary["rows_labelled"] == 5
    rows = read_output(out)
    assert [{k: r[k] for k in ("id", "text", "meta")} for r in rows] == records
    assert list(rows[0]) == ["id", "text", "meta"] + ADDED and [r["row"] for r in rows] == [1, 2, 3, 4, 5]
    check_labels(rows, cfg)
    expected = gguf_probabilities(load_gguf(tiny_q4, cfg), load_tokenizer(cfg), REVIEWS, cfg, progress=False)
    got = np.array([[r[f"p_{label}"] for label in cfg.labels] for r in rows])
    assert np.abs(got - expected).max() <= 5e-5


def test_bad_csv_rows_are_reported_with_their_row_numbers_and_the_rest_labelled(cfg, write, hf_model):
    path = write("in.csv", b"\ntext,id\nfine product,1\n,2\n\"   \",3\ncaf\xe9 au lait,4\n\nlovely,5\nx,6,extra\nok,7\n")
    summary = classify_file(cfg, path, model_path=hf_model, batch_size=2, progress=False)

    assert [int(r["row"]) for r in read_output(summary["output"])] == [1, 5, 7]  # the blank line is not a row
    assert errors_of(summary) == [(2, "empty text"), (3, "empty text"),
                                  (4, "not valid utf-8 text (re-save the file as utf-8)"),
                                  (6, "3 fields but the header has 2")]
    assert (summary["rows_labelled"], summary["bad_rows"]) == (3, 4)


def test_bad_jsonl_lines_are_reported_with_their_row_numbers_and_the_rest_labelled(cfg, write, hf_model):
    lines = [b'{"text": "fine"}', b'{"text": "broken', b'{"title": "no text"}', b"[1, 2]", b'{"text": ""}',
             b'{"text": "caf\xe9"}', b'{"text": 5}', b"", b'{"text": "good", "text2": null}']
    path = write("in.jsonl", b"\n".join(lines))  # no line break after the last line either
    summary = classify_file(cfg, path, model_path=hf_model, progress=False)

    rows = read_output(summary["output"])
    assert [(r["row"], r["text"]) for r in rows] == [(1, "fine"), (8, "good")] and rows[1]["text2"] is None
    assert errors_of(summary) == [(2, "not valid JSON (Unterminated string starting at)"), (3, "no field 'text'"),
                                  (4, "not a JSON object"), (5, "empty text"),
                                  (6, "not valid utf-8 text (re-save the file as utf-8)"),
                                  (7, "field 'text' is not a string")]


def test_a_review_longer_than_the_context_is_labelled_by_its_beginning(cfg, write, tiny_q4):
    from helpers.data import fit_review
    from helpers.model import load_tokenizer
    from helpers.predict import gguf_probabilities, load_gguf

    long = "word " * 2500  # more tokens than cfg.context_length, and far more than cfg.max_length
    path = write("in.csv", "text\ngood\n" + long + "\nbad\n")
    summary = classify_file(cfg, path, model_path=tiny_q4, batch_size=3, progress=False)
    rows = read_output(summary["output"])
    assert [r["row"] for r in rows] == ["1", "2", "3"] and rows[1]["text"] == long and summary["bad_rows"] == 0
    tokenizer = load_tokenizer(cfg)
    alone = gguf_probabilities(load_gguf(tiny_q4, cfg), tokenizer, [fit_review(long, tokenizer, cfg)], cfg,
                               progress=False)[0]
    assert np.abs(np.array([float(rows[1][f"p_{label}"]) for label in cfg.labels]) - alone).max() <= 5e-5


def test_a_review_the_model_fails_on_alone_is_reported_and_the_rest_labelled(cfg, write, tmp_path, monkeypatch):
    def picky(texts):
        if any("poison" in t for t in texts):
            raise ValueError("cannot take this one")
        return uniform(cfg)(texts)
    monkeypatch.setattr(classify, "load_classifier", lambda cfg, path: picky)
    summary = classify_file(cfg, write("in.csv", "text\ngood\npoison pill\nbad\n"), model_path=tmp_path,
                            batch_size=3, progress=False)
    assert [r["text"] for r in read_output(summary["output"])] == ["good", "bad"]
    [(row, reason)] = errors_of(summary)
    assert row == 2 and "the model failed on this review alone (cannot take this one)" in reason


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_interrupted_run_resumes_without_relabelling_anything(cfg, write, hf_model, asked, suffix):
    texts = [f"review number {i}" for i in range(1, 9)]
    texts[1] = " "  # row 2: a bad row, reported in the first run
    if suffix == ".csv":
        path = write("in.csv", "text\n" + "".join(f"{t}\n" for t in texts))
    else:
        path = write("in.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts))
    asked.fail_after = 1
    with pytest.raises(RuntimeError, match="the model broke"):  # a broken model stops the run
        classify_file(cfg, path, model_path=hf_model, batch_size=2, progress=False)
    out = path.with_name("in.labelled" + suffix)
    assert [int(r["row"]) for r in read_output(out)] == [1, 3] and asked == [[texts[0], texts[2]]]

    asked.clear()
    asked.fail_after = None
    summary = classify_file(cfg, path, model_path=hf_model, batch_size=2, progress=False)
    assert asked == [texts[3:5], texts[5:7], texts[7:]]  # nothing labelled twice
    assert (summary["rows_labelled"], summary["rows_skipped"], summary["bad_rows"]) == (5, 3, 0)
    rows = read_output(out)
    assert [int(r["row"]) for r in rows] == [1, 3, 4, 5, 6, 7, 8] and [r["text"] for r in rows] == texts[:1] + texts[2:]
    check_labels(rows, cfg)
    assert errors_of(summary) == [(2, "empty text")]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_half_written_last_row_is_cut_off_and_labelled_again(cfg, write, hf_model, asked, suffix):
    texts = ["first", "second", "third\nhas two lines", "fourth", "fifth"]
    if suffix == ".csv":
        path = write("in.csv", "text\n" + "".join(f'"{t}"\n' for t in texts))
    else:
        path = write("in.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = classify_file(cfg, path, model_path=hf_model, progress=False)["output"]
    complete = out.read_bytes()
    # A crash in the middle of row 3: for the CSV, just after the line break inside its text.
    cut = complete.index(b"third\n") + 6 if suffix == ".csv" else complete.index(b'"third') + 9
    out.write_bytes(complete[:cut])

    asked.clear()
    summary = classify_file(cfg, path, model_path=hf_model, progress=False)
    assert asked == [texts[2:]] and summary["rows_skipped"] == 2
    rows = read_output(out)
    assert [int(r["row"]) for r in rows] == [1, 2, 3, 4, 5] and [r["text"] for r in rows] == texts
    assert out.read_bytes() == complete  # the same file as an uninterrupted run (the model is deterministic)


def test_a_finished_output_is_not_labelled_again(cfg, write, hf_model, asked):
    path = write("in.csv", "text\nfine\n,\nbad\n")
    classify_file(cfg, path, model_path=hf_model, progress=False)
    asked.clear()
    summary = classify_file(cfg, path, model_path=hf_model, progress=False)
    assert asked == [] and (summary["rows_labelled"], summary["rows_skipped"], summary["bad_rows"]) == (0, 3, 0)
    assert len(read_output(summary["output"])) == 2 and len(read_output(summary["errors"])) == 1


def test_unusable_files_fail_before_any_work_with_a_helpful_message(cfg, write, tmp_path, monkeypatch):
    def no_model(*args):
        raise AssertionError("the model was loaded for a file that cannot be labelled")
    monkeypatch.setattr(classify, "load_classifier", no_model)

    def fails(path, match, **kwargs):
        with pytest.raises(ClassifyError, match=match):
            classify_file(cfg, path, model_path=tmp_path, progress=False, **kwargs)
        assert not path.with_name(path.stem + ".labelled" + path.suffix).exists()

    fails(write("a.csv", "review,stars\ngood,5\n"),
          r"a\.csv: no column 'text'\. Columns found: review, stars\. Name the text column with --text-column")
    fails(write("b.jsonl", '{"review": "good"}\n'), r"no field 'text'\. Fields found in the first record: review\.")
    fails(write("c.csv", ""), r"c\.csv: the file is empty\. It needs a header row")
    fails(write("d.jsonl", "\n  \n"), r"d\.jsonl: the file is empty\. It needs one JSON object per line")
    fails(write("e.txt", "text\ngood\n"), r"e\.txt: unknown file type '\.txt'\. Use a \.csv file .* or a \.jsonl")
    fails(tmp_path / "missing.csv", r"missing\.csv: no such file")
    fails(write("f.csv", "text,predicted_label\ngood,positive\n"),
          r"already has the output column\(s\) predicted_label\. Columns found: text, predicted_label")
    fails(write("g.csv", "text\ngood\n"), "would overwrite the input", output_path=tmp_path / "g.csv")
    fails(write("g2.csv", "text\ngood\n"), r"input's format; give it the suffix \.csv",
          output_path=tmp_path / "g2.jsonl")
    other = write("h.labelled.csv", "id,text,row,predicted_label\n")
    with pytest.raises(ClassifyError, match=r"h\.labelled\.csv exists but was not written for this input"):
        classify_file(cfg, write("h.csv", "text\ngood\n"), model_path=tmp_path, progress=False)
    assert other.read_text() == "id,text,row,predicted_label\n"  # left alone


def test_the_text_column_option(cfg, write, hf_model):
    path = write("in.csv", "review,stars\ngood,5\n")
    summary = classify_file(cfg, path, model_path=hf_model, text_column="review", progress=False)
    assert [(r["review"], r["row"]) for r in read_output(summary["output"])] == [("good", "1")]


def test_a_missing_model_or_a_folder_that_is_no_model_is_named(cfg, write, tmp_path):
    path = write("in.csv", "text\ngood\n")
    with pytest.raises(ClassifyError, match=r"nope\.gguf: no such file or folder\. Pass a \.gguf file, a Hugging Face"):
        classify_file(cfg, path, model_path=tmp_path / "nope.gguf", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassifyError, match=r"empty: not a model\. .*adapter_config\.json"):
        load_classifier(cfg, tmp_path / "empty")


def test_find_model_takes_the_newest_course_run(cfg, tmp_path):
    def run(name, finished=True):
        folder = tmp_path / name / "03_gguf_quantization"
        folder.mkdir(parents=True)
        if finished:
            (folder / "model-Q4_K_M.gguf").write_bytes(b"GGUF")
        return folder / "model-Q4_K_M.gguf"

    with pytest.raises(ClassifyError, match=r"No trained model found.*Run `make course` first, or pass a model path"):
        find_model(cfg, tmp_path)
    run("bench"), run("lab-smoke"), run("20240101-090000-workshop")
    newest = run("20250102-120000-smoke-1")
    run("20250102-120000-smoke"), run("20260101-000000-smoke", finished=False)  # still running: no GGUF yet
    assert find_model(cfg, tmp_path) == newest
    with pytest.raises(ClassifyError, match="make course"):
        find_model(cfg, tmp_path / "nothing-here")


def test_a_course_gguf_uses_its_run_tokenizer_and_is_the_default_model(cfg, write, tiny_q4, tmp_path, monkeypatch):
    import shutil

    from helpers.model import load_tokenizer

    gguf = tmp_path / "20250101-000000-smoke" / "03_gguf_quantization" / "model-Q4_K_M.gguf"
    gguf.parent.mkdir(parents=True)
    shutil.copy(tiny_q4, gguf)
    seen = []
    monkeypatch.setattr("helpers.predict.load_tokenizer",
                        lambda cfg, source=None: seen.append(source) or load_tokenizer(cfg))
    load_classifier(cfg, gguf)
    merged = gguf.parents[1] / "02_logged_training" / "merged"
    load_tokenizer(cfg).save_pretrained(merged)
    monkeypatch.setattr(classify, "find_model", lambda cfg: gguf)
    summary = classify_file(cfg, write("in.csv", "text\ngood\n"), progress=False)
    assert seen == [None, merged] and summary["model"] == gguf and summary["rows_labelled"] == 1


def test_a_lora_adapter_folder_loads_on_the_base_model_and_labels(cfg, write, tmp_path):
    import torch
    from peft import get_peft_model

    from helpers.predict import score_labels
    from helpers.model import load_model
    from helpers.training import build_lora_config

    model, tokenizer = load_model(cfg)
    base = score_labels(model, tokenizer, REVIEWS, cfg, progress=False)
    peft_model = get_peft_model(model, build_lora_config(cfg, model))
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh LoRA B is zero (no change at all): give the adapter something to change
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapted = score_labels(peft_model.eval(), tokenizer, REVIEWS, cfg, progress=False)
    peft_model.save_pretrained(tmp_path / "adapter")

    got = load_classifier(cfg, tmp_path / "adapter")(REVIEWS)
    assert np.abs(got - adapted).max() < 1e-5 and np.abs(got - base).max() > 1e-3
    summary = classify_file(cfg, write("in.csv", "text\ngood\n"), model_path=tmp_path / "adapter", progress=False)
    check_labels(read_output(summary["output"]), cfg)


def uniform(cfg):
    """A stand-in for the model where only the file handling is under test: every text gets equal probabilities."""
    return lambda texts: np.full((len(texts), len(cfg.labels)), 1 / len(cfg.labels))


def test_an_unrelated_existing_output_is_never_truncated(cfg, write, tmp_path):
    precious = write("existing.jsonl", '{"mine": "keep me"}\n')
    path = write("in.jsonl", '{"text": "good"}\n')
    for model in (tmp_path / "nonexistent", None):  # a wrong model path, then a real (stand-in) one
        with pytest.raises(ClassifyError) as err:
            classify_file(cfg, path, output_path=precious, model_path=model or tmp_path, progress=False)
        assert precious.read_text() == '{"mine": "keep me"}\n'
    assert "existing.jsonl exists but was not written for this input and model (there is no record" in str(err.value)
    assert "Nothing was changed. To start over, delete" in str(err.value)


def test_resume_refuses_an_output_of_another_model_or_input(cfg, write, tmp_path, monkeypatch):
    monkeypatch.setattr(classify, "load_classifier", lambda cfg, path: uniform(cfg))
    first, second = tmp_path / "model-a.gguf", tmp_path / "model-b.gguf"
    first.write_bytes(b"a")
    second.write_bytes(b"b")
    path = write("r.csv", "text\ngood\nbad\n")
    out = classify_file(cfg, path, model_path=first, progress=False)["output"]
    before = out.read_bytes()
    with pytest.raises(ClassifyError, match=r"r\.labelled\.csv exists but was not written for this input and model "
                                            r"\(it was labelled by another model \(.*model-a\.gguf\)\)"):
        classify_file(cfg, path, model_path=second, progress=False)
    path.write_text("text\ngood\nbad\nugly\n")
    with pytest.raises(ClassifyError, match=r"the input's content differs"):
        classify_file(cfg, path, model_path=first, progress=False)
    assert out.read_bytes() == before
    out.unlink()
    out.with_name(out.name + ".errors.csv").unlink()
    assert classify_file(cfg, path, model_path=second, progress=False)["rows_labelled"] == 3  # started over


def test_a_csv_field_longer_than_128_kib_with_newlines_is_one_row(cfg, write, tmp_path, monkeypatch):
    monkeypatch.setattr(classify, "load_classifier", lambda cfg, path: uniform(cfg))
    long = "second line\n".join(["word " * 30_000] * 2) + "third line"  # ~300 kB, two line breaks inside
    path = write("long.csv", f'id,text\n1,"{long}"\n2,short one\n')
    summary = classify_file(cfg, path, model_path=tmp_path, progress=False)
    rows = read_output(summary["output"])
    assert [(r["id"], r["row"]) for r in rows] == [("1", "1"), ("2", "2")] and rows[0]["text"] == long
    assert summary["bad_rows"] == 0


# --- property-based: whatever the bytes, no traceback, and every row comes out exactly once ------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(
    ['"', ",", "\n", "\r", "\u2028", "\u2029", "\x00", " ", "é", "☕"]), max_size=40)


def classify_in_tmp(cfg, name, data: bytes, monkeypatch, **kwargs):
    """(summary or the ClassifyError, {row: text} written, [error rows]) for `data` as a file called `name`."""
    import tempfile

    monkeypatch.setattr(classify, "load_classifier", lambda cfg, path: uniform(cfg))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            summary = classify_file(cfg, path, model_path=folder, progress=False, **kwargs)
        except ClassifyError as err:
            return err, {}, []
        out = summary["output"]
        written = [json.loads(line) for line in out.read_bytes().decode(cfg.encoding, "surrogateescape").split("\n")
                   if line] if out.suffix == ".jsonl" else read_output_bytes(out, cfg.encoding)
        errors = [int(r["row"]) for r in read_output(summary["errors"])]
        return summary, {int(r["row"]): r.get("text") for r in written}, errors


def read_output_bytes(path, encoding):
    """The output as written: in the input's encoding."""
    with open(path, newline="", encoding=encoding, errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def rows_exactly_once(written: dict, errors: list, n: int):
    rows = sorted(list(written) + errors)
    assert rows == list(range(1, n + 1)), (rows, n)


@PROPERTY
@given(texts=st.lists(TEXTS, min_size=1, max_size=12), encoding=st.sampled_from(["utf-8", "latin-1", "cp1252"]),
       ending=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(), batch=st.integers(1, 5))
def test_any_csv_of_any_texts_gives_each_row_once(cfg, monkeypatch, texts, encoding, ending, bom, batch):
    import io

    buffer = io.StringIO()
    # Python's writer leaves a bare "\r" unquoted under a "\n" terminator, which every reader (ours, Excel's) takes
    # for a line break: quote all fields there, so that the file says what the texts are
    writer = csv.writer(buffer, lineterminator=ending, quoting=csv.QUOTE_ALL if ending == "\n" else csv.QUOTE_MINIMAL)
    writer.writerow(["id", "text"])
    writer.writerows([i, t] for i, t in enumerate(texts, 1))
    data = buffer.getvalue().encode(encoding, errors="replace")
    cfg.encoding = encoding
    summary, written, errors = classify_in_tmp(cfg, "in.csv", (b"\xef\xbb\xbf" if bom else b"") + data, monkeypatch,
                                               batch_size=batch)
    rows_exactly_once(written, errors, len(texts))
    decoded = [t.encode(encoding, errors="replace").decode(encoding) for t in texts]
    for row, text in written.items():
        assert text == decoded[row - 1]  # the review as it was, line breaks and quotes included
    assert set(errors) == {i for i, t in enumerate(decoded, 1) if not t.strip()}  # only the empty ones


@PROPERTY
@given(lines=st.lists(st.one_of(TEXTS.map(lambda t: ("text", t)), st.binary(max_size=30).map(lambda b: ("raw", b))),
                      min_size=1, max_size=12), ascii_only=st.booleans(), batch=st.integers(1, 5))
def test_any_jsonl_gives_each_nonblank_line_once(cfg, monkeypatch, lines, ascii_only, batch):
    encoded = [json.dumps({"text": v}, ensure_ascii=ascii_only).encode() if kind == "text" else v.replace(b"\n", b" ")
               for kind, v in lines]
    data = b"\n".join(encoded) + b"\n"
    summary, written, errors = classify_in_tmp(cfg, "in.jsonl", data, monkeypatch, batch_size=batch)
    if isinstance(summary, ClassifyError):  # only a file whose first record says it cannot be labelled
        assert "the file is empty" in str(summary) or "no field 'text'" in str(summary) or "output field" in str(summary)
        return
    nonblank = [line for line in encoded if line.decode("utf-8", "surrogateescape").strip()]
    rows_exactly_once(written, errors, len(nonblank))


@PROPERTY
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_random_bytes_never_raise_anything_but_one_clear_error(cfg, monkeypatch, data, suffix):
    summary, written, errors = classify_in_tmp(cfg, "in" + suffix, data, monkeypatch)
    if isinstance(summary, ClassifyError):
        assert str(summary).startswith(str(Path(str(summary).split(":")[0])))  # names the file, then the problem
        return
    rows = sorted(list(written) + errors)
    assert rows == list(range(1, len(rows) + 1))  # contiguous, each once
