"""One predictor for every kind of trained model: each loads from its path, scores in label order like its own
engine, and generates an answer the course's parser reads."""
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import torch

from helpers.config import make_config
from helpers.evaluate import INVALID, apply_offsets, normalise_rows, parse_label
from helpers.model import ModelError, load_model, load_tokenizer, resolve_model
from helpers.predict import (_prompt_tokens, choose_decision_rule, generate_answers,
                             generated_tokens, gguf_answers, gguf_probabilities, hf_predictor, load_gguf,
                             load_predictor, next_token_logits, prompt_text, score_labels, stop_ids, stopping,
                             template_tokens)
from helpers.runs import write_decision

LABELS = ("negative", "neutral", "positive")
TEXTS = ["Great value, works as described", "It broke after a week.", "A box with a phone in it."]


def test_a_hugging_face_folder_scores_like_label_scoring_and_generates(cfg):
    predictor = load_predictor(cfg, resolve_model(cfg))
    model, tokenizer = load_model(cfg)
    assert predictor.kind == "hf"
    assert np.allclose(predictor.probabilities(TEXTS), score_labels(model, tokenizer, TEXTS, cfg, progress=False))
    answers = predictor.generate(TEXTS)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


@pytest.mark.slow
def test_a_gguf_file_uses_llama_cpp(cfg, tmp_path):
    from helpers.gguf import convert_to_gguf

    gguf = convert_to_gguf(cfg, Path(resolve_model(cfg)), tmp_path / "tiny-f16.gguf")
    predictor = load_predictor(cfg, gguf)
    probabilities = predictor.probabilities(TEXTS)
    assert predictor.kind == "gguf" and probabilities.shape == (3, 3) and np.allclose(probabilities.sum(1), 1)
    assert len(predictor.generate(TEXTS[:1])) == 1
    # the config's threads for prompt processing too (llama.cpp's default is every core: 2 processes would spin)
    assert predictor.model.context_params.n_threads_batch == predictor.model.context_params.n_threads == cfg.threads


@pytest.mark.slow
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


# --- the PyTorch engine ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    cfg = make_config("workshop", run_dir=tmp_path_factory.mktemp("run"))
    model, tokenizer = load_model(cfg)
    return cfg, model.float(), tokenizer  # fp32 on any device: the comparisons below are to 1e-4


REVIEWS = ["this is the best camera i have ever owned.", "the battery died after two days, total junk.",
           "the box contains a charger and a cable.", "works as described.", "i returned it.",
           "absolutely love the screen!", "it is ok i guess.", "terrible customer service."]


@pytest.mark.slow
def test_scoring_gives_probabilities_and_a_valid_label(smollm2):
    cfg, model, tokenizer = smollm2
    probs = score_labels(model, tokenizer, REVIEWS, dataclasses.replace(cfg, scoring_batch_size=3), progress=False)
    assert probs.shape == (8, 3) and np.allclose(probs.sum(1), 1) and (probs > 0).all()


def full_forward_logprobs(model, tokenizer, prompt, token_ids):
    with torch.no_grad():
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        logits = model(**enc).logits[0, -1]
    return torch.log_softmax(logits, -1)[token_ids].cpu().numpy()


@pytest.mark.slow
def test_shared_prefix_scoring_matches_a_full_forward_pass_per_review(smollm2):
    cfg, model, tokenizer = smollm2
    first = [tokenizer.encode(label)[0] for label in LABELS]
    # batch size 3 over 8 reviews of different lengths: padded batches and a short last batch
    probs = score_labels(model, tokenizer, REVIEWS, dataclasses.replace(cfg, scoring_batch_size=3), progress=False)
    expected = normalise_rows([full_forward_logprobs(model, tokenizer, prompt_text(tokenizer, t, cfg), first)
                               for t in REVIEWS])
    assert np.allclose(probs, expected, atol=1e-4)
    assert score_labels(model, tokenizer, REVIEWS[:1], cfg, progress=False) == pytest.approx(expected[:1], abs=1e-4)


