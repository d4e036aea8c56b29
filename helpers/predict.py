"""One way to predict with any model: `load_predictor(cfg, path)` for a model on disk, `hf_predictor(model, tokenizer,
cfg)` for one in memory (the trainer's). Both return a `Predictor`.

A path can be a GGUF file (llama.cpp), a Hugging Face causal-LM folder, a LoRA adapter folder (loaded on the base
model of `cfg`), a fine-tuned encoder folder (a sequence classifier) or a SetFit folder. Every predictor answers
`probabilities(texts)` — (n, labels) in `cfg.labels` order, rows summing to 1 — `generate(texts)` — the raw answer per
text (an encoder's answer is its top label) — and `evaluate(df, method)`, the metrics of either on a labelled frame.

The two LLM engines live here, with the same prompt and the same label scoring: PyTorch (the label tokens' log-
probabilities right after `<|im_start|>assistant\\n`, in one forward pass per batch) and llama.cpp (the same logits
from its context). Label scoring always yields a valid label and a probability per class.
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from helpers.config import CourseConfig
from helpers.data import fit_review, prompt_messages
from helpers.encoder import encoder_probabilities, load_encoder_classifier
from helpers.evaluate import apply_offsets, classification_metrics, decision_rule, normalise_rows, parse_label
from helpers.gguf import GGUFError, llama_cpp_version
from helpers.model import MODEL_PATHS, ModelError, is_encoder_folder, load_adapter, load_model, load_tokenizer
from helpers.runs import RunLayout, decision_file, disk_mb, read_decision

METHODS = ("scoring", "generation")


def prompt_text(tokenizer, text: str, cfg: CourseConfig) -> str:
    """The prompt as the model sees it at inference: system + user turns (the review fitted to the training length,
    `fit_review`), then the assistant header."""
    return tokenizer.apply_chat_template(prompt_messages(fit_review(text, tokenizer, cfg), cfg), tokenize=False,
                                         add_generation_prompt=True)


def label_first_tokens(tokenizer, labels) -> list[int]:
    """Each label's first token as it follows the assistant header (no leading space). `model.check_labels` made
    sure they differ, so the next-token distribution over them tells the labels apart."""
    return [tokenizer.encode(label, add_special_tokens=False)[0] for label in labels]


def label_bias(first_tokens, offsets) -> dict[int, float]:
    """{token id: offset}: a decision rule's per-class `offsets` (None: the most probable label, no bias) as a bias on
    the labels' first tokens, the form every generating engine takes it in (transformers' `sequence_bias`, a llama.cpp
    logits processor, the OpenAI API's `logit_bias`). Adding it to the logits adds it to the label log-probabilities,
    which is what `evaluate.apply_offsets` does to scored labels."""
    return {int(t): float(b) for t, b in zip(first_tokens, offsets or ()) if b}


@dataclass
class Predictor:
    """A loaded model and the engine that runs it: "hf" (PyTorch causal LM), "gguf" (llama.cpp) or "encoder"."""

    kind: str
    path: Path | None
    cfg: CourseConfig
    model: object
    tokenizer: object = None
    offsets: list | None = None  # per-class log-offsets of the model's decision rule (None: the most probable label)

    def probabilities(self, texts, progress: bool = False) -> np.ndarray:
        """(n, labels) in `cfg.labels` order, with the model's decision rule applied (`evaluate.apply_offsets`)."""
        texts = list(texts)
        if self.kind == "gguf":
            probs = gguf_probabilities(self.model, self.tokenizer, texts, self.cfg, progress)
        elif self.kind == "encoder":
            probs = encoder_probabilities(self.model, texts, self.cfg)
        else:
            probs = score_labels(self.model, self.tokenizer, texts, self.cfg, progress=progress)
        return apply_offsets(probs, self.offsets)

    def generate(self, texts, progress: bool = False) -> list[str]:
        texts = list(texts)
        if self.kind == "gguf":
            return gguf_answers(self.model, self.tokenizer, texts, self.cfg, progress, offsets=self.offsets)
        if self.kind == "encoder":
            return [self.cfg.labels[i] for i in self.probabilities(texts).argmax(1)]
        return generate_answers(self.model, self.tokenizer, texts, self.cfg, progress=progress, offsets=self.offsets)

    def evaluate(self, df, method: str = "scoring", progress: bool = True) -> dict:
        """Metrics on a frame with text and label columns, by "scoring" (always a valid label, with probabilities) or
        "generation" (up to 5 tokens, parsed; unparseable answers count as invalid), with reviews per second."""
        if method not in METHODS:
            raise ValueError(f"method must be 'scoring' or 'generation', not {method!r}")
        texts, start = list(df["text"]), time.perf_counter()
        if method == "scoring":
            probs = self.probabilities(texts, progress)
            predicted, extra = [self.cfg.labels[i] for i in probs.argmax(1)], {"probabilities": probs.round(4).tolist()}
        else:
            answers = self.generate(texts, progress)
            predicted, extra = [parse_label(a, self.cfg.labels) for a in answers], {"answers": answers}
        speed = len(texts) / max(time.perf_counter() - start, 1e-9)
        return {**classification_metrics(df["label"], predicted, self.cfg.labels), "method": method,
                "reviews_per_second": speed, "predictions": predicted, **extra}

    @property
    def size_mb(self) -> float:
        """What the model weighs on disk: the GGUF file, or the folder's weight files."""
        return disk_mb(*([self.path] if self.path.is_file() else self.path.glob("*.safetensors")))


