"""One predictor for every kind of trained model: each loads from its path, scores in label order like its own
engine, and generates an answer the course's parser reads."""
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.evaluate import parse_label, score_labels
from helpers.model import ModelError, load_model, resolve_model
from helpers.predict import load_predictor

TEXTS = ["Great value, works as described", "It broke after a week.", "A box with a phone in it."]


def test_a_hugging_face_folder_scores_like_label_scoring_and_generates(cfg):
    predictor = load_predictor(cfg, resolve_model(cfg))
    model, tokenizer = load_model(cfg)
    assert predictor.kind == "hf"
    assert np.allclose(predictor.probabilities(TEXTS), score_labels(model, tokenizer, TEXTS, cfg, progress=False))
    answers = predictor.generate(TEXTS)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_a_gguf_file_uses_llama_cpp(cfg, tmp_path):
    from helpers.gguf import convert_to_gguf

    gguf = convert_to_gguf(cfg, Path(resolve_model(cfg)), tmp_path / "tiny-f16.gguf")
    predictor = load_predictor(cfg, gguf)
    probabilities = predictor.probabilities(TEXTS)
    assert predictor.kind == "gguf" and probabilities.shape == (3, 3) and np.allclose(probabilities.sum(1), 1)
    assert len(predictor.generate(TEXTS[:1])) == 1


def test_encoder_and_setfit_folders_predict_in_label_order(cfg, tmp_path):
    from helpers.encoder import finetune_encoder, train_setfit

    train = pd.DataFrame({"text": ["great love", "awful junk", "a box"] * 2, "label": ["positive", "negative", "neutral"] * 2})
    tuned = finetune_encoder(cfg, train, tmp_path / "encoder")
    predictor = load_predictor(cfg, tmp_path / "encoder")
    assert predictor.kind == "encoder"
    assert np.allclose(predictor.probabilities(TEXTS), tuned["predict"](TEXTS), atol=1e-6)
    assert [parse_label(a, cfg.labels) for a in predictor.generate(TEXTS)] == predictor.generate(TEXTS)
    setfit = train_setfit(cfg, train, per_class=2, output_dir=tmp_path / "setfit")
    assert np.allclose(load_predictor(cfg, tmp_path / "setfit").probabilities(TEXTS), setfit["predict"](TEXTS),
                       atol=1e-6)
    backwards = load_predictor(dataclasses.replace(cfg, labels=cfg.labels[::-1]), tmp_path / "encoder")
    assert np.allclose(backwards.probabilities(TEXTS), predictor.probabilities(TEXTS)[:, ::-1])


def test_anything_else_is_named_with_what_a_model_path_may_be(cfg, tmp_path):
    with pytest.raises(ModelError, match=r"nope\.gguf: no such file or folder\. Pass a \.gguf file"):
        load_predictor(cfg, tmp_path / "nope.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty: not a model\. .*fine-tuned encoder or SetFit folder"):
        load_predictor(cfg, tmp_path / "empty")
