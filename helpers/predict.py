"""One way to predict with any trained model: `load_predictor(cfg, path)`.

A path can be a GGUF file (llama.cpp), a Hugging Face causal-LM folder, a LoRA adapter folder (loaded on the base
model of `cfg`), a fine-tuned encoder folder (a sequence classifier) or a SetFit folder. Every predictor answers
`probabilities(texts)` — (n, labels) in `cfg.labels` order, rows summing to 1 — and `generate(texts)` — the raw
answer per text (an encoder's answer is its top label). The engines underneath stay where they are tested: label
scoring and generation in `evaluate`, llama.cpp in `gguf`, the encoder in `encoder`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from helpers.config import CourseConfig
from helpers.evaluate import generate_answers, score_labels
from helpers.gguf import classify_gguf, load_gguf
from helpers.model import ModelError, load_model, load_tokenizer
from helpers.runs import RunLayout, disk_mb


@dataclass
class Predictor:
    """A loaded model and the engine that runs it: "hf" (PyTorch causal LM), "gguf" (llama.cpp) or "encoder"."""

    kind: str
    path: Path
    cfg: CourseConfig
    model: object
    tokenizer: object = None

    def probabilities(self, texts, progress: bool = False):
        texts = list(texts)
        if self.kind == "gguf":
            return classify_gguf(self.model, self.tokenizer, texts, self.cfg, progress=progress)[1]
        if self.kind == "encoder":
            from helpers.encoder import encoder_probabilities

            return encoder_probabilities(self.model, texts, self.cfg)
        return score_labels(self.model, self.tokenizer, texts, self.cfg, progress=progress)

    def generate(self, texts, progress: bool = False) -> list[str]:
        texts = list(texts)
        if self.kind == "gguf":
            return classify_gguf(self.model, self.tokenizer, texts, self.cfg, "generation", progress)[1]
        if self.kind == "encoder":
            return [self.cfg.labels[i] for i in self.probabilities(texts).argmax(1)]
        return generate_answers(self.model, self.tokenizer, texts, self.cfg, progress=progress)

    @property
    def size_mb(self) -> float:
        """What the model weighs on disk: the GGUF file, or the folder's weight files."""
        return disk_mb(*([self.path] if self.path.is_file() else self.path.glob("*.safetensors")))


def load_predictor(cfg: CourseConfig, path: str | Path) -> Predictor:
    """The predictor for whatever model `path` holds, or one ModelError that says what a model path may be."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        merged = RunLayout(path.parent.parent).merged  # the run folder the file was exported in, if it was
        tokenizer = load_tokenizer(cfg, merged if (merged / "tokenizer_config.json").exists() else None)
        return Predictor("gguf", path, cfg, load_gguf(path, cfg), tokenizer)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base, tokenizer = load_model(cfg)
        return Predictor("hf", path, cfg, PeftModel.from_pretrained(base, path).eval(), tokenizer)
    if (path / "model_head.pkl").is_file() or _is_sequence_classifier(path):
        from helpers.encoder import load_encoder_classifier

        return Predictor("encoder", path, cfg, load_encoder_classifier(path))
    if (path / "config.json").is_file():
        return Predictor("hf", path, cfg, *load_model(cfg, path))
    raise ModelError(f"{path}: {'no such file or folder' if not path.exists() else 'not a model'}. Pass a .gguf file, "
                     f"a Hugging Face model folder (with config.json), a LoRA adapter folder (with "
                     f"adapter_config.json) or a fine-tuned encoder or SetFit folder.")


def _is_sequence_classifier(path: Path) -> bool:
    config = path / "config.json"
    return config.is_file() and any(a.endswith("ForSequenceClassification")
                                    for a in json.loads(config.read_text()).get("architectures") or [])