def hf_predictor(model, tokenizer, cfg: CourseConfig, path: Path | None = None, offsets=None) -> Predictor:
    """A predictor for a PyTorch causal LM already in memory (a base model, the trainer's model, a merged copy), with
    the decision rule's `offsets` if it has one."""
    return Predictor("hf", path, cfg, model, tokenizer, offsets)


def stored_offsets(cfg: CourseConfig, path: Path) -> list | None:
    """The offsets of the decision rule stored with the model at `path` (`runs.read_decision`), checked against the
    configured labels; None when the model has none."""
    decision = read_decision(path)
    if decision is None:
        return None
    if list(decision["labels"]) != list(cfg.labels):
        raise ModelError(f"{decision_file(path)} was chosen for the labels {decision['labels']}, not {list(cfg.labels)}: "
                         f"pass --labels {' '.join(decision['labels'])}, or delete the file to take the most probable "
                         f"label.")
    return decision["offsets"]


def choose_decision_rule(cfg: CourseConfig, predictor: Predictor, eval_df, short: list[str]) -> dict:
    """The decision rule of a fine-tuned model, by the knob `decision_rule`: per-class offsets tuned on the eval split
    (`eval_df`; `evaluate.decision_rule`) for "offsets", and for "auto" when a class is `short` in training
    (`data.short_classes`); otherwise the most probable label, with no extra pass over the eval split."""
    if cfg.decision_rule == "offsets" or (cfg.decision_rule == "auto" and short):
        return decision_rule(predictor.probabilities(eval_df["text"]), eval_df["label"], cfg.labels, cfg.seed)
    why = ("decision_rule='argmax'" if cfg.decision_rule == "argmax" else
           "every class got its full training share, so decision_rule='auto' tuned nothing")
    return {"rule": "argmax", "offsets": None, "labels": list(cfg.labels), "eval": None,
            "sentence": f"Decision rule: the most probable label ({why})."}


