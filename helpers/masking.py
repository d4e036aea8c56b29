"""Label masking: which tokens carry loss, shown token by token, and a guard that refuses to train on the wrong ones.

TRL 1.x masks by itself: for conversational prompt/completion records, `SFTTrainer` gives every prompt token the
label -100 and trains only on the completion (`label<|im_end|>` and the newline the template adds). What we show and
check here is read from the dataset TRL prepared — the exact tensors the trainer trains on — never re-computed.
"""
from __future__ import annotations

import html

import pandas as pd


IGNORE = -100


class MaskingError(ValueError):
    """The tokens that carry loss are not the ones intended; the message names the cause and the fix."""


def token_table(tokenizer, example: dict) -> pd.DataFrame:
    """One row per token of a prepared example: position, token text, id, label (-100 or the id), trained."""
    ids, labels = list(example["input_ids"]), list(example["labels"])
    return pd.DataFrame({"position": range(len(ids)), "token": [tokenizer.decode([i]) for i in ids], "id": ids,
                         "label": labels, "trained": [lab != IGNORE for lab in labels]})


def token_table_text(table: pd.DataFrame) -> str:
    """Plain-text view of `token_table`, one token a line (deterministic, so notebooks can check it)."""
    lines = [f"{'pos':>4}  {'token':<24} {'id':>6} {'label':>6}  trained"]
    for row in table.itertuples():
        lines.append(f"{row.position:>4}  {repr(row.token):<24} {row.id:>6} {row.label:>6}  {'YES' if row.trained else '-'}")
    return "\n".join(lines)


def token_table_html(table: pd.DataFrame) -> str:
    """The tokens as coloured chips: green carries loss, grey is masked (-100). Hover shows id and label."""
    chips = []
    for row in table.itertuples():
        colour = "#b7e4c7" if row.trained else "#e9ecef"
        text = html.escape(row.token).replace("\n", "↵<br>") or "&nbsp;"
        chips.append(f'<span title="pos {row.position} · id {row.id} · label {row.label}" style="background:{colour};'
                     f'padding:1px 2px;margin:1px;border-radius:3px;font-family:monospace">{text}</span>')
    legend = ('<div style="margin-bottom:4px"><span style="background:#b7e4c7;padding:1px 4px">trained (label = id)'
              '</span> <span style="background:#e9ecef;padding:1px 4px">masked (label = -100)</span></div>')
    return legend + "<div>" + "".join(chips) + "</div>"


def expected_answer(tokenizer, record: dict) -> str:
    """The completion as the chat template renders it after the prompt, e.g. 'positive<|im_end|>\\n'."""
    full = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
        raise MaskingError("The chat template renders the prompt differently with and without the answer, so the "
                           "answer cannot be separated from the prompt. Use a prefix-preserving template.")
    return full[len(prompt):]


def injected_system_prompt(tokenizer) -> str | None:
    """The system text the chat template adds by itself when a conversation has none (SmolLM2 and Qwen2.5 do)."""
    marker = "\u2063user text\u2063"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    before = rendered.split(marker)[0]
    header = before.rfind("<|im_start|>")  # drop the user turn's own ChatML header
    before = before[:header] if header > 0 else before
    return before if "system" in before else None


