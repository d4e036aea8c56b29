import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.config import make_config
from helpers.evaluate import (INVALID, _label_logprobs, classification_metrics, classify_by_generation,
                              classify_by_scoring, evaluate_model, metrics_summary, normalise_rows, parse_label,
                              prompt_text, score_labels)
from helpers.model import load_model

LABELS = ("negative", "neutral", "positive")


@pytest.mark.parametrize("answer, label", [
    ("Positive.", "positive"), (" negative\n", "negative"), ("NEUTRAL", "neutral"), ("positive!!", "positive"),
    ("Sentiment", INVALID), ("", INVALID), ("not positive", INVALID), ("positive or negative", INVALID),
    ("  neutral - mixed", "neutral"), ("posit", INVALID), ("negative, negative", "negative")])
def test_parse_label_on_tricky_answers(answer, label):
    assert parse_label(answer, LABELS) == label


def test_metrics_on_hand_made_predictions():
    gold = ["positive", "positive", "negative", "neutral"]
    pred = ["positive", "negative", "negative", INVALID]
    m = classification_metrics(gold, pred, LABELS)
    assert m["accuracy"] == 0.5 and m["invalid_rate"] == 0.25 and m["n"] == 4
    # F1: negative 2/3 (p=.5, r=1), neutral 0, positive 2/3 (p=1, r=.5) -> macro 4/9
    assert m["macro_f1"] == pytest.approx(4 / 9)
    assert m["per_class"]["positive"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["confusion"] == {"labels": [*LABELS, INVALID], "matrix": [[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]}


def test_metrics_refuse_mismatched_lengths():
    with pytest.raises(ValueError, match="as many predictions as gold labels"):
        classification_metrics(["positive"], [], LABELS)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    cfg = make_config("workshop", run_dir=tmp_path_factory.mktemp("run"))
    return cfg, *load_model(cfg)


REVIEWS = ["this is the best camera i have ever owned.", "the battery died after two days, total junk.",
           "the box contains a charger and a cable.", "works as described.", "i returned it.",
           "absolutely love the screen!", "it is ok i guess.", "terrible customer service."]


def test_scoring_gives_probabilities_and_a_valid_label(smollm2):
    cfg, model, tokenizer = smollm2
    probs = score_labels(model, tokenizer, REVIEWS, cfg, batch_size=3, progress=False)
    assert probs.shape == (8, 3) and np.allclose(probs.sum(1), 1) and (probs > 0).all()
    labels, _, speed = classify_by_scoring(model, tokenizer, REVIEWS, cfg, progress=False)
    assert set(labels) <= set(LABELS) and speed > 0


def full_forward_logprobs(model, tokenizer, prompt, token_ids):
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
    return torch.log_softmax(logits, -1)[token_ids].numpy()


def test_shared_prefix_scoring_matches_a_full_forward_pass_per_review(smollm2):
    cfg, model, tokenizer = smollm2
    first = [tokenizer.encode(label)[0] for label in LABELS]
    # batch size 3 over 8 reviews of different lengths: padded batches and a short last batch
    probs = score_labels(model, tokenizer, REVIEWS, cfg, batch_size=3, progress=False)
    expected = normalise_rows([full_forward_logprobs(model, tokenizer, prompt_text(tokenizer, t, cfg), first)
                               for t in REVIEWS])
    assert np.allclose(probs, expected, atol=1e-4)
    assert score_labels(model, tokenizer, REVIEWS[:1], cfg, progress=False) == pytest.approx(expected[:1], abs=1e-4)


def test_multi_token_labels_sum_the_log_probabilities_of_their_tokens(smollm2):
    cfg, model, tokenizer = smollm2
    prompts = [prompt_text(tokenizer, t, cfg) for t in REVIEWS[:2]]
    one, two = tokenizer.encode("positive"), tokenizer.encode("positive!")  # a two-token "label"
    assert len(one) == 1 and len(two) == 2
    tokenizer.padding_side = "left"
    slow = _label_logprobs(model, tokenizer, prompts, [one, two], torch)
    with torch.no_grad():
        enc = tokenizer(prompts[0] + "positive!", return_tensors="pt")
        logp = torch.log_softmax(model(**enc).logits[0], -1)
        n = enc["input_ids"].shape[1]
        expected = logp[n - 3, two[0]] + logp[n - 2, two[1]]
    assert slow[0, 1] == pytest.approx(expected.item(), abs=1e-3)
    assert slow[0, 0] == pytest.approx(full_forward_logprobs(model, tokenizer, prompts[0], one)[0], abs=1e-4)


def test_scoring_agrees_with_generation_where_generation_is_valid(smollm2):
    cfg, model, tokenizer = smollm2
    # The untrained model rarely answers with a bare label to the course's terse prompt; a wordier one gets some.
    cfg = dataclasses.replace(cfg, system_prompt="Classify the review's sentiment. Answer with one word: positive, "
                                                 "negative or neutral.")
    generated, answers, _ = classify_by_generation(model, tokenizer, REVIEWS, cfg, progress=False)
    scored, _, _ = classify_by_scoring(model, tokenizer, REVIEWS, cfg, progress=False)
    valid = [(g, s) for g, s in zip(generated, scored) if g != INVALID]
    assert valid, f"no valid generation at all: {answers}"
    assert all(g == s for g, s in valid), list(zip(answers, scored))


def test_evaluate_model_reports_both_methods(smollm2):
    cfg, model, tokenizer = smollm2
    df = pd.DataFrame({"text": REVIEWS[:3], "label": ["positive", "negative", "neutral"]})
    for method in ("scoring", "generation"):
        m = evaluate_model(model, tokenizer, df, cfg, method=method, progress=False)
        assert m["method"] == method and len(m["predictions"]) == 3 and m["reviews_per_second"] > 0
    assert m["invalid_rate"] == np.mean([p == INVALID for p in m["predictions"]])
    with pytest.raises(ValueError, match="method must be"):
        evaluate_model(model, tokenizer, df, cfg, method="vibes")


def test_calibration_error_of_calibrated_and_of_confidently_wrong_probabilities():
    from helpers.evaluate import expected_calibration_error

    # 10 answers at confidence 0.8, 8 of them right: perfectly calibrated
    probs = [[0.1, 0.1, 0.8]] * 10
    gold = ["positive"] * 8 + ["negative"] * 2
    assert expected_calibration_error(probs, gold, LABELS)["ece"] == pytest.approx(0.0)
    wrong = expected_calibration_error([[1.0, 0.0, 0.0]] * 4, ["positive"] * 4, LABELS)
    assert wrong["ece"] == pytest.approx(1.0) and wrong["bins"] == [{"confidence": 1.0, "accuracy": 0.0, "count": 4}]


def test_mistakes_are_ordered_by_confidence_and_counted_near_the_threshold():
    from helpers.evaluate import mistakes_near_threshold, most_confident_mistakes

    df = pd.DataFrame({"text": list("abcd"), "label": ["positive", "negative", "neutral", "positive"],
                       "rating": [1.1, -3.0, 0.2, 2.5]})
    preds = ["neutral", "positive", "neutral", "negative"]
    probs = [[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2]]
    top = most_confident_mistakes(df, preds, probs, LABELS)
    assert list(top["text"]) == ["b", "d", "a"] and list(top["probability"]) == [0.8, 0.6, 0.5]
    counts = mistakes_near_threshold(df, preds, threshold=1.0, margin=0.5)
    assert counts == {"mistakes": 3, "graded_mistakes": 3, "near_threshold": 1, "share_of_test_near_threshold": 0.25}


def test_fine_tuned_margin_needs_both_sides():
    from helpers.evaluate import fine_tuned_margin

    rows = [{"method": "fine-tuned a", "macro_f1": 0.5}, {"method": "other", "macro_f1": 0.6}]
    assert fine_tuned_margin(rows, [], "few-shot prompt").startswith("Nothing to compare: the table needs a few-shot")
    assert fine_tuned_margin(rows, rows[1:], "rival").endswith("did not beat the best rival (other, 0.600): -0.100 macro-F1.")


def test_normalise_rows_is_a_stable_softmax():
    from helpers.evaluate import normalise_rows

    probs = normalise_rows([[0.0, 0.0, 0.0], [1000.0, 0.0, -1000.0]])
    assert np.allclose(probs[0], 1 / 3) and probs[1].tolist() == [1.0, 0.0, 0.0]


def test_metrics_summary_keeps_the_scores_and_drops_the_per_review_lists():
    full = {**classification_metrics(["positive", "negative"], ["positive", "positive"], LABELS), "method": "scoring",
            "reviews_per_second": 3.0, "predictions": ["positive", "positive"], "probabilities": [[0, 0, 1]] * 2}
    summary = metrics_summary(full)
    assert set(summary) == {"accuracy", "macro_f1", "invalid_rate", "reviews_per_second", "per_class", "confusion"}
    assert summary["accuracy"] == 0.5 and summary["confusion"] == full["confusion"]
