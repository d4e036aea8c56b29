"""Which tokens carry loss, read from what TRL's SFTTrainer prepared, for the embedded tokenizer and a Qwen2.5-style
ChatML template; the guard on each silent pitfall."""
import pandas as pd
import pytest

from helpers.data import to_chat_records
from helpers.masking import (MaskingError, check_trained_tokens, expected_answer, injected_system_prompt,
                             label_only_records, label_tokens, label_words_sentence, token_table, token_table_html,
                             token_table_text)
from helpers.model import load_model
from helpers.model import resolve_model
from helpers.training import make_trainer
from take_home import run_take_home

QWEN_STYLE_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers.config import make_config

    cfg = make_config("smoke", run_dir=tmp_path_factory.mktemp("run"))
    model, tokenizer = load_model(cfg)
    records = to_chat_records(pd.DataFrame({"text": ["it broke after a week", "fine, nothing special"],
                                            "label": ["negative", "neutral"]}), cfg)
    return cfg, model, tokenizer, records


def prepared(tiny, records=None, **extra):
    cfg, model, tokenizer, default = tiny
    records = records or default
    return make_trainer(cfg, model, tokenizer, records, output_dir=cfg.run_dir / "t", **extra).train_dataset


def trained_positions(example):
    return [i for i, lab in enumerate(example["labels"]) if lab != -100]


def test_only_label_and_end_of_turn_are_trained(tiny):
    cfg, _, tokenizer, _ = tiny
    example = prepared(tiny)[0]
    ids = example["input_ids"]
    assert trained_positions(example) == [len(ids) - 3, len(ids) - 2, len(ids) - 1]
    assert [tokenizer.decode([ids[i]]) for i in trained_positions(example)] == ["negative", "<|im_end|>", "\n"]
    assert tokenizer.decode(ids[:len(ids) - 3]).endswith("<|im_start|>assistant\n")
    assert all(example["labels"][i] == ids[i] for i in trained_positions(example))


def test_qwen_style_chatml_template_masks_the_same_way(tiny):
    cfg, model, tokenizer, records = tiny
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = QWEN_STYLE_TEMPLATE
    example = make_trainer(cfg, model, tokenizer, records, output_dir=cfg.run_dir / "q").train_dataset[1]
    assert tokenizer.decode([example["input_ids"][i] for i in trained_positions(example)]) == "neutral<|im_end|>\n"
    assert "You are Qwen" in injected_system_prompt(tokenizer)


def test_multi_token_labels_are_trained_whole(tiny):
    cfg, _, tokenizer, _ = tiny
    label = "mildly positive"
    records = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "ok"}],
                "completion": [{"role": "assistant", "content": label}]}]
    example = prepared(tiny, records)[0]
    trained = [example["input_ids"][i] for i in trained_positions(example)]
    assert len(trained) == len(tokenizer.encode(label)) + 2
    assert tokenizer.decode(trained) == expected_answer(tokenizer, example) == label + "<|im_end|>\n"


def test_token_table_text_and_html(tiny):
    cfg, _, tokenizer, _ = tiny
    table = token_table(tokenizer, prepared(tiny)[0])
    assert list(table.columns) == ["position", "token", "id", "label", "trained"]
    assert table["trained"].sum() == 3 and (table.loc[~table["trained"], "label"] == -100).all()
    text = token_table_text(table)
    assert "'negative'" in text and text.count("YES") == 3 and len(text.splitlines()) == len(table) + 1
    assert token_table_html(table).count("#b7e4c7") == 3 + 1  # three trained chips and the legend


def test_guard_accepts_the_right_mask_and_reports_it(tiny):
    dataset = prepared(tiny)
    _, _, tokenizer, records = tiny
    assert check_trained_tokens(dataset, tokenizer, source_rows=len(records)) == {
        "examples": 2, "expect": "answer", "trained_tokens_per_example": [3]}


def test_guard_catches_a_plain_text_dataset_with_completion_only_loss(tiny):
    _, _, tokenizer, records = tiny
    texts = [{"text": tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)} for r in records]
    dataset = prepared(tiny, texts, completion_only_loss=True)
    assert all(len(trained_positions(e)) == len(e["input_ids"]) for e in dataset)  # TRL masked nothing, silently
    with pytest.raises(MaskingError, match="plain `text` dataset.*trains on every token, with no warning"):
        check_trained_tokens(dataset, tokenizer)


def test_guard_catches_an_unmasked_run_and_checks_the_unmasked_arm(tiny):
    _, _, tokenizer, _ = tiny
    dataset = prepared(tiny, completion_only_loss=False)
    with pytest.raises(MaskingError, match="tokens carry loss, not only the answer 'negative<|im_end|>"):
        check_trained_tokens(dataset, tokenizer)
    assert check_trained_tokens(dataset, tokenizer, expect="all")["examples"] == 2
    with pytest.raises(MaskingError, match="meant to train on every token"):
        check_trained_tokens(prepared(tiny), tokenizer, expect="all")