@pytest.mark.slow
def test_multi_token_labels_are_scored_by_their_first_token(smollm2):
    cfg, model, tokenizer = smollm2
    five = dataclasses.replace(cfg, labels=("terrible", "bad", "okay", "good", "excellent!"))
    first = [tokenizer.encode(label)[0] for label in five.labels]
    assert [len(tokenizer.encode(label)) for label in five.labels] == [2, 1, 2, 1, 3]  # most take several tokens
    probs = score_labels(model, tokenizer, REVIEWS[:3], five, progress=False)
    expected = normalise_rows([full_forward_logprobs(model, tokenizer, prompt_text(tokenizer, t, five), first)
                               for t in REVIEWS[:3]])
    assert probs.shape == (3, 5) and np.allclose(probs, expected, atol=1e-4)


@pytest.mark.slow
def test_scoring_agrees_with_generation_where_generation_is_valid(smollm2):
    cfg, model, tokenizer = smollm2
    # The untrained model rarely answers with a bare label to the course's terse prompt; a wordier one gets some.
    cfg = dataclasses.replace(cfg, system_prompt="Classify the review's sentiment. Answer with one word: positive, "
                                                 "negative or neutral.")
    predictor = hf_predictor(model, tokenizer, cfg)
    answers = predictor.generate(REVIEWS)
    generated = [parse_label(a, cfg.labels) for a in answers]
    scored = [cfg.labels[i] for i in predictor.probabilities(REVIEWS).argmax(1)]
    valid = [(g, s) for g, s in zip(generated, scored) if g != INVALID]
    assert valid, f"no valid generation at all: {answers}"
    assert all(g == s for g, s in valid), list(zip(answers, scored))


@pytest.mark.slow
def test_evaluate_reports_both_methods(smollm2):
    cfg, model, tokenizer = smollm2
    df = pd.DataFrame({"text": REVIEWS[:3], "label": ["positive", "negative", "neutral"]})
    predictor = hf_predictor(model, tokenizer, cfg)
    scored = predictor.evaluate(df, "scoring", progress=False)
    assert scored["predictions"] == [cfg.labels[i] for i in np.argmax(scored["probabilities"], 1)]
    assert scored["invalid_rate"] == 0 and scored["reviews_per_second"] > 0
    generated = predictor.evaluate(df, "generation", progress=False)
    assert generated["predictions"] == [parse_label(a, cfg.labels) for a in generated["answers"]]
    assert generated["invalid_rate"] == np.mean([p == INVALID for p in generated["predictions"]])
    with pytest.raises(ValueError, match="method must be"):
        predictor.evaluate(df, method="vibes")


# --- the llama.cpp engine ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_q4_k_m_file_scores_every_review_with_a_valid_label(tiny_gguf):
    cfg, _, _, q4 = tiny_gguf
    probs = gguf_probabilities(load_gguf(q4, cfg), load_tokenizer(cfg), ["fine", "bad"], cfg, progress=False)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1) and (probs > 0).all()


@pytest.mark.slow
def test_f16_gguf_logits_match_the_hf_model(tiny_gguf):
    cfg, source, f16, _ = tiny_gguf
    model, tokenizer = load_model(cfg, source)
    model = model.float()  # bf16 on a GPU would be further from the f16 file than the 0.02 below
    llm = load_gguf(f16, cfg)
    for text in ("a great phone", "it broke"):
        prompt = prompt_text(tokenizer, text, cfg)
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        assert _prompt_tokens(llm, prompt) == enc["input_ids"][0].tolist()
        with torch.no_grad():
            hf = model(**enc).logits[0, -1].cpu().numpy()
        gg = next_token_logits(llm, [_prompt_tokens(llm, prompt)], range(llm.n_vocab()))[0]
        assert np.abs(hf - gg).max() < 0.02 and hf.argmax() == gg.argmax()  # f16 weights: within 0.02


BATCHED = ["fine", "It broke after a week, and the seller never answered my two emails about it.", "a great phone",
           "Great value, works as described", "meh", "It broke after a week.", "A box with a phone in it.",
           "the screen is lovely but the battery does not last a day"]  # unequal lengths, two pairs of equal ones


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [2, 3])  # tiny_gguf's f16 and Q4_K_M files
def test_batched_llama_cpp_scoring_keeps_reviews_apart_and_one_at_a_time_ignores_the_neighbours(tiny_gguf, fmt):
    cfg, tokenizer = tiny_gguf[0], load_tokenizer(tiny_gguf[0])
    llm = load_gguf(tiny_gguf[fmt], cfg)
    one = gguf_probabilities(llm, tokenizer, BATCHED, dataclasses.replace(cfg, gguf_batch_size=1), progress=False)
    alone = np.vstack([gguf_probabilities(llm, tokenizer, [t], cfg, progress=False) for t in BATCHED[:3]])
    assert np.abs(alone - one[:3]).max() <= 1e-4
    for size in (2, 3, 16):
        batched = gguf_probabilities(llm, tokenizer, BATCHED, dataclasses.replace(cfg, gguf_batch_size=size),
                                     progress=False)
        assert np.abs(batched - one).max() <= 1e-4, size  # the tiny model's kernels: SmolLM2's move (see predict)
    assert np.abs(gguf_probabilities(llm, tokenizer, BATCHED[::-1], cfg, progress=False)[::-1] - one).max() <= 1e-4


