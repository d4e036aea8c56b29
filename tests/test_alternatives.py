import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from helpers.alternatives import (ENCODER, SETFIT, Comparison, add_kept_encoder_rows, ceiling_sentence, central_tests,
                                  cheapest_within_noise, crossing_sentence, curve_subsets, encoder_epochs_sentence,
                                  fit_llm_adapter, human_agreement, kept_encoder_models, known_curve_points,
                                  learning_curve, little_data_sentence, llm_curve_points, llm_vs_alternatives,
                                  out_of_domain_set,
                                  rater_ratings, run_llm_rows, score, score_without_retraining, setfit_curve_points,
                                  setfit_sizes, travels_best, verdicts, when_to_fine_tune)
from helpers.data import DataError, load_hutto, prepare_splits
from helpers.runs import RunError, layout, record_metrics

LABELS = ("negative", "neutral", "positive")


def frame(ids):
    return pd.DataFrame({"id": ids, "text": ids, "label": "neutral"})


def test_one_rater_against_the_others_is_exact_on_hand_made_ratings():
    # a: all raters agree (positive); b: whoever is picked, the others' mean falls on the other side of the threshold
    ratings = {"a": [2, 2, 2], "b": [4, 0, 0], "c": [1]}  # c has one rating: no "others", left out
    human = human_agreement(frame(["a", "b", "c", "zz"]), ratings, LABELS, threshold=1.0, draws=30, seed=0)
    assert human["n"] == 2 and human["draws"] == 30
    assert human["accuracy_mean"] == 0.5 and human["accuracy_sd"] == 0.0
    agree = human_agreement(frame(["a"]), {"a": [-3, -2, -4, -1]}, LABELS, 1.0, 5, 0)
    assert agree["accuracy_mean"] == 1.0 and agree["macro_f1_sd"] == 0.0


def test_human_agreement_varies_with_the_draw_and_is_seeded():
    ratings = {str(i): [2, 2, 0, -2] for i in range(12)}
    first = human_agreement(frame(list(ratings)), ratings, LABELS, 1.0, 50, seed=3)
    assert first == human_agreement(frame(list(ratings)), ratings, LABELS, 1.0, 50, seed=3)
    assert first["accuracy_sd"] > 0 and 0 < first["accuracy_mean"] < 1


def test_human_agreement_needs_individual_ratings():
    with pytest.raises(DataError, match="two or more individual ratings"):
        human_agreement(frame(["x"]), {"y": [1, 2]}, LABELS, 1.0, 3, 0)
    with pytest.raises(DataError):
        human_agreement(pd.DataFrame({"text": ["t"], "label": ["neutral"]}), {"t": [1, 2]}, LABELS, 1.0, 3, 0)


def test_real_rater_ratings_match_the_ground_truth_means():
    ratings = rater_ratings("amazon")
    df = load_hutto("amazon")
    assert len(ratings) == len(df) == 3708 and all(len(v) == 20 for v in ratings.values())
    means = df.set_index("id")["rating"]
    assert all(abs(np.mean(ratings[i]) - means[i]) < 0.01 for i in list(ratings)[:500])
    assert rater_ratings("my_reviews.csv") is None  # the learner's own data: no human ceiling
    assert rater_ratings("hutto:nyt") is not None


