"""A page to try every trained classifier of a run on a sentence of your own (`make demo`), served on 127.0.0.1.

The page has two tabs. "Try a review": a text box; each model's label probabilities as bars, side by side, with the
milliseconds it took; the same numbers in a table; and the test-split reviews on which the models disagree, one click
each. "Label a file": a CSV or JSONL file labelled by `classify.classify_file`, with a progress bar and the labelled
file to download. The models are the run's fine-tuned LLM as GGUF Q4_K_M (notebook 03), its fine-tuned encoder and
SetFit models (notebook 05) where the run has them, and the base model zero-shot for contrast. Every one is a
`predict.Predictor` (`load_predictor`), so the page's numbers are the ones `classify` writes.

Bad input gets one line on the page, never a traceback: an empty text, a text longer than the models read (cut by
the training-length rule, `data.fit_review`, and said so), a file that `classify` refuses (no text column, say).
A run folder without a trained model is refused before the page starts.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.alternatives import kept_encoder_models
from helpers.classify import ClassifyError, classify_file
from helpers.config import CourseConfig, make_config
from helpers.data import DataError, prepare_splits, review_budget
from helpers.model import ModelError, load_model
from helpers.predict import Predictor, hf_predictor, load_predictor
from helpers.distill import STUDENT
from helpers.runs import ALTERNATIVES, DISTILLATION, EXPORT, RELATIVE, course_runs, layout, recorded_config
from helpers.serve import free_port

FINE_TUNED = "fine-tuned LLM (GGUF Q4_K_M)"
BASE = "base model, zero-shot"
HOST = "127.0.0.1"  # never 0.0.0.0: the page serves models and files of this machine


class DemoError(ValueError):
    """A run folder the page cannot show, with what to do about it."""


@dataclass
class DemoModels:
    """The run's models, loaded once: {name: predictor}, {name: path on disk} of the trained ones, and a sentence per
    model the run does not have."""

    cfg: CourseConfig
    predictors: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)


def demo_run(run_dir: str | Path | None = None, profile: str = "*") -> Path:
    """`run_dir`, or the newest course run (of `profile`) that holds a trained model."""
    if run_dir:
        run = Path(run_dir)
        if not run.is_dir():
            raise DemoError(f"{run}: no such run folder. Pass a folder made by `make course` (runs/<timestamp>-<profile>).")
        return run
    for run in course_runs(profile):
        if (run / RELATIVE.gguf("Q4_K_M")).exists() or (run / ALTERNATIVES).is_dir():
            return run
    raise DemoError("No course run holds a trained model yet: run `make course` first, or pass RUN=<run folder>.")


def demo_config(run: Path, **overrides) -> CourseConfig:
    """The configuration the run was made with (`runs.recorded_config`), with `overrides` on top."""
    recorded = recorded_config(run)
    if recorded is None:
        raise DemoError(f"{run} holds no metrics.json of a notebook, so it is not a course run: pass a folder made by "
                        f"`make course`.")
    return make_config(**{**recorded, **overrides, "run_dir": run})


def find_models(cfg: CourseConfig) -> DemoModels:
    """The trained models of the run `cfg.run_dir` by name (not loaded yet), and what is missing; a DemoError when
    it holds none."""
    found = DemoModels(cfg)
    gguf = layout(cfg).gguf("Q4_K_M")
    if gguf.exists():
        found.paths[FINE_TUNED] = gguf
    else:
        found.missing.append(f"{FINE_TUNED}: not in this run ({EXPORT} makes it)")
    encoders = kept_encoder_models(cfg)
    found.paths.update(encoders)
    if not encoders:
        found.missing.append(f"encoder and SetFit: not in this run ({ALTERNATIVES} makes them)")
    student = layout(cfg).folder(DISTILLATION) / "student"
    if student.is_dir():
        found.paths[STUDENT] = student
    else:
        found.missing.append(f"{STUDENT}: not in this run ({DISTILLATION} makes it when it runs live: distillation='live')")
    if not found.paths:
        raise DemoError(f"{cfg.run_dir} holds no trained model (no {RELATIVE.gguf('Q4_K_M')}, no encoder of "
                        f"{ALTERNATIVES}): finish `make course` first, or pass RUN=<a finished run folder>.")
    return found


def load_models(found: DemoModels, progress=print) -> DemoModels:
    """Every trained model of `found` loaded through `load_predictor`, then the base model zero-shot."""
    for name, path in found.paths.items():
        progress(f"loading {name}: {path}")
        try:
            found.predictors[name] = load_predictor(found.cfg, path)
        except ModelError as err:
            raise DemoError(str(err)) from None
    progress(f"loading {BASE}: {found.cfg.model}")
    found.predictors[BASE] = hf_predictor(*load_model(found.cfg), found.cfg)
    return found


@dataclass
class Answer:
    """Every model's probabilities for one text ({name: (labels,) array}), its milliseconds, and the page's line."""

    probabilities: dict
    milliseconds: dict
    message: str

    def table(self, labels) -> pd.DataFrame:
        """One row per model: its label, each label's probability (4 decimals) and its milliseconds."""
        return pd.DataFrame([{"model": name, "label": labels[int(np.argmax(p))],
                              **{f"p_{label}": round(float(x), 4) for label, x in zip(labels, p)},
                              "ms": round(self.milliseconds[name], 1)} for name, p in self.probabilities.items()])