def check_trained_tokens(dataset, tokenizer, expect: str = "answer", source_rows: int | None = None) -> dict:
    """Fail loudly unless the trained tokens of every prepared example are exactly what `expect` says.

    expect="answer": only the answer (label + end-of-turn). expect="all": every token (the unmasked ablation).
    expect="label": only the label, its end-of-turn masked too (the solution to notebook 01's first exercise).
    `dataset` is the one SFTTrainer prepared (it keeps the prompt/completion columns next to input_ids and labels);
    `source_rows`, the number of records it was made from, catches examples TRL dropped silently.
    Returns a summary (examples checked, trained tokens per example)."""
    if expect not in ("answer", "all", "label"):
        raise ValueError(f"expect must be 'answer', 'all' or 'label', not {expect!r}")
    columns = dataset.column_names
    if "labels" not in columns:
        raise MaskingError("The prepared dataset has no labels column: was it prepared by SFTTrainer?")
    if expect != "all" and not {"prompt", "completion"} <= set(columns):
        kind = "a plain `text`" if "text" in columns else "a `messages`" if "messages" in columns else "this"
        raise MaskingError(f"The records form {kind} dataset. TRL masks only prompt/completion records by itself; "
                           f"a plain text dataset with completion_only_loss=True trains on every token, with no "
                           f"warning. Build prompt/completion records (helpers.data.to_chat_records).")
    if source_rows is not None and len(dataset) != source_rows:
        raise MaskingError(f"TRL dropped {source_rows - len(dataset)} of {source_rows} examples because max_length "
                           f"cut off their whole answer. Raise max_length or shorten the reviews.")
    if len(dataset) == 0:
        raise MaskingError("TRL prepared no examples: max_length cut off the whole answer of every one (reviews too "
                           "long for it, or a system prompt the chat template injected). Raise max_length, fit the "
                           "reviews to it (helpers.data.fit_review) and give every record a system turn.")
    turns = dataset[0]["prompt"] if "prompt" in columns else dataset[0].get("messages", [])
    injected = injected_system_prompt(tokenizer)
    if injected and isinstance(turns, list) and not any(m["role"] == "system" for m in turns):
        raise MaskingError(f"The chat template injects its own system prompt when the records have none: "
                           f"{injected!r}. The model would train on words you never wrote; add a system turn.")
    trained_counts = []
    for i, example in enumerate(dataset):
        ids, labels = example["input_ids"], example["labels"]
        trained = [t for t, lab in zip(ids, labels) if lab != IGNORE]
        trained_counts.append(len(trained))
        if expect == "all":
            if len(trained) != len(ids):
                raise MaskingError(f"Example {i}: {len(ids) - len(trained)} of {len(ids)} tokens are masked, but this "
                                   f"run is meant to train on every token (completion_only_loss=False).")
            continue
        text, answer = tokenizer.decode(trained), expected_answer(tokenizer, example)
        if expect == "label":
            answer = example["completion"][-1]["content"]
        if text == answer:
            continue
        if answer.startswith(text) and trained and labels[-1] == IGNORE:  # the answer ends before the example does
            raise MaskingError(f"Example {i}: only {text!r} of the answer {answer!r} is trained: the end of the answer "
                               f"is masked, so the model never learns to stop after its label. Train on the whole "
                               f"completion (TRL's prompt/completion records do).")
        if answer.startswith(text):
            raise MaskingError(f"Example {i}: the answer is cut off by max_length={len(ids)}: only {text!r} of "
                               f"{answer!r} is trained. Raise max_length or shorten the review.")
        raise MaskingError(f"Example {i}: {len(trained)} tokens carry loss, not only the answer {answer!r}: "
                           f"{text[:120]!r}... Check completion_only_loss (must be True or unset) and the dataset form.")
    return {"examples": len(trained_counts), "expect": expect,
            "trained_tokens_per_example": sorted(set(trained_counts))}


def check_assistant_only_loss(tokenizer) -> None:
    """`assistant_only_loss=True` needs `{% generation %}` markers in the chat template (or a template TRL knows
    how to patch). Fail before training, with the fix, instead of deep inside the trainer."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        raise MaskingError("assistant_only_loss=True needs {% generation %}...{% endgeneration %} around the assistant "
                           "turn in the chat template, and this template has none (TRL cannot patch it). Use "
                           "prompt/completion records instead: TRL masks the prompt by itself.") from None


def label_only_records(records: list[dict], tokenizer) -> list[dict]:
    """Prompt/completion records, tokenized with every token masked but the label's: the end-of-turn after the label
    carries no loss either. TRL trains a dataset that brings its own `input_ids` and `labels` as it is."""
    out = []
    for record in records:
        prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
        label = record["completion"][-1]["content"]
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        label_ids = tokenizer.encode(label, add_special_tokens=False)
        rest = tokenizer.encode(expected_answer(tokenizer, record)[len(label):], add_special_tokens=False)
        out.append({**record, "input_ids": prompt_ids + label_ids + rest,
                    "labels": [IGNORE] * len(prompt_ids) + label_ids + [IGNORE] * len(rest)})
    return out


def label_tokens(tokenizer, labels) -> dict[str, list[str]]:
    """Each label's tokens as the model writes it after the assistant header (no leading space)."""
    return {label: tokenizer.convert_ids_to_tokens(tokenizer.encode(label, add_special_tokens=False)) for label in labels}


def label_words_sentence(tokens: dict[str, list[str]], guard: dict | str) -> str:
    """Whether other label words still suit label scoring and the guard: `tokens` from `label_tokens`, `guard` the
    summary of `check_trained_tokens` or the message it raised."""
    counts = ", ".join(f"{label} {len(t)}" for label, t in tokens.items())
    single = all(len(t) == 1 for t in tokens.values())
    firsts = len({t[0] for t in tokens.values()}) == len(tokens)
    words = (f"The labels {', '.join(tokens)} take {counts} token(s) each: "
             + ("every one is a single token" if single else "not all are single tokens")
             + (", and each starts with a token of its own, so label scoring can tell them apart. " if firsts else
                ", and two start with the same token, so label scoring cannot tell them apart. "))
    if isinstance(guard, str):
        return words + f"The guard refused the records: {guard}"
    return words + (f"The guard passed: {guard['examples']} examples, {guard['trained_tokens_per_example']} trained "
                    f"token(s) each (the label, the end-of-turn and the newline).")