def test_out_of_domain_set_is_balanced_and_can_be_off(cfg):
    ood = out_of_domain_set(cfg)
    assert len(ood) == cfg.ood_size and set(ood["label"].value_counts()) == {cfg.ood_size // 3}
    assert ood["group"].str.startswith("tweets-").all()
    cfg.ood_dataset = ""
    assert out_of_domain_set(cfg) is None


def test_llm_vs_alternatives_ties_inside_the_noise_and_names_the_winner_outside():
    gold = list(np.array(LABELS)[np.arange(60) % 3])
    almost = list(gold)
    almost[0] = "neutral"
    llm = {"method": "fine-tuned LLM", "kind": "fine-tuned LLM", "macro_f1": 0.98, "predictions": almost}
    rival = {"method": "MiniLM", "kind": "encoder", "macro_f1": 1.0, "predictions": gold}
    tie = llm_vs_alternatives(gold, [llm, rival], LABELS, "In domain", seed=0)
    assert tie["tie"] and tie["sentence"].startswith("In domain: fine-tuned LLM (0.980 macro-F1) and MiniLM (1.000) "
                                                     "are tied within the test set's noise")
    wrong = {**rival, "macro_f1": 0.0, "predictions": [LABELS[(LABELS.index(g) + 1) % 3] for g in gold]}
    win = llm_vs_alternatives(gold, [llm, wrong], LABELS, "Out of domain", seed=0)
    assert win["winner"] == "fine-tuned LLM" and win["sentence"].startswith("Out of domain: fine-tuned LLM (0.980 "
                                                                            "macro-F1) beats MiniLM (0.000) by ")


def test_cheapest_within_noise_prefers_the_cheap_tie():
    gold = list(np.array(LABELS)[np.arange(60) % 3])
    almost = list(gold)
    almost[0] = "neutral"
    rows = [{"method": "big", "macro_f1": 1.0, "predictions": gold, "train_seconds": 100.0},
            {"method": "small", "macro_f1": 0.98, "predictions": almost, "train_seconds": 1.0},
            {"method": "bad", "macro_f1": 0.0, "train_seconds": 0.1,
             "predictions": [LABELS[(LABELS.index(g) + 1) % 3] for g in gold]}]
    sentence = cheapest_within_noise(gold, rows, LABELS, "train_seconds", seed=0)
    assert sentence.startswith("Per second of training: small (0.980 macro-F1, 1.0 s of training) is tied with the "
                               "best, big (1.000, 100.0 s of training), at 100x less cost.")
    rows[0]["train_seconds"] = 0.5
    assert cheapest_within_noise(gold, rows, LABELS, "train_seconds", seed=0) == (
        "Per second of training: the best method, big (1.000, 0.5 s of training), is also the cheapest of those tied "
        "with it (others tied: small, 1.0).")


def test_when_to_fine_tune_follows_the_two_comparisons():
    win = {"winner": "fine-tuned LLM, HF", "interval": "+0.200, 95 % interval +0.100 to +0.300"}
    lose = {"winner": "encoder", "interval": "-0.200, 95 % interval -0.300 to -0.100"}
    tie = {"winner": None, "interval": "+0.030, 95 % interval -0.040 to +0.100"}
    assert "earns its cost" in when_to_fine_tune(win, win)
    assert "drift" in when_to_fine_tune(tie, win)
    assert "a cheaper model is the right tool" in when_to_fine_tune(lose, tie)
    advice = when_to_fine_tune(tie, None)
    assert "ties the best cheap alternative" in advice  # every claim carries the bootstrap's figures it rests on
    assert advice.endswith("(Fine-tuned LLM minus the best alternative, macro-F1: in domain +0.030, 95 % interval "
                           "-0.040 to +0.100.)")
    assert "out of domain -0.200, 95 % interval -0.300 to -0.100" in when_to_fine_tune(tie, lose)


def test_little_data_sentence_calls_the_llm_against_the_best_rival_at_its_smallest_size():
    gold = list(np.array(LABELS)[np.arange(60) % 3])
    wrong = [LABELS[(LABELS.index(g) + 1) % 3] for g in gold]
    curve = [{"method": "TF-IDF", "size": 48, "macro_f1": 1.0, "predictions": gold},
             {"method": "fine-tuned LLM", "size": 48, "macro_f1": 0.0, "predictions": wrong},
             {"method": "fine-tuned LLM", "size": 480, "macro_f1": 0.7, "predictions": gold},
             {"method": "SetFit", "size": 24, "macro_f1": 0.5, "predictions": gold}]
    assert little_data_sentence(curve, None, gold, LABELS, seed=0) == (
        "With little data (48 examples): TF-IDF (1.000 macro-F1) beats fine-tuned LLM (0.000) by 1.000 (95 % interval "
        "+1.000 to +1.000).")
    curve[1] = {**curve[1], "macro_f1": 0.983, "predictions": ["neutral"] + gold[1:]}
    human = {"macro_f1_mean": 0.75}
    tied = little_data_sentence(curve, human, gold, LABELS, seed=0)
    assert "are tied within the test set's noise" in tied and tied.endswith("; one human rater reaches 0.750.")
    assert little_data_sentence(curve[:1], None, gold, LABELS, seed=0).startswith("Little data: no LLM point")


def test_comparison_scores_every_domain_once_and_keeps_known_rows():
    domains = {"test": pd.DataFrame({"text": ["a", "b"], "label": ["positive", "negative"]}),
               "ood": pd.DataFrame({"text": ["c"], "label": ["neutral"]})}
    comparison, loads = Comparison(domains, LABELS), []

    def load():
        loads.append(1)
        return lambda texts: np.tile([0.1, 0.2, 0.7], (len(texts), 1))
    comparison.add("always positive", "classic", load, train_seconds=1.0)
    known = {"accuracy": 0.9, "macro_f1": 0.8}
    comparison.add("measured before", "fine-tuned LLM", lambda: pytest.fail("must not load"), known={"test": known,
                                                                                                      "ood": known})
    comparison.add("rules", "classic", lambda: (lambda texts: ["neutral"] * len(texts)))
    assert loads == [1]
    assert [r["accuracy"] for r in comparison.rows["test"]] == [0.5, 0.9, 0.0]
    assert comparison.rows["ood"][2]["accuracy"] == 1.0 and comparison.rows["ood"][0]["predictions"] == ["positive"]
    assert list(comparison.table("test").index) == ["measured before", "always positive", "rules"]
    assert "predictions" not in json.dumps(comparison.summary())


def test_run_llm_rows_reads_notebooks_02_and_04(cfg):
    record_metrics(cfg, "02_logged_training", fine_tuned={"accuracy": 0.7, "macro_f1": 0.69}, train_seconds=120.0,
                   zero_shot={"accuracy": 0.5, "macro_f1": 0.4}, artifact_mb={"merged": 538.0},
                   test_labels=["positive", "negative"], test_predictions=["positive", "positive"],
                   zero_shot_probabilities=[[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]])
    record_metrics(cfg, "04_few_shot_vs_finetuned", results=[
        {"method": "base 5-shot (GGUF)", "accuracy": 0.49, "macro_f1": 0.39},
        {"method": "fine-tuned 0-shot (GGUF Q4_K_M)", "accuracy": 0.66, "macro_f1": 0.66, "size_mb": 105.0},
        {"method": "VADER (rules, no training)", "accuracy": 0.55, "macro_f1": 0.54}])
    rows = run_llm_rows(cfg, n_train=480)
    assert [r["method"] for r in rows] == ["fine-tuned LLM, HF fp32 (LoRA, merged)", "base LLM 0-shot (HF label scoring)",
                                           "base LLM 5-shot (GGUF)", "fine-tuned LLM, GGUF Q4_K_M"]
    assert rows[0]["known"]["test"]["predictions"] == ["positive", "positive"] and rows[0]["size_mb"] == 538.0
    assert rows[1]["known"]["test"]["predictions"] == ["positive", "negative"]
    assert rows[3]["train_seconds"] == 120.0 and rows[3]["model"].name == "model-Q4_K_M.gguf"
    assert rows[2]["model"] is None


def test_run_llm_rows_of_a_run_made_by_the_train_command(cfg):
    record_metrics(cfg, "02_logged_training", fine_tuned={"accuracy": 0.7, "macro_f1": 0.69}, train_seconds=120.0,
                   artifact_mb={"merged": 538.0}, test_labels=["positive"], test_predictions=["positive"])
    assert [r["method"] for r in run_llm_rows(cfg, 480)] == ["fine-tuned LLM, HF fp32 (LoRA, merged)"]
    cfg.run_dir = cfg.run_dir / "empty"
    assert run_llm_rows(cfg, 480) == []  # notebook 02 not run here: no LLM row


@pytest.mark.slow
def test_curve_subsets_add_the_whole_split(cfg):
    splits = prepare_splits(cfg)
    cfg.learning_curve_sizes = (12, 24, 999)
    subsets = curve_subsets(cfg, splits.train)
    assert list(subsets) == [12, 24, len(splits.train)] and len(subsets[12]) == 12
    assert set(subsets[12]["label"].value_counts()) == {4}


def test_known_points_are_kept_and_only_missing_ones_trained(cfg, monkeypatch):
    from helpers import encoder

    splits = prepare_splits(cfg)
    cfg.learning_curve_sizes, cfg.learning_curve_llm_sizes = (12,), ()
    fitted = []
    monkeypatch.setattr(encoder, "fit_frozen_logreg", lambda cfg, subset: fitted.append(len(subset)) or
                        (lambda texts: np.tile([0.2, 0.3, 0.5], (len(texts), 1))))
    monkeypatch.setattr(encoder, "finetune_encoder", lambda cfg, subset, out, progress: fitted.append(-len(subset)) or
                        {"predict": lambda texts: ["neutral"] * len(texts)})
    rows = [{"method": "TF-IDF + logistic regression", "n_train": 48, "macro_f1": 0.5, "accuracy": 0.5,
             "train_seconds": 1.0}, {"method": "SetFit (MiniLM), 2 per class", "n_train": 6, "macro_f1": 0.4,
                                     "accuracy": 0.4, "train_seconds": 3.0}]
    points = learning_curve(cfg, splits.train, splits.test, known_curve_points(rows), cfg.run_dir)
    assert sorted(fitted) == [-48, -12, 12, 48]  # the encoders at both sizes; TF-IDF at 48 was known
    by = {(p["method"], p["size"]): p for p in points}
    assert by[("TF-IDF + logistic regression", 48)]["reused"] and not by[("TF-IDF + logistic regression", 12)]["reused"]
    assert by[("SetFit (MiniLM)", 6)]["macro_f1"] == 0.4
    assert by[("MiniLM fine-tuned end to end", 12)]["macro_f1"] == pytest.approx(1 / 6)  # all neutral on 8/8/8
    assert not any(m.startswith("fine-tuned LLM") for m, _ in by)  # no LLM size in this profile


def test_the_llm_trains_for_one_epoch_or_the_configured_steps_whichever_is_longer(cfg):
    cfg.learning_curve_llm_steps, cfg.learning_curve_llm_points = 4, 2
    assert llm_curve_points(cfg, 12) == (4, (0, 2, 4))  # 3 steps make an epoch at batch 4: the floor wins
    assert llm_curve_points(cfg, 48) == (12, (0, 6, 12))  # the epoch wins; zero-shot is always a candidate


@pytest.mark.slow
def test_the_llm_s_budget_at_a_curve_size_is_chosen_on_the_eval_split_and_its_adapter_kept(cfg):
    splits = prepare_splits(cfg)
    cfg.learning_curve_llm_steps, cfg.learning_curve_llm_points = 4, 2
    chosen = {}
    predict = fit_llm_adapter(cfg, splits.train.head(12), splits.eval, cfg.run_dir, chosen=chosen)
    scores = chosen["eval_macro_f1"]
    assert list(scores) == [0, 2, 4] and chosen["steps"] == 4 and chosen["eval_rows"] == len(splits.eval)
    assert chosen["step"] == min(s for s, f1 in scores.items() if f1 == max(scores.values()))  # the first best
    again = score(predict, splits.eval, cfg.labels)["macro_f1"]  # the merged model is the chosen step's adapter
    assert again == pytest.approx(scores[chosen["step"]], abs=1e-9)
    probabilities = np.asarray(predict(["fine", "awful"]))
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(1), 1) and chosen["train_seconds"] > 0