@pytest.mark.slow
def test_the_template_is_what_every_prompt_starts_with_and_no_review(tiny_gguf):
    cfg, tokenizer = tiny_gguf[0], load_tokenizer(tiny_gguf[0])
    llm = load_gguf(tiny_gguf[3], cfg)
    template = template_tokens(llm, tokenizer, cfg)
    for text in BATCHED:
        prompt = _prompt_tokens(llm, prompt_text(tokenizer, text, cfg))
        assert prompt[:len(template)] == template and len(prompt) > len(template)
    assert tokenizer.decode(template).endswith("<|im_start|>user\n")


@pytest.mark.slow
def test_generation_through_llama_cpp_resets_between_reviews(tiny_gguf):
    cfg, _, f16, _ = tiny_gguf
    llm, tokenizer = load_gguf(f16, cfg), load_tokenizer(cfg)
    alone = gguf_answers(llm, tokenizer, ["it broke"], cfg, progress=False)
    after = gguf_answers(llm, tokenizer, ["a great phone", "it broke"], cfg, progress=False)
    assert after[1] == alone[0]


@pytest.mark.slow
def test_a_decision_rule_moves_llama_cpp_generation_as_it_moves_transformers_generation(tiny_gguf):
    cfg, source, f16, _ = tiny_gguf
    llm, tokenizer = load_gguf(f16, cfg), load_tokenizer(cfg)
    model, _ = load_model(cfg, source)
    texts = ["a great phone", "it broke"]
    plain = gguf_answers(llm, tokenizer, texts, cfg, progress=False, max_new_tokens=1)
    for k, label in enumerate(cfg.labels):  # a bias no logit can outweigh: every answer starts with that label
        offsets = [20.0 if i == k else 0.0 for i in range(len(cfg.labels))]
        pushed = gguf_answers(llm, tokenizer, texts, cfg, progress=False, max_new_tokens=1, offsets=offsets)
        hf = generate_answers(model, tokenizer, texts, cfg, max_new_tokens=1, progress=False, offsets=offsets)
        assert pushed == hf == [label] * len(texts)
    assert gguf_answers(llm, tokenizer, texts, cfg, progress=False, max_new_tokens=1, offsets=[0.0] * 3) == plain


def test_a_broken_or_missing_gguf_file_is_named(tiny_gguf, tmp_path):
    from helpers.gguf import GGUFError

    cfg = tiny_gguf[0]
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(GGUFError, match="llama.cpp could not load .*broken.gguf"):
        load_gguf(broken, cfg)
    with pytest.raises(GGUFError, match="no such GGUF file"):
        load_gguf(tmp_path / "none.gguf", cfg)


def test_a_gguf_file_with_another_vocabulary_is_refused(tiny_gguf):
    from helpers.gguf import GGUFError
    from helpers.predict import check_same_tokens

    cfg, _, f16, _ = tiny_gguf
    llm, tokenizer = load_gguf(f16, cfg), load_tokenizer(cfg)
    check_same_tokens(llm, tokenizer, cfg, f16)  # the same tokenizer: no complaint

    class Shifted:  # another tokenizer: the same text, other ids
        name_or_path = "another-model"

        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, text, **kw):
            return {"input_ids": [i + 1 for i in tokenizer(text, **kw)["input_ids"]]}

        def encode(self, text, **kw):
            return [i + 1 for i in tokenizer.encode(text, **kw)]

    with pytest.raises(GGUFError, match=r"tiny-f16.gguf does not share the tokenizer of another-model \(the prompt "
                                        r"is tokens .*label probabilities would be wrong"):
        check_same_tokens(llm, Shifted(), cfg, f16)