def classify_text(models: DemoModels, text: str) -> Answer:
    """Every model's label probabilities for `text`, timed one model at a time; an empty text gets a message only."""
    if not text or not text.strip():
        return Answer({}, {}, "Type a review first (or click one of the examples below).")
    probabilities, milliseconds = {}, {}
    for name, predictor in models.predictors.items():
        start = time.perf_counter()
        probabilities[name] = predictor.probabilities([text])[0]
        milliseconds[name] = (time.perf_counter() - start) * 1000
    return Answer(probabilities, milliseconds, length_note(models, text))


def length_note(models: DemoModels, text: str) -> str:
    """What the models read of a long text: the LLMs its first tokens up to the training length (`fit_review`),
    the encoders their first `encoder_max_length` tokens; "" when every model reads it whole."""
    cfg, llm = models.cfg, models.predictors[BASE]
    tokens, budget = len(llm.tokenizer(text, add_special_tokens=False)["input_ids"]), review_budget(llm.tokenizer, cfg)
    if tokens <= min(budget, cfg.encoder_max_length):
        return ""
    parts = [f"the LLMs read its first {budget:,} tokens, the longest review they were trained on" if tokens > budget
             else "the LLMs read all of it"]
    if any(p.kind == "encoder" for p in models.predictors.values()) and tokens > cfg.encoder_max_length:
        parts.append(f"the encoders read its first {cfg.encoder_max_length:,} (encoder_max_length)")
    return f"Your text is {tokens:,} tokens long: {'; '.join(parts)}. The rest is not read."


def disagreements(models: DemoModels, frame: pd.DataFrame) -> list[str]:
    """The texts of `frame` on which the models' labels differ, the most divided first (ties in `frame`'s order)."""
    texts = list(frame["text"])
    if not texts:
        return []
    answers = np.stack([p.probabilities(texts).argmax(1) for p in models.predictors.values()], axis=1)
    spread = [len(set(row)) for row in answers]
    order = sorted((i for i, s in enumerate(spread) if s > 1), key=lambda i: -spread[i])
    return [texts[i] for i in order]


def test_examples(models: DemoModels) -> tuple[list[str], int]:
    """(the disagreements among the first `demo_scan_rows` reviews of the run's test split, how many were read)."""
    scanned = prepare_splits(models.cfg).test.head(models.cfg.demo_scan_rows)
    return disagreements(models, scanned), len(scanned)


def label_upload(models: DemoModels, upload: str | Path | None, model_name: str, text_column: str,
                 out_dir: str | Path, progress: bool = True) -> tuple[list[Path], str]:
    """([the labelled file, and its errors file when rows could not be labelled], a line for the page) for an uploaded
    CSV or JSONL file, labelled by `classify_file` with the run's model `model_name`; ([], what to do) when the file
    cannot be labelled."""
    if not upload:
        return [], "Choose a CSV or JSONL file first."
    upload = Path(upload)
    output = Path(out_dir) / f"{upload.stem}.labelled{upload.suffix}"
    try:
        summary = classify_file(models.cfg, upload, output, models.paths[model_name],
                                text_column=text_column or models.cfg.text_column, progress=progress)
    except ClassifyError as err:
        return [], str(err)
    bad = f", {summary['bad_rows']} rows not labelled (why: {summary['errors'].name})" if summary["bad_rows"] else ""
    return [output] + ([summary["errors"]] if summary["bad_rows"] else []), (
        f"{summary['rows_labelled']} rows labelled by {model_name} ({summary['reviews_per_second']:.1f} reviews/s)"
        f"{bad}: {summary['label_counts']}")