def load_predictor(cfg: CourseConfig, path: str | Path) -> Predictor:
    """The predictor for whatever model `path` holds, or one ModelError that says what a model path may be."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        merged = RunLayout(path.parent.parent).merged  # the run folder the file was exported in, if it was
        tokenizer = load_tokenizer(cfg, merged if (merged / "tokenizer_config.json").exists() else None)
        llm = load_gguf(path, cfg)
        check_same_tokens(llm, tokenizer, cfg, path)
        return Predictor("gguf", path, cfg, llm, tokenizer, stored_offsets(cfg, path))
    if (path / "adapter_config.json").is_file():
        return hf_predictor(*load_adapter(cfg, path), cfg, path, stored_offsets(cfg, path))
    if is_encoder_folder(path):
        return Predictor("encoder", path, cfg, load_encoder_classifier(path), offsets=stored_offsets(cfg, path))
    if (path / "config.json").is_file():
        return hf_predictor(*load_model(cfg, path), cfg, path, stored_offsets(cfg, path))
    raise ModelError(f"{path}: {'no such file or folder' if not path.exists() else 'not a model'}. {MODEL_PATHS}")


# --- PyTorch: label scoring and generation ----------------------------------------------------------------------------

def score_labels(model, tokenizer, texts, cfg: CourseConfig, progress: bool = True) -> np.ndarray:
    """Probability per label (rows sum to 1) for each text: the next-token distribution after the prompt, read at
    each label's first token and renormalised. The prompt prefix that every review shares runs once; one pass over
    each batch of `cfg.scoring_batch_size` reviews reads the rest."""
    import torch

    prompts = [prompt_text(tokenizer, t, cfg) for t in texts]
    if not prompts:
        return np.zeros((0, len(cfg.labels)))
    return normalise_rows(_next_token_logprobs(model, tokenizer, prompts, label_first_tokens(tokenizer, cfg.labels),
                                               cfg.scoring_batch_size, progress, torch))


def _next_token_logprobs(model, tokenizer, prompts, token_ids, batch_size, progress, torch):
    """(prompts, token_ids) next-token log-probabilities. The tokens every prompt starts with (system turn, user
    header) are run once; their KV cache is copied for each batch, which then runs only the reviews' own tokens,
    right-padded, shortest first. The same numbers as a full forward pass per prompt (to ~1e-5), ~1.3x faster."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared, most = 0, min(len(x) for x in ids) - 1  # every prompt keeps at least one token of its own
    while shared < most and all(x[shared] == ids[0][shared] for x in ids):
        shared += 1
    out = np.zeros((len(ids), len(token_ids)))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    with torch.inference_mode():
        prefix = decoder(input_ids=torch.tensor([ids[0][:shared]], device=model.device), use_cache=True).cache
        for start in tqdm(range(0, len(order), batch_size), desc="label scoring", disable=not progress, unit="batch"):
            rows = order[start:start + batch_size]
            own = [ids[i][shared:] for i in rows]
            width = max(len(x) for x in own)
            tokens = torch.full((len(rows), width), tokenizer.pad_token_id or 0, device=model.device)
            mask = torch.zeros((len(rows), shared + width), dtype=torch.long, device=model.device)
            mask[:, :shared] = 1
            for r, x in enumerate(own):
                tokens[r, :len(x)] = torch.tensor(x)
                mask[r, shared:shared + len(x)] = 1
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(rows))
            positions = torch.arange(shared, shared + width, device=model.device).expand(len(rows), -1)
            hidden = decoder(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=cache,
                             use_cache=True).last_hidden_state
            last = hidden[torch.arange(len(rows)), torch.tensor([len(x) - 1 for x in own])]
            out[rows] = torch.log_softmax(head(last).float(), -1)[:, token_ids].cpu().numpy()
    return out


