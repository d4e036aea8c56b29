"""The model cards: Hub-readable front matter with the run's own figures, and every section a user needs."""
import json

import pytest
import yaml

from helpers.modelcard import write_model_card, write_model_cards
from helpers.runs import EXPORT, TRAINING, layout

RESULTS = {"n": 240, "accuracy": 0.6708, "macro_f1": 0.6693,
           "per_class": {"negative": {"precision": 0.64, "recall": 0.8, "f1": 0.711, "support": 80},
                         "neutral": {"precision": 0.53, "recall": 0.49, "f1": 0.51, "support": 80},
                         "positive": {"precision": 0.82, "recall": 0.69, "f1": 0.75, "support": 80}}}


def read_card(path):
    text = path.read_text(encoding="utf-8")
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def test_the_card_has_the_hub_metadata_and_every_section(cfg, tmp_path):
    meta, body = read_card(write_model_card(cfg, tmp_path, "adapter", RESULTS))
    assert meta["base_model"] == "tiny random SmolLM2 (tests only)" and meta["library_name"] == "peft"
    assert meta["datasets"] == ["VADER Amazon review snippets (Hutto & Gilbert, ICWSM 2014; MIT)"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "test (240 rows)"
    assert result["metrics"] == [{"type": "accuracy", "value": 0.6708}, {"type": "f1", "name": "macro-F1", "value": 0.6693}]
    for section in ("## Data", "## Labels", "## System prompt", "## Test results", "## Limits", "## Intended use"):
        assert section in body
    assert cfg.system_prompt in body and "accuracy **0.671**, macro-F1 **0.669**" in body
    assert "| neutral | 0.530 | 0.490 | 0.510 | 80 |" in body and "±0.06" in body  # 1.96 * sqrt(.25 / 240)
    with pytest.raises(ValueError, match="kind must be one of"):
        write_model_card(cfg, tmp_path, "onnx", RESULTS)


def test_a_known_base_model_gets_its_hub_id_and_licence(cfg, tmp_path):
    cfg.model, cfg.dataset = "embedded:smollm2", str(tmp_path / "my_reviews.csv")
    meta, body = read_card(write_model_card(cfg, tmp_path, "merged", RESULTS))
    assert (meta["base_model"], meta["license"]) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    assert meta["datasets"] == ["my_reviews.csv"] and "a labelled file of the user's" in body


def test_a_run_folder_gets_a_card_beside_each_model_it_holds(cfg):
    run = layout(cfg)
    assert write_model_cards(cfg) == []  # nothing trained yet
    for folder in (run.adapter, run.merged, run.folder(EXPORT)):
        folder.mkdir(parents=True)
    run.metrics_file(TRAINING).write_text(json.dumps({"fine_tuned": RESULTS, "test_labels": ["x"] * 240,
                                                      "verdict": "fine-tuned beats zero-shot (test verdict)",
                                                      "decision_rule": {"offsets": [0, 1.5, 0],
                                                                        "sentence": "Decision rule (test)."}}))
    (run.folder(EXPORT) / "model-Q4_K_M.gguf").write_bytes(b"")
    run.metrics_file(EXPORT).write_text(json.dumps({"formats": [
        {"format": "HF fp32", "accuracy": 0.67, "macro_f1": 0.66},
        {"format": "GGUF Q4_K_M", "accuracy": 0.658, "macro_f1": 0.656}], "verdict": "Q4_K_M is tied (test verdict)"}))
    cards = write_model_cards(cfg)
    assert cards == [run.adapter / "README.md", run.merged / "README.md", run.folder(EXPORT) / "README.md"]
    meta, body = read_card(cards[2])
    assert meta["library_name"] == "gguf" and meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.658
    assert "`model-Q4_K_M.gguf`" in body and "On 240 test rows (GGUF Q4_K_M): accuracy **0.658**" in body
    assert "Q4_K_M is tied (test verdict)" in body and "zero-shot" not in body  # each card states its chapter's verdict
    assert "fine-tuned beats zero-shot (test verdict)" in read_card(cards[0])[1]
    for card in cards:  # the rule travels with every model, and the card says which engines apply it
        assert "Decision rule (test). It is saved beside the model (`decision.json`)" in read_card(card)[1]