def build_page(models: DemoModels, examples: list[str], scanned: int):
    """The Gradio page over `models` (loaded), with `examples` (found among `scanned` test reviews) one click each."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # else Gradio reaches out to the network
    import gradio as gr

    labels, names = models.cfg.labels, list(models.predictors)
    work = Path(tempfile.mkdtemp(prefix="demo-"))  # labelled files, one folder per upload

    def on_text(text):
        answer = classify_text(models, text)
        bars = [gr.Label(value={lab: float(x) for lab, x in zip(labels, answer.probabilities[name])},
                         label=f"{name} · {answer.milliseconds[name]:.0f} ms")
                if answer.probabilities else gr.Label(value=None, label=name) for name in names]
        table = answer.table(labels) if answer.probabilities else pd.DataFrame()
        return [answer.message, *bars, table]

    def on_file(upload, model_name, text_column, progress=gr.Progress(track_tqdm=True)):
        files, message = label_upload(models, upload, model_name, text_column, tempfile.mkdtemp(dir=work))
        return message, [str(f) for f in files] or None

    with gr.Blocks(title="Sentiment course: try the classifiers") as page:
        gr.Markdown(f"## Try the trained classifiers\nRun: `{models.cfg.run_dir}` · labels: {', '.join(labels)}" +
                    "".join(f"\n- {line}" for line in models.missing))
        with gr.Tab("Try a review"):
            text = gr.Textbox(label="A review", lines=3, elem_id="demo-text",
                              placeholder="the battery died but support replaced it overnight")
            button = gr.Button("Classify", variant="primary", elem_id="demo-classify")
            message = gr.Markdown(elem_id="demo-message")
            with gr.Row():
                bars = [gr.Label(label=name, num_top_classes=len(labels), elem_classes="demo-bars") for name in names]
            table = gr.Dataframe(label="The same numbers", interactive=False, elem_id="demo-table")
            outputs = [message, *bars, table]
            for event in (button.click, text.submit):
                event(on_text, text, outputs)
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=text, outputs=outputs, fn=on_text,
                            run_on_click=True, cache_examples=False, examples_per_page=8, elem_id="demo-examples",
                            label=f"Test-split reviews on which the models disagree ({len(examples)} of the "
                                  f"{scanned} read)")
            elif scanned:
                gr.Markdown(f"The models agree on all {scanned} test-split reviews read (demo_scan_rows).")
        with gr.Tab("Label a file"):
            upload = gr.File(label="A CSV (with a header row) or JSONL file", file_types=[".csv", ".jsonl"],
                             type="filepath", elem_id="demo-upload")
            with gr.Row():
                model_name = gr.Dropdown(list(models.paths), value=next(iter(models.paths)), label="Model")
                text_column = gr.Textbox(value=models.cfg.text_column, label="Text column")
            label_button = gr.Button("Label the file", variant="primary", elem_id="demo-label")
            file_message = gr.Markdown(elem_id="demo-file-message")
            labelled = gr.File(label="Labelled file", file_count="multiple", elem_id="demo-download")
            label_button.click(on_file, [upload, model_name, text_column], [file_message, labelled],
                               show_progress_on=labelled)
    return page


def launch(page, port: int = 0) -> str:
    """Serve `page` on 127.0.0.1 (`port` 0: a free one) in the background; returns its URL. `page.close()` stops it."""
    import gradio as gr

    offline = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts
    _, url, _ = page.launch(server_name=HOST, server_port=port or free_port(), prevent_thread_lock=True, quiet=True,
                            show_error=False, inbrowser=False, share=False, theme=offline)
    return url


def open_demo(run_dir: str | Path | None = None, profile: str = "*", port: int = 0, progress=print, **overrides):
    """(page, URL, models): the page over a run's models, served on 127.0.0.1 in the background."""
    run = demo_run(run_dir, profile)
    models = load_models(find_models(demo_config(run, **overrides)), progress)
    progress(f"finding the test-split reviews the models disagree on (first {models.cfg.demo_scan_rows})")
    try:
        examples, scanned = test_examples(models)
    except DataError as err:  # the run's data file has moved, say: the page works without its examples
        examples, scanned = [], 0
        models.missing.append(f"no examples: {err}")
    page = build_page(models, examples, scanned)
    return page, launch(page, port), models