def length_sorted_batches(tokenizer, prompts, batch_size: int, desc: str, progress: bool):
    """(row indices, prompts) batches of similar lengths, so that left padding wastes little compute; the tokenizer
    pads on the left meanwhile (the last position is then the next token for every row)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, unit="batch"):
            rows = order[start:start + batch_size]
            yield rows, [prompts[i] for i in rows]
    finally:
        tokenizer.padding_side = side


def generated_tokens(model, tokenizer, texts, cfg: CourseConfig, max_new_tokens: int = 5, progress: bool = True,
                     offsets=None) -> list[list[int]]:
    """The token ids each prompt's greedy answer adds (at most `max_new_tokens`, padding after an early stop left out),
    batched with left padding; a decision rule's `offsets` are added to the labels' first tokens (`sequence_bias`), as
    label scoring adds them."""
    import torch

    bias = {(t,): b for t, b in label_bias(label_first_tokens(tokenizer, cfg.labels), offsets).items()}
    prompts = [prompt_text(tokenizer, t, cfg) for t in texts]
    answers = [[] for _ in prompts]
    for rows, batch in length_sorted_batches(tokenizer, prompts, cfg.scoring_batch_size, "generation", progress):
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, **({"sequence_bias": bias} if bias else {}))
        for row, ids in zip(rows, out[:, enc["input_ids"].shape[1]:].tolist()):
            answers[row] = _until_stop(ids, stop_ids(model, tokenizer))
    return answers


def stop_ids(model, tokenizer) -> set[int]:
    """The token ids that end a generated answer (the generation config's, and the tokenizer's end of sequence)."""
    eos = model.generation_config.eos_token_id
    return {*(eos if isinstance(eos, list) else [] if eos is None else [eos]), tokenizer.eos_token_id}


def _until_stop(ids: list[int], stops: set) -> list[int]:
    """Generated ids up to and with the first stop token (what follows it is padding)."""
    ends = [i for i, t in enumerate(ids) if t in stops]
    return ids[:ends[0] + 1] if ends else ids


def generate_answers(model, tokenizer, texts, cfg: CourseConfig, max_new_tokens: int = 5,
                     progress: bool = True, offsets=None) -> list[str]:
    """Greedy answers of at most `max_new_tokens` tokens (`generated_tokens`), decoded without special tokens."""
    return tokenizer.batch_decode(generated_tokens(model, tokenizer, texts, cfg, max_new_tokens, progress, offsets),
                                  skip_special_tokens=True)


def stopping(model, tokenizer, texts, cfg: CourseConfig, max_new_tokens: int = 8, progress: bool = True) -> dict:
    """How a model ends its answers: the share that stop with an end-of-turn token within `max_new_tokens`, the mean
    tokens per answer, and the answers themselves (special tokens kept, to show where it stopped)."""
    ids = generated_tokens(model, tokenizer, texts, cfg, max_new_tokens, progress)
    stops = stop_ids(model, tokenizer)
    stopped = [bool(a) and a[-1] in stops for a in ids]
    return {"stopped": float(np.mean(stopped)), "stops": stopped,
            "mean_new_tokens": float(np.mean([len(a) for a in ids])), "max_new_tokens": max_new_tokens,
            "answers": tokenizer.batch_decode(ids, skip_special_tokens=False)}


# --- llama.cpp: the same prompt, the same label scoring ---------------------------------------------------------------

def load_gguf(path: Path, cfg: CourseConfig):
    """A llama.cpp model on the CPU with `cfg.threads` threads and a `cfg.context_length` context. Only the last
    position's logits are computed (that is all label scoring reads), which spares the 49k-wide output layer on every
    prompt token."""
    llama_cpp_version()  # the install message if the bindings are missing
    import llama_cpp

    path = Path(path)
    if not path.exists():
        raise GGUFError(f"{path}: no such GGUF file. Run the conversion steps of notebook 03 first.")
    try:
        # n_threads_batch too: llama.cpp's default for prompt processing (all of label scoring) is every core
        return llama_cpp.Llama(model_path=str(path), n_ctx=cfg.context_length, n_threads=cfg.threads,
                               n_threads_batch=cfg.threads, n_batch=512, logits_all=False, seed=cfg.seed, verbose=False)
    except (ValueError, RuntimeError) as err:
        raise GGUFError(f"llama.cpp could not load {path} ({err}). Is it a complete GGUF file from this llama.cpp "
                           f"release? Re-run the conversion.") from None


def check_same_tokens(llm, tokenizer, cfg: CourseConfig, path: Path) -> None:
    """The prompt is written with the Hugging Face tokenizer's template and the labels are read at that tokenizer's
    ids: refuse a GGUF file whose own vocabulary tokenizes a prompt or a label otherwise (its scores would be silently
    wrong)."""
    prompt = prompt_text(tokenizer, "A sample review, to compare tokenizers.", cfg)
    pairs = [("the prompt", _prompt_tokens(llm, prompt), tokenizer(prompt, add_special_tokens=False)["input_ids"])]
    pairs += [(f"the label {label!r}", llm.tokenize(label.encode(), add_bos=False, special=False),
               tokenizer.encode(label, add_special_tokens=False)) for label in cfg.labels]
    for what, gguf_ids, hf_ids in pairs:
        if list(gguf_ids) != list(hf_ids):
            raise GGUFError(f"{path} does not share the tokenizer of {tokenizer.name_or_path} ({what} is tokens "
                            f"{list(gguf_ids)[:8]} in the GGUF file, {list(hf_ids)[:8]} in the tokenizer), so its "
                            f"label probabilities would be wrong. Use a GGUF file exported from the configured model, "
                            f"or set the model it was made from (--model, model= in a notebook).")


def _prompt_tokens(llm, prompt: str) -> list[int]:
    """llama.cpp's tokens for a chat-templated prompt (special tokens such as <|im_start|> parsed, no extra BOS)."""
    return llm.tokenize(prompt.encode(), add_bos=False, special=True)