def test_guard_catches_an_answer_cut_off_by_max_length(tiny):
    _, _, tokenizer, records = tiny
    full = len(prepared(tiny)[0]["input_ids"])
    with pytest.raises(MaskingError, match=r"cut off by max_length=.*only 'negative' of 'negative<\|im_end\|>\\n'"):
        check_trained_tokens(prepared(tiny, max_length=full - 2), tokenizer, source_rows=2)
    with pytest.raises(MaskingError, match=r"TRL dropped 2 of 2 examples because max_length cut off their whole"):
        check_trained_tokens(prepared(tiny, max_length=10), tokenizer, source_rows=2)
    with pytest.raises(MaskingError, match=r"TRL prepared no examples: max_length cut off the whole answer of every"):
        check_trained_tokens(prepared(tiny, max_length=10), tokenizer)  # not told how many records there were


def test_guard_catches_a_template_that_injects_its_own_system_prompt(tiny):
    _, _, tokenizer, records = tiny
    no_system = [{"prompt": r["prompt"][1:], "completion": r["completion"]} for r in records]
    with pytest.raises(MaskingError, match="injects its own system prompt.*You are a helpful AI assistant named SmolLM"):
        check_trained_tokens(prepared(tiny, no_system), tokenizer)


def test_assistant_only_loss_without_generation_markers_fails_before_training(tiny):
    _, _, _, records = tiny
    messages = [{"messages": r["prompt"] + r["completion"]} for r in records]
    with pytest.raises(MaskingError, match=r"needs \{% generation %\}"):
        prepared(tiny, messages, assistant_only_loss=True)


def test_label_only_records_train_the_label_alone_and_the_guard_names_the_masked_end(tiny):
    cfg, model, tokenizer, records = tiny
    label_only = label_only_records(records, tokenizer)
    dataset = make_trainer(cfg, model, tokenizer, label_only, output_dir=cfg.run_dir / "l").train_dataset
    example = dataset[0]
    assert tokenizer.decode([example["input_ids"][i] for i in trained_positions(example)]) == "negative"
    assert tokenizer.decode(example["input_ids"][-2:]) == "<|im_end|>\n"  # still there, carrying no loss
    with pytest.raises(MaskingError, match=r"only 'negative' of the answer 'negative<\|im_end\|>\\n' is trained: the "
                                           r"end of the answer is masked, so the model never learns to stop"):
        check_trained_tokens(dataset, tokenizer)
    assert check_trained_tokens(dataset, tokenizer, expect="label")["trained_tokens_per_example"] == [1]
    with pytest.raises(MaskingError, match="tokens carry loss, not only the answer 'negative'"):
        check_trained_tokens(prepared(tiny), tokenizer, expect="label")  # the full answer is not the label alone


def test_label_words_are_read_as_tokens_and_said_in_one_sentence(tiny):
    _, _, tokenizer, _ = tiny
    tokens = label_tokens(tokenizer, ("good", "bad", "mixed"))
    assert all(len(t) == 1 for t in tokens.values())
    said = label_words_sentence(tokens, {"examples": 16, "trained_tokens_per_example": [3]})
    assert "every one is a single token" in said and "The guard passed: 16 examples, [3]" in said
    split = label_tokens(tokenizer, ("unbelievably good", "unbelievably bad"))
    said = label_words_sentence(split, "Example 0: ...")
    assert "not all are single tokens" in said and "two start with the same token" in said
    assert said.endswith("The guard refused the records: Example 0: ...")


@pytest.mark.slow
def test_the_take_home_cells_prepare_the_labels_the_course_trains_on(tiny, tmp_path):
    """Notebook 01's take-home cells on their own (a model folder, records as plain dicts): SFTConfig and SFTTrainer
    prepare the records, and the labels they print are the ones the course's own trainer prepares: -100 everywhere
    but the answer."""
    cfg, _, _, records = tiny
    inputs = dict(model_dir=str(resolve_model(cfg)), records=records, output_dir=str(tmp_path / "prepared"),
                  max_length=cfg.max_length, bf16=False, use_cpu=True)
    done = run_take_home("01_label_masking", inputs, tmp_path / "script")
    lines = done.stdout.strip().splitlines()
    printed = [int(line.split()[-1]) for line in lines[:-1]]  # the last line counts the unmasked form's tokens
    assert printed == list(prepared(tiny)[0]["labels"])
    assert sum(label != -100 for label in printed) == 3
    trained, _, total, *_ = lines[-1].split()
    assert int(trained) == int(total) == len(printed)
