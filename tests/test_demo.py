"""The demo page (helpers/demo.py): served on 127.0.0.1 over the smoke course run's models and driven in Debian's
Chromium by Playwright, as a learner uses it; and its refusals, without a browser."""
import csv
import shutil
from pathlib import Path

import pytest

from helpers import cli, demo
from helpers.classify import classify_file
from helpers.config import ROOT
from helpers.distill import STUDENT
from helpers.runs import ALTERNATIVES, DISTILLATION, EXPORT

# The page serves the smoke course run's models: its first set-up runs that course (~90 s), so the module is slow.
pytestmark = pytest.mark.slow

REVIEW = "the battery died but support replaced it overnight"
SCREENSHOT = ROOT / "runs" / "demo-smoke.png"  # docs/demo.png (shown in docs/tools.md) is a copy of it


@pytest.fixture(scope="module")
def served(course_run):
    """(URL, loaded models) of the page over the smoke course run, for the whole module."""
    page, url, models = demo.open_demo(course_run.through(DISTILLATION), progress=lambda line: None)
    yield url, models
    page.close()


@pytest.fixture
def page(browser, served):
    tab = browser.new_page(viewport={"width": 1280, "height": 1000})
    tab.goto(served[0])
    tab.wait_for_selector("#demo-text textarea")
    yield tab
    tab.close()


def classify_on_page(page, text: str) -> dict:
    """Type `text`, press Classify, and read every model's bars: {model: {label: probability}}."""
    page.fill("#demo-text textarea", text)
    page.click("#demo-classify")
    return read_bars(page)


def read_bars(page) -> dict:
    """{model: {label: probability}} from the bars (each bar is a <meter> holding the exact probability), once every
    model's block has its milliseconds in its title."""
    blocks = page.locator(".demo-bars")
    page.wait_for_function("n => [...document.querySelectorAll('.demo-bars [data-testid=block-label]')]"
                           ".filter(e => e.innerText.includes(' ms')).length === n", arg=blocks.count())
    out = {}
    for i in range(blocks.count()):
        name = blocks.nth(i).locator("[data-testid=block-label]").inner_text().rsplit(" · ", 1)[0].strip()
        meters = blocks.nth(i).locator("meter")
        out[name] = {meters.nth(k).get_attribute("aria-label"): float(meters.nth(k).get_attribute("value"))
                     for k in range(meters.count())}
    return out


def test_a_typed_review_gets_every_models_bars_and_they_sum_to_one(page, served):
    _, models = served
    bars = classify_on_page(page, REVIEW)
    assert list(bars) == list(models.predictors)
    assert {demo.FINE_TUNED, demo.BASE, STUDENT} <= set(bars) and len(bars) == 5  # + the encoder and SetFit
    for probabilities in bars.values():
        assert set(probabilities) == set(models.cfg.labels)
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-6)
    assert page.locator("#demo-message").inner_text().strip() == ""
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_the_page_gives_the_numbers_classify_writes(page, served, tmp_path):
    _, models = served
    bars = classify_on_page(page, REVIEW)
    source = tmp_path / "one.csv"
    source.write_text(f"text\n{REVIEW}\n")
    for name, path in models.paths.items():
        output = tmp_path / f"{len(list(tmp_path.iterdir()))}.csv"
        classify_file(models.cfg, source, output, path, progress=False)
        row = next(csv.DictReader(output.open()))
        assert {label: round(p, 4) for label, p in bars[name].items()} == \
            {label: float(row[f"p_{label}"]) for label in models.cfg.labels}, name


def test_an_empty_text_gets_the_message_and_no_bars(page):
    page.fill("#demo-text textarea", "   ")
    page.click("#demo-classify")
    page.wait_for_function("() => document.querySelector('#demo-message').innerText.includes('Type a review')")
    assert page.locator(".demo-bars meter").count() == 0


def test_a_100000_character_paste_is_cut_by_the_training_length_and_says_so(page, served):
    bars = classify_on_page(page, "great screen, awful battery. " * 3449)  # 100,021 characters
    assert len(bars) == len(served[1].predictors)
    message = page.locator("#demo-message").inner_text()
    assert "tokens long" in message and "the longest review they were trained on" in message
    assert f"first {served[1].cfg.encoder_max_length}" in message