def gguf_probabilities(llm, tokenizer, texts, cfg: CourseConfig, progress: bool = True) -> np.ndarray:
    """Label scoring with llama.cpp, as `score_labels` does it: the softmax over the labels' first-token logits after
    each prompt, `cfg.gguf_batch_size` reviews per decode (1: one at a time)."""
    prompts = [_prompt_tokens(llm, prompt_text(tokenizer, text, cfg)) for text in texts]
    if not prompts:
        return np.zeros((0, len(cfg.labels)))
    logits = next_token_logits(llm, prompts, label_first_tokens(tokenizer, cfg.labels), cfg.gguf_batch_size,
                               template_tokens(llm, tokenizer, cfg), progress)
    return normalise_rows(logits.reshape(-1, len(cfg.labels)))


def template_tokens(llm, tokenizer, cfg: CourseConfig) -> list[int]:
    """The tokens every prompt starts with, whatever its review: the system turn and the user header."""
    one, other = (_prompt_tokens(llm, prompt_text(tokenizer, text, cfg)) for text in ("A", "B"))
    return one[:next((i for i, (a, b) in enumerate(zip(one, other)) if a != b), min(len(one), len(other)))]


def next_token_logits(llm, prompts: list[list[int]], token_ids, batch_size: int = 1, template: list[int] = (),
                      progress: bool = False) -> np.ndarray:
    """(prompts, token_ids) next-token logits, up to `batch_size` prompts per `llama_decode`. The `template` tokens
    every prompt starts with are decoded once and copied to every sequence (`llama_memory_seq_cp`); each decode then
    runs only its reviews' own tokens, one sequence (with a KV cache of its own) each, and reads the logits at each
    sequence's last token. A decode holds prompts of one length, so that no prompt is split between decodes:
    llama.cpp splits sequences of unequal lengths into steps, and a prompt decoded in two steps, one of a single
    token, had logits 0.4 away from the same prompt in one step (llama-cpp-python 0.3.36). On the tiny model, batched
    reviews get the probabilities of one at a time; on SmolLM2's Q4_K_M file they moved by up to 0.056, as llama.cpp
    multiplies a row with other kernels in a larger product (`cfg.gguf_batch_size` says more)."""
    import llama_cpp

    shared = min(len(template), *(len(p) - 1 for p in prompts))  # every prompt keeps at least one token of its own
    while any(p[:shared] != list(template[:shared]) for p in prompts):
        shared -= 1
    own = max(len(x) for x in prompts) - shared
    ctx = _scoring_context(llm, batch_size, shared + own, max(shared, batch_size * own))
    memory = llama_cpp.llama_get_memory(ctx.ctx)
    batch = llama_cpp.llama_batch_init(max(shared, batch_size * own), 0, 1)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [rows[start:start + batch_size] for _, same in itertools.groupby(order, key=lambda i: len(prompts[i]))
               for rows in [list(same)] for start in range(0, len(rows), batch_size)]
    out = np.zeros((len(prompts), len(token_ids)))
    try:
        llama_cpp.llama_memory_clear(memory, True)
        _decode(ctx, batch, [(0, prompts[0][:shared], 0)], shared * [False])
        for seq in range(1, batch_size):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        for rows in tqdm(batches, desc="llama.cpp scoring", disable=not progress, unit="batch"):
            outputs = _decode(ctx, batch, [(seq, prompts[i][shared:], shared) for seq, i in enumerate(rows)])
            for i, position in zip(rows, outputs):
                out[i] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, position),
                                               shape=(llm.n_vocab(),))[token_ids]
            for seq in range(len(rows)):
                llama_cpp.llama_memory_seq_rm(memory, seq, shared, -1)
    finally:
        llama_cpp.llama_batch_free(batch)
    return out