def test_an_adapter_loads_on_its_own_base_or_is_named_with_it(cfg, tmp_path):
    import json as jsonlib

    from peft import get_peft_model

    from helpers.config import make_config
    from helpers.training import build_lora_config

    model, tokenizer = load_model(cfg)  # the smoke profile's tiny base
    get_peft_model(model, build_lora_config(cfg, model)).save_pretrained(tmp_path / "adapter")
    workshop = make_config("workshop", run_dir=tmp_path)
    predictor = load_predictor(workshop, tmp_path / "adapter")  # the adapter's own base, not SmolLM2-135M
    assert predictor.probabilities(TEXTS[:1]).shape == (1, 3)
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(jsonlib.dumps({**jsonlib.loads(config.read_text()), "base_model_name_or_path": "/gone/tiny"}))
    with pytest.raises(ModelError, match=r"adapter was trained on '/gone/tiny', which is not on this machine, and does "
                                         r"not fit the configured model 'embedded:smollm2'"):
        load_predictor(workshop, tmp_path / "adapter")


def test_a_model_s_decision_rule_travels_with_its_folder_and_must_match_the_labels(cfg, tmp_path):
    source = Path(resolve_model(cfg))
    folder = tmp_path / "merged"
    folder.mkdir()
    for f in source.iterdir():
        (folder / f.name).symlink_to(f)
    offsets = [0.0, 2.0, -1.0]
    write_decision({"rule": "offsets", "offsets": offsets, "labels": list(cfg.labels), "eval": {}, "sentence": "s"},
                   folder)
    predictor, plain = load_predictor(cfg, folder), load_predictor(cfg, source)
    assert predictor.offsets == offsets and plain.offsets is None
    assert np.allclose(predictor.probabilities(TEXTS), apply_offsets(plain.probabilities(TEXTS), offsets))
    two = dataclasses.replace(cfg, labels=("negative", "positive"))
    with pytest.raises(ModelError, match=r"chosen for the labels \['negative', 'neutral', 'positive'\].*--labels"):
        load_predictor(two, folder)


def test_the_decision_rule_is_tuned_on_the_eval_split_only_when_the_knob_says_so(cfg):
    class Scores:  # stands in for a model's label scoring: a model that never says "neutral"
        def __init__(self):
            self.calls = 0

        def probabilities(self, texts):
            self.calls += 1
            return np.tile([0.45, 0.1, 0.45], (len(texts), 1)) + np.eye(3)[np.arange(len(texts)) % 3] * [.3, .2, .3]
    eval_df = pd.DataFrame({"text": [f"t{i}" for i in range(90)], "label": np.array(cfg.labels)[np.arange(90) % 3]})
    scores = Scores()
    skipped = choose_decision_rule(cfg, scores, eval_df, short=[])
    assert (skipped["rule"], skipped["offsets"], scores.calls) == ("argmax", None, 0)
    assert "every class got its full training share" in skipped["sentence"]
    tuned = choose_decision_rule(cfg, scores, eval_df, short=["neutral"])
    assert tuned["rule"] == "offsets" and tuned["offsets"][1] > 0 and scores.calls == 1
    never = choose_decision_rule(dataclasses.replace(cfg, decision_rule="argmax"), scores, eval_df, short=["neutral"])
    assert never["rule"] == "argmax" and "decision_rule='argmax'" in never["sentence"] and scores.calls == 1


def test_stopping_counts_the_answers_that_end_their_turn_and_generation_decodes_the_same_tokens(cfg):
    model, tokenizer = load_model(cfg)
    ends = stop_ids(model, tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ends
    tokens = generated_tokens(model, tokenizer, TEXTS, cfg, max_new_tokens=6, progress=False)
    assert all(1 <= len(t) <= 6 and not any(i in ends for i in t[:-1]) for t in tokens)  # nothing after a stop
    assert generate_answers(model, tokenizer, TEXTS, cfg, max_new_tokens=6, progress=False) == \
        tokenizer.batch_decode(tokens, skip_special_tokens=True)
    seen = stopping(model, tokenizer, TEXTS, cfg, max_new_tokens=6, progress=False)
    assert seen["stops"] == [t[-1] in ends for t in tokens] and seen["stopped"] == np.mean(seen["stops"])
    assert seen["mean_new_tokens"] == np.mean([len(t) for t in tokens]) and len(seen["answers"]) == 3
    model.generation_config.eos_token_id = None  # a config without one still stops at the tokenizer's
    assert stop_ids(model, tokenizer) == {tokenizer.eos_token_id}