def test_the_llm_on_the_curve_needs_the_eval_split(cfg):
    splits = prepare_splits(cfg)
    with pytest.raises(ValueError, match="chosen on the eval split: pass eval_df=splits.eval"):
        learning_curve(cfg, splits.train, splits.test, [], cfg.run_dir, methods=("fine-tuned LLM, HF fp32 (LoRA, "
                                                                                 "merged)",))


def test_ceiling_sentence_reads_the_gap_against_the_spread():
    rows = [{"method": "A", "macro_f1": 0.70}, {"method": "B", "macro_f1": 0.60}]
    human = {"macro_f1_mean": 0.75, "macro_f1_sd": 0.02}
    assert ceiling_sentence(rows, human, "In domain") == ("In domain: the best model, A (0.700 macro-F1), is below one "
                                                         "human rater against the others (0.750 ± 0.020).")
    assert "level with" in ceiling_sentence(rows, {**human, "macro_f1_mean": 0.71}, "x")
    assert "no human ceiling" in ceiling_sentence(rows, None, "x")


def test_verdicts_cover_every_question(cfg):
    gold = list(np.array(LABELS)[np.arange(30) % 3])
    domains = {name: pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": gold}) for name in ("test", "ood")}
    comparison = Comparison(domains, LABELS)
    perfect = lambda: (lambda texts: gold)  # noqa: E731
    comparison.add("fine-tuned LLM, HF", "fine-tuned LLM", perfect, train_seconds=100.0)
    comparison.add("TF-IDF + logistic regression", "classic", lambda: (lambda texts: ["neutral"] * len(texts)),
                   train_seconds=1.0)
    out = verdicts(comparison, [], {}, seed=0)
    assert set(out) == {"test_llm_vs_alternatives", "ood_llm_vs_alternatives", "test_ceiling", "ood_ceiling",
                        "little_data", "per_train_seconds", "per_serve_seconds", "advice"}
    assert out["test_llm_vs_alternatives"].startswith("In domain: fine-tuned LLM, HF (1.000 macro-F1) beats TF-IDF")
    assert "earns its cost" in out["advice"]
    tests = central_tests(comparison, seed=0)  # what the metrics file keeps of them, and the laptop bench compares
    assert list(tests) == ["test", "ood"] and tests["test"]["outcome"] == "ahead" and tests["test"]["n"] == 30
    assert (tests["ood"]["llm"], tests["ood"]["rival"]) == ("fine-tuned LLM, HF", "TF-IDF + logistic regression")
    assert tests["ood"]["llm_macro_f1"] == 1.0 and tests["ood"]["rival_macro_f1"] == pytest.approx(1 / 6)
    assert tests["test"]["sentence"] == out["test_llm_vs_alternatives"]


# --- the worked solutions of the exercises ----------------------------------------------------------------------------

GOLD = list(np.array(LABELS)[np.arange(60) % 3])
WRONG = [LABELS[(LABELS.index(g) + 1) % 3] for g in GOLD]


def almost(k):
    """GOLD with the first k answers wrong: macro-F1 about 1 - k/60."""
    return WRONG[:k] + GOLD[k:]


def point(method, size, predictions):
    return {"method": method, "size": size, "predictions": predictions,
            "macro_f1": float(f1_score(GOLD, predictions, labels=list(LABELS), average="macro"))}


def test_crossing_sentence_names_the_first_size_where_setfit_reaches_the_encoder():
    curve = [point(SETFIT, 24, WRONG), point(ENCODER, 24, GOLD), point(SETFIT, 48, almost(1)),
             point(ENCODER, 48, GOLD), point(SETFIT, 96, GOLD), point(ENCODER, 96, almost(2)),
             point(ENCODER, 1440, GOLD)]  # the encoder's whole-split point has no SetFit partner
    out = crossing_sentence(curve, GOLD, LABELS, seed=0)
    assert out["outcomes"] == {24: "behind", 48: "tied", 96: "tied"} and out["first_reach"] == 48
    assert out["sentence"].startswith("SetFit's macro-F1 reaches the fine-tuned encoder's first, after trailing at the "
                                      "smaller sizes, at 16 per class (48 rows): SetFit (MiniLM) (0.983 macro-F1) and "
                                      "MiniLM fine-tuned end to end (1.000) are tied within the test set's noise")
    assert "It stays level or ahead up to the largest size tried (96 rows). The encoder on 1440 rows against SetFit " \
           "on its largest, 96: MiniLM fine-tuned end to end (1.000 macro-F1) and SetFit (MiniLM) (1.000) are tied" \
           in out["sentence"]


def test_crossing_sentence_when_setfit_never_reaches_or_falls_behind_again():
    never = crossing_sentence([point(SETFIT, 24, WRONG), point(ENCODER, 24, GOLD), point(SETFIT, 48, WRONG),
                               point(ENCODER, 48, GOLD)], GOLD, LABELS, 0, note=" (64 per class capped.)")
    assert never["first_reach"] is None and never["sentence"].startswith(
        "SetFit's curve does not reach the fine-tuned encoder's within the sizes tried (24 to 48 training rows)")
    assert never["sentence"].endswith(" (64 per class capped.)")
    again = crossing_sentence([point(SETFIT, 6, GOLD), point(ENCODER, 6, WRONG), point(SETFIT, 12, WRONG),
                               point(ENCODER, 12, GOLD)], GOLD, LABELS, 0)
    assert again["outcomes"] == {6: "ahead", 12: "behind"}
    assert "already at the smallest size tried, 2 per class (6 rows): SetFit (MiniLM) (1.000 macro-F1) beats" in \
        again["sentence"]
    assert " The encoder pulls ahead again at 12 rows: MiniLM fine-tuned end to end (1.000 macro-F1) beats" in \
        again["sentence"]
    assert "nothing to compare" in crossing_sentence([point(SETFIT, 6, GOLD)], GOLD, LABELS, 0)["sentence"]


def test_setfit_sizes_cap_at_the_rarest_class_with_a_note():
    train = pd.DataFrame({"label": ["negative"] * 12 + ["neutral"] * 16 + ["positive"] * 16})
    assert setfit_sizes(train, (8, 2), LABELS) == ((2, 8), "")
    sizes, note = setfit_sizes(train, (2, 32, 64), LABELS)
    assert sizes == (2, 12) and note == (" (32 and 64 per class are more than the training split holds of its rarest "
                                         "class, 12 rows: trained at 12 per class instead.)")
    assert setfit_sizes(train, (2, 13), LABELS)[1].startswith(" (13 per class is more")


def test_setfit_curve_points_reuse_known_rows_and_train_the_rest(cfg, monkeypatch):
    from helpers import encoder

    trained = []
    monkeypatch.setattr(encoder, "train_setfit", lambda cfg, train, k, out: trained.append(k) or {
        "n_train": 3 * k, "fit_seconds": 2.0, "predict": lambda texts: ["neutral"] * len(texts)})
    test = pd.DataFrame({"text": ["a", "b", "c"], "label": list(LABELS)})
    known = [{**point(SETFIT, 24, GOLD), "reused": False}, point(ENCODER, 96, GOLD)]
    points = setfit_curve_points(cfg, test, test, (8, 32), known, cfg.run_dir)
    assert trained == [32] and [(p["size"], p["reused"]) for p in points] == [(24, True), (96, False)]
    assert points[1]["macro_f1"] == pytest.approx(1 / 6) and points[1]["train_seconds"] == 2.0


def test_learning_curve_trains_only_the_methods_asked(cfg, monkeypatch):
    from helpers import encoder

    splits = prepare_splits(cfg)
    cfg.learning_curve_sizes = (12,)
    fitted = []
    monkeypatch.setattr(encoder, "finetune_encoder", lambda cfg, subset, out, progress: fitted.append(len(subset)) or
                        {"predict": lambda texts: ["neutral"] * len(texts)})
    known = [{**point(ENCODER, len(splits.train), GOLD), "reused": True}]
    points = learning_curve(cfg, splits.train, splits.test, known, cfg.run_dir, methods=(ENCODER,))
    assert fitted == [12] and {(p["method"], p["size"]) for p in points} == {(ENCODER, 12), (ENCODER, 48)}


def row(method, kind, predictions, seconds=None):
    return {"method": method, "kind": kind, "train_seconds": seconds, "predictions": predictions,
            "macro_f1": float(f1_score(GOLD, predictions, labels=list(LABELS), average="macro"))}


def test_travels_best_compares_the_top_method_with_another_method_not_its_other_format():
    rows = [row("fine-tuned LLM, HF fp32 (LoRA, merged)", "fine-tuned LLM", GOLD),
            row("fine-tuned LLM, GGUF Q4_K_M", "fine-tuned LLM", almost(1)),
            row("VADER (rules, no training)", "classic", almost(30)),
            {"method": "no predictions", "kind": "classic", "macro_f1": 1.0}]
    out = travels_best(GOLD, rows, LABELS, 0, "the NYT set")
    assert out["best"].startswith("fine-tuned LLM, HF") and out["runner_up"] == "VADER (rules, no training)"
    assert out["outcome"] == "ahead" and [m for m, _ in out["ranking"]][1] == "fine-tuned LLM, GGUF Q4_K_M"
    assert out["sentence"].startswith("fine-tuned LLM, HF fp32 (LoRA, merged) travels best to the NYT set (1.000 "
                                      "macro-F1), ahead of the best other method outside the noise: ")
    tied = travels_best(GOLD, [rows[0], row("SetFit (MiniLM), 8 per class", "encoder", almost(1))], LABELS, 0,
                        "the NYT set")
    assert "but not ahead of the best other method outside the noise" in tied["sentence"]
    assert "tied within the NYT set's noise" in tied["sentence"]
    assert "no rival" in travels_best(GOLD, rows[:2], LABELS, 0, "x")["sentence"]


def test_encoder_epochs_sentence_says_how_the_encoder_moved_against_the_llm():
    llm = row("fine-tuned LLM, HF fp32 (LoRA, merged)", "fine-tuned LLM", GOLD, 270.0)
    rows = [llm, row(ENCODER, "encoder", almost(30), 60.0), row(f"{ENCODER}, 20 epochs", "encoder", almost(1), 240.0)]
    out = encoder_epochs_sentence(GOLD, rows, (5, 20), LABELS, seed=0)
    assert out["sentence"].startswith("With 20 epochs instead of 5, the fine-tuned encoder catches up with the "
                                      "fine-tuned LLM (with 5 it was behind it): ")
    assert "It cost 240 s of training against 60 s for 5 epochs (4.0x), and 270 s for the LLM." in out["sentence"]
    assert "Against its own 5-epoch run: MiniLM fine-tuned end to end, 20 epochs (0.983 macro-F1) beats" in \
        out["sentence"]
    assert out["figures"]["vs_llm_outcome"] == "tied" and out["figures"]["chapter_vs_llm_outcome"] == "behind"
    rows[2] = row(f"{ENCODER}, 20 epochs", "encoder", almost(40), 240.0)
    assert "does not catch up with" in encoder_epochs_sentence(GOLD, rows, (5, 20), LABELS, 0)["sentence"]
    with pytest.raises(RunError, match="notebook 02"):
        encoder_epochs_sentence(GOLD, rows[1:], (5, 20), LABELS, 0)


class FakePredictor:
    def __init__(self, cfg, path):
        self.path = path

    def probabilities(self, texts):
        return np.tile([0.2, 0.3, 0.5], (len(texts), 1))


def test_models_the_run_folder_keeps_are_scored_and_the_rest_refitted(cfg, monkeypatch):
    from helpers import alternatives, encoder

    with pytest.raises(RunError, match="run notebook 05"):
        add_kept_encoder_rows(Comparison({"test": pd.DataFrame({"text": [], "label": []})}, cfg.labels), cfg)
    run = layout(cfg)
    record_metrics(cfg, "02_logged_training", fine_tuned={"accuracy": 0.7, "macro_f1": 0.69}, train_seconds=120.0,
                   artifact_mb={"merged": 538.0}, test_labels=["positive"], test_predictions=["positive"])
    record_metrics(cfg, "05_practitioners_alternatives", results={"test": [
        {"method": ENCODER, "train_seconds": 60.0, "size_mb": 91.0, "n_train": 48}]})
    for folder in ("encoder", f"setfit_{cfg.setfit_per_class[0]}"):
        (run.folder("05_practitioners_alternatives") / folder).mkdir()
    assert list(kept_encoder_models(cfg)) == [f"{SETFIT}, {cfg.setfit_per_class[0]} per class", ENCODER]
    loaded = []
    monkeypatch.setattr(alternatives, "load_predictor", lambda cfg, path: loaded.append(Path(path).name) or
                        FakePredictor(cfg, path))
    monkeypatch.setattr(encoder, "fit_frozen_logreg", lambda cfg, train: FakePredictor(cfg, None).probabilities)
    monkeypatch.setattr(encoder, "prepare_encoder", lambda cfg: run.root)
    ood = pd.DataFrame({"text": ["a", "b", "c"], "label": list(LABELS)})
    train = pd.DataFrame({"text": ["good", "bad", "so so"] * 2, "label": ["positive", "negative", "neutral"] * 2})
    comparison, how = score_without_retraining(cfg, train, {"ood": ood})
    assert sorted(loaded) == ["encoder", "merged", f"setfit_{cfg.setfit_per_class[0]}"]  # nothing kept is retrained
    assert how[ENCODER] == f"kept, loaded from {run.folder('05_practitioners_alternatives') / 'encoder'}"
    assert how["TF-IDF + logistic regression"] == "refitted on the 6 training rows (not kept)"
    assert how["VADER (rules, no training)"] == "no training"
    encoder_row = next(r for r in comparison.rows["ood"] if r["method"] == ENCODER)
    assert encoder_row["train_seconds"] == 60.0 and encoder_row["n_train"] == 48
    test = Comparison({"test": ood}, LABELS)
    assert add_kept_encoder_rows(test, cfg, methods=(ENCODER,)) == [ENCODER] and len(test.rows["test"]) == 1