def _decode(ctx, batch, sequences, logits=None) -> list[int]:
    """One `llama_decode` of `sequences` [(sequence id, tokens, first position)]; the logits are kept at each
    sequence's last token (or where `logits` says); returns the batch positions of those last tokens."""
    import llama_cpp

    n, last = 0, []
    for seq, tokens, first in sequences:
        for j, token in enumerate(tokens):
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, first + j, 1
            batch.seq_id[n][0] = seq
            batch.logits[n] = j == len(tokens) - 1 if logits is None else logits[n]
            n += 1
        last.append(n - 1)
    batch.n_tokens = n
    if n and (code := llama_cpp.llama_decode(ctx.ctx, batch)) != 0:
        raise GGUFError(f"llama.cpp could not decode a batch of {len(sequences)} prompt(s), {n} tokens (code {code}). "
                        f"Set a smaller gguf_batch_size.")
    return last


def _scoring_context(llm, sequences: int, length: int, tokens: int):
    """A second llama.cpp context on `llm`'s weights for batched scoring: `sequences` sequences of up to `length`
    tokens, one decode of up to `tokens` tokens. Each sequence has a KV cache of its own (`kv_unified=False`): in one
    unified cache (llama-cpp-python 0.3.36) a sequence's logits moved by up to 0.4 with the other sequences of its
    batch, while separate caches give the very logits of one prompt at a time. Kept on the model while it is not
    outgrown, as llama.cpp allocates its buffers once per context."""
    import llama_cpp
    from llama_cpp import _internals

    held = getattr(llm, "_scoring_ctx", None)
    if held is None or held[0] != sequences or held[1] < length or held[2] < tokens:
        if held is not None:
            held[3].close()
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max, params.kv_unified = sequences, False
        params.n_ctx, params.n_batch, params.n_ubatch = sequences * length, tokens, tokens
        try:
            llm._scoring_ctx = (sequences, length, tokens,
                                _internals.LlamaContext(model=llm._model, params=params, verbose=False))
        except ValueError as err:
            raise GGUFError(f"llama.cpp could not make a context of {sequences} sequences of {length} tokens ({err}). "
                            f"Set a smaller gguf_batch_size.") from None
    return llm._scoring_ctx[3]


def gguf_answers(llm, tokenizer, texts, cfg: CourseConfig, progress: bool = True, max_new_tokens: int = 5,
                 offsets=None):
    """Greedy answers of at most `max_new_tokens` tokens with llama.cpp (each reuses the shared prompt prefix); a
    decision rule's `offsets` are added to the labels' first tokens by a logits processor, as `generate_answers`
    adds them."""
    import llama_cpp

    bias = label_bias(label_first_tokens(tokenizer, cfg.labels), offsets)

    def biased(input_ids, scores):
        scores = np.array(scores)
        for token, b in bias.items():
            scores[token] += b
        return scores
    processors = llama_cpp.LogitsProcessorList([biased]) if bias else None
    out = []
    for text in tqdm(list(texts), desc="llama.cpp generation", disable=not progress, unit="review"):
        answer = []
        for token in llm.generate(_prompt_tokens(llm, prompt_text(tokenizer, text, cfg)), temp=0.0, top_k=1,
                                  logits_processor=processors):
            if token == llm.token_eos() or len(answer) == max_new_tokens:
                break
            answer.append(token)
        out.append(llm.detokenize(answer).decode("utf-8", errors="replace"))
    return out