def test_an_example_is_one_click_and_the_models_disagree_on_it(page, served):
    page.locator("#demo-examples button.gallery-item").first.click()
    bars = read_bars(page)
    assert page.locator("#demo-text textarea").input_value() == demo.test_examples(served[1])[0][0]
    assert len({max(p, key=p.get) for p in bars.values()}) > 1


def upload(page, path: Path, text_column: str | None = None) -> str:
    """Upload `path` on the "Label a file" tab, press the button; returns the page's line about it."""
    page.get_by_role("tab", name="Label a file").click()
    page.set_input_files("#demo-upload input[type=file]", str(path))
    page.wait_for_selector(f"#demo-upload td[aria-label='{path.name}']")  # uploaded: the file is listed
    if text_column:
        page.get_by_label("Text column").fill(text_column)
    page.click("#demo-label")
    page.wait_for_function("() => document.querySelector('#demo-file-message').innerText.trim() !== ''",
                           timeout=120_000)
    return page.locator("#demo-file-message").inner_text()


def test_an_uploaded_three_row_csv_comes_back_labelled(page, served, tmp_path):
    labels = served[1].cfg.labels
    source = tmp_path / "three.csv"
    source.write_text("id,review\n1,great phone\n2,awful battery\n3,it is a phone\n")
    assert upload(page, source, text_column="review").startswith("3 rows labelled by")
    with page.expect_download() as download:
        page.locator("#demo-download a[download]").first.click()
    rows = list(csv.DictReader(open(download.value.path())))
    assert [r["id"] for r in rows] == ["1", "2", "3"] and all(r["predicted_label"] in labels for r in rows)
    assert all(sum(float(r[f"p_{label}"]) for label in labels) == pytest.approx(1, abs=1e-3) for r in rows)


def test_a_csv_without_the_text_column_gets_one_line(page, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("id,review\n1,great phone\n")
    message = upload(page, source)
    assert "text" in message and "review" in message and "\n" not in message.strip()
    assert page.locator("#demo-download a[download]").count() == 0


def test_rows_that_cannot_be_labelled_come_back_in_their_errors_file(served, tmp_path):
    source = tmp_path / "gaps.csv"
    source.write_text('text\ngreat phone\n""\nawful battery\n')
    files, message = demo.label_upload(served[1], source, demo.FINE_TUNED, "text", tmp_path, progress=False)
    assert [f.name for f in files] == ["gaps.labelled.csv", "gaps.labelled.csv.errors.csv"]
    assert message.startswith(f"2 rows labelled by {demo.FINE_TUNED}") and "1 rows not labelled" in message
    assert [r["row"] for r in csv.DictReader(files[1].open())] == ["2"]


def test_disagreements_put_the_most_divided_first(served):
    _, models = served
    texts = demo.test_examples(models)[0]
    answers = [{p.probabilities([t]).argmax() for p in models.predictors.values()} for t in texts]
    assert texts and all(len(a) > 1 for a in answers)
    assert [len(a) for a in answers] == sorted((len(a) for a in answers), reverse=True)


def test_a_run_without_one_kind_of_model_says_what_is_missing(course_run, tmp_path):
    run = tmp_path / "20260101-000000-smoke"
    shutil.copytree(course_run.through(ALTERNATIVES) / ALTERNATIVES, run / ALTERNATIVES)
    found = demo.find_models(demo.demo_config(run))
    assert demo.FINE_TUNED not in found.paths and found.paths
    assert found.missing == [f"{demo.FINE_TUNED}: not in this run ({EXPORT} makes it)",
                             f"{STUDENT}: not in this run ({DISTILLATION} makes it when it runs live: distillation='live')"]


def test_the_demo_command_refuses_a_folder_without_a_model_in_one_line(tmp_path, capsys):
    empty = tmp_path / "20260101-000000-smoke"
    (empty / "00_setup_and_data").mkdir(parents=True)
    (empty / "00_setup_and_data" / "metrics.json").write_text('{"config": {"profile": "smoke"}}')
    assert cli.main(["demo", "--run-dir", str(empty)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {empty} holds no trained model (no 03_gguf_quantization/model-Q4_K_M.gguf, no encoder of "
        f"{ALTERNATIVES}): finish `make course` first, or pass RUN=<a finished run folder>.")
    assert cli.main(["demo", "--run-dir", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err
