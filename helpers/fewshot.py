"""Few-shot prompting through the real `openai` client, against any OpenAI-compatible server.

One way to build the messages for every backend (gpt-4o-mini online, llama.cpp's server offline); an async
classifier with a concurrency limit, timeouts and the client's own retries with backoff (rate limits, server
errors); answers read by the course's parser; and a response cache on disk, so a re-run sends no request and an
interrupted run resumes. The API key is read from the environment by the caller and never written anywhere.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from helpers.config import CourseConfig
from helpers.data import prompt_messages
from helpers.evaluate import classification_metrics, fine_tuned_margin, parse_label
from helpers.model import fingerprint
from helpers.runs import TRAINING, layout
from helpers.serve import decision_biases, llama_server


def pick_shots(train_df: pd.DataFrame, cfg: CourseConfig) -> list[tuple[str, str]]:
    """`cfg.shots` real (text, label) examples from the *training* split, as balanced over the labels as the number
    allows (5 over 3 labels: 2/2/1, the seed decides which label gets fewer), in an order fixed by the seed."""
    rng = np.random.default_rng(cfg.seed)
    order = list(rng.permutation(cfg.labels))
    per_label = {lab: cfg.shots // len(cfg.labels) + (i < cfg.shots % len(cfg.labels)) for i, lab in enumerate(order)}
    shots = []
    for lab in cfg.labels:
        rows = train_df[train_df["label"] == lab]
        if len(rows) < per_label[lab]:
            raise ValueError(f"Only {len(rows)} training examples of {lab!r}; {per_label[lab]} needed for the shots.")
        shots += [(t, lab) for t in rows.sample(n=per_label[lab], random_state=cfg.seed)["text"]]
    return [shots[i] for i in rng.permutation(len(shots))]


def build_messages(text: str, cfg: CourseConfig, shots: list[tuple[str, str]] = ()) -> list[dict]:
    """System instruction, then each shot as a user turn and its label as the assistant turn, then the review."""
    system, user = prompt_messages(text, cfg)
    examples = [m for shot, label in shots for m in ({"role": "user", "content": shot},
                                                     {"role": "assistant", "content": label})]
    return [system, *examples, user]


class FewShotError(RuntimeError):
    """A backend that cannot answer (a refused key, a failing server), with what to do; answers so far stay cached."""


class ResponseCache:
    """Responses on disk (JSON lines), keyed by backend, model, messages and parameters — never by the API key.
    A last line torn by a crash (no line end) is cut off when the cache is opened; a damaged line is skipped."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries = {}
        if self.path.exists():
            data = self.path.read_bytes()
            complete, _, torn = data.rpartition(b"\n")
            if torn.strip():  # appended to, it would glue the next entry onto the torn one
                with self.path.open("r+b") as f:
                    f.truncate(len(complete) + 1 if complete else 0)
            for line in complete.decode("utf-8", errors="replace").split("\n"):
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry["response"]
                except (ValueError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(backend: str, model: str, messages: list, params: dict) -> str:
        blob = json.dumps([backend, model, messages, params], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str):
        return self.entries.get(key)

    def put(self, key: str, response: dict) -> None:
        self.entries[key] = response
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n")


async def classify_async(client, backend: str, model: str, texts, cfg: CourseConfig, cache: ResponseCache,
                         shots=(), concurrency: int = 4, progress: bool = True) -> list[dict]:
    """Classify `texts` with chat completions (temperature 0, at most 5 tokens), `concurrency` at a time.

    Each result: answer, label (or `invalid`), latency in seconds (as measured when the request was sent, also for
    a cache hit), token usage, cached.
    Cached responses are reused; every new response is cached as soon as it arrives."""
    from openai import APIConnectionError, APIStatusError, AuthenticationError, PermissionDeniedError
    from tqdm.auto import tqdm

    params = {"temperature": 0, "max_tokens": 5}
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(texts), desc=f"{backend}:{model}", disable=not progress, unit="review")

    async def one(text):
        messages = build_messages(text, cfg, shots)
        key = cache.key(backend, model, messages, params)
        hit = cache.get(key)
        if hit is None:
            async with semaphore:
                start = time.perf_counter()
                try:
                    response = await client.chat.completions.create(model=model, messages=messages, **params)
                except (AuthenticationError, PermissionDeniedError) as err:
                    bar.close()
                    raise FewShotError(f"{backend} refused the API key (HTTP {err.status_code}, not retried): check "
                                       f"OPENAI_API_KEY, or unset it to compare with the local server only. Answers so "
                                       f"far stay cached in {cache.path}.") from None
                except (APIConnectionError, APIStatusError) as err:
                    bar.close()
                    retried = isinstance(err, APIConnectionError) or err.status_code in (408, 409, 429) or \
                        err.status_code >= 500  # what the openai client retries by itself
                    how = f"failed after {cfg.max_retries} retries" if retried else "rejected the request"
                    raise FewShotError(f"{backend} ({model}) {how}: {type(err).__name__}: {err}. Responses so far "
                                       f"are cached in {cache.path}; re-run to resume.") from None
                usage = response.usage
                hit = {"answer": response.choices[0].message.content or "",
                       "latency": time.perf_counter() - start,
                       "prompt_tokens": usage.prompt_tokens if usage else 0,
                       "completion_tokens": usage.completion_tokens if usage else 0}
            cache.put(key, hit)
            cached = False
        else:
            cached = True
        bar.update()
        return {**hit, "label": parse_label(hit["answer"], cfg.labels), "cached": cached}

    try:
        return list(await asyncio.gather(*(one(t) for t in texts)))
    finally:
        bar.close()


def open_response_cache(cfg: CourseConfig) -> ResponseCache:
    """The response cache of `cfg.response_cache`, by default `<cache_dir>/responses.jsonl`."""
    return ResponseCache(Path(cfg.response_cache) if cfg.response_cache else cfg.cache_dir / "responses.jsonl")


async def openai_row(cfg: CourseConfig, test_df: pd.DataFrame, cache: ResponseCache, shots) -> tuple[dict | None, str]:
    """(the result row of `cfg.openai_model`, a note) when OPENAI_API_KEY is set; (None, why) when it is not set or
    the API fails — the rows measured before are never lost to it."""
    key = openai_key()
    if not key:
        return None, f"OPENAI_API_KEY is not set: {cfg.openai_model} skipped (set it in your environment to add it)."
    try:
        row = await run_backend("openai", None, key, cfg.openai_model, test_df, cfg, cache, shots)
    except FewShotError as err:
        return None, f"{cfg.openai_model} skipped: {err}"
    return {**row, "method": f"{cfg.openai_model} {cfg.shots}-shot"}, f"{cfg.openai_model}: {len(test_df)} reviews done."


def openai_key() -> str | None:
    """The OpenAI key from the environment (never from a file, never written anywhere), or None."""
    import os

    return os.environ.get("OPENAI_API_KEY") or None


def make_client(base_url: str | None, api_key: str, cfg: CourseConfig):
    """The real `openai` async client, for api.openai.com (base_url None) or any OpenAI-compatible server."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=cfg.request_timeout, max_retries=cfg.max_retries)


async def run_backend(name: str, base_url: str | None, api_key: str, model: str, test_df: pd.DataFrame,
                      cfg: CourseConfig, cache: ResponseCache, shots=(), progress: bool = True) -> dict:
    """Classify the test reviews through one backend and summarise it (see `summarise`)."""
    start = time.perf_counter()
    async with make_client(base_url, api_key, cfg) as client:
        results = await classify_async(client, name, model, list(test_df["text"]), cfg, cache, shots,
                                       cfg.concurrency, progress)
    summary = summarise(results, list(test_df["label"]), model, cfg, time.perf_counter() - start)
    return {"backend": name, "model": model, "shots": len(shots), **summary}


async def run_local_models(served: dict, runs, test_df: pd.DataFrame, cfg: CourseConfig, cache: ResponseCache,
                           log_path: Path) -> list[dict]:
    """One llama.cpp server on 127.0.0.1 for the {alias: GGUF path} files in `served`, and one result row per
    (alias, shots, method) in `runs`. A file with a decision rule beside it is asked with that rule (the server adds
    it, `serve.decision_biases`). Cached answers are keyed by the file's content hash and that rule, never by a name."""
    rows, biases = [], decision_biases(served, cfg)
    with llama_server(served, cfg, log_path, biases=biases) as base_url:
        for alias, shots, method in runs:
            backend = local_backend(served[alias], biases.get(alias))
            row = await run_backend(backend, base_url, "local", alias, test_df, cfg, cache, shots)
            rows.append({**row, "method": method, "size_mb": Path(served[alias]).stat().st_size / 1e6})
    return rows


def local_backend(path, bias: dict | None = None) -> str:
    """The name a GGUF file's answers from a llama.cpp server are cached under: the file's content hash, and the
    decision rule the server adds to its requests (`bias`, {token id: offset}) when it has one, since the same file
    under another rule answers otherwise. Never its alias or path."""
    backend = f"llama.cpp:{fingerprint(path)[:12]}"
    if bias:
        rule = json.dumps(bias, sort_keys=True).encode()
        backend += f"+rule:{hashlib.sha256(rule).hexdigest()[:8]}"
    return backend


class CachedClient:
    """The answer cache as a speed trick, in one line a learner may delete: `client = CachedClient(client, cache,
    backend)`. Its `chat.completions.create(model=..., messages=..., **params)` answers from `cache` a request
    (backend, model, messages, parameters) that was answered before, and sends any other one through `client`,
    caching the answer as soon as it arrives: the same cache, under the same keys, as `classify_async`, so the
    notebook's own calls and the `compare` command share their answers. It notes each answer's latency (measured when
    it was sent, also for a cache hit), token usage and whether it was cached, in `records`, for `answers_row`."""

    def __init__(self, client, cache: ResponseCache, backend: str):
        self.client, self.cache, self.backend = client, cache, backend
        self.records, self.started, self.finished = [], None, None
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    async def create(self, *, model: str, messages: list, **params):
        from openai.types.chat import ChatCompletion

        self.started = self.started or time.perf_counter()
        key = self.cache.key(self.backend, model, messages, params)
        hit = self.cache.get(key)
        response = None
        if hit is None:
            start = time.perf_counter()
            response = await self.client.chat.completions.create(model=model, messages=messages, **params)
            usage = response.usage
            hit = {"answer": response.choices[0].message.content or "", "latency": time.perf_counter() - start,
                   "prompt_tokens": usage.prompt_tokens if usage else 0,
                   "completion_tokens": usage.completion_tokens if usage else 0}
            self.cache.put(key, hit)
        self.records.append({**hit, "cached": response is None})
        self.finished = time.perf_counter()
        return response or ChatCompletion.model_validate({
            "id": f"cached-{key[:12]}", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": hit["answer"]}}],
            "usage": {"prompt_tokens": hit["prompt_tokens"], "completion_tokens": hit["completion_tokens"],
                      "total_tokens": hit["prompt_tokens"] + hit["completion_tokens"]}})

    async def close(self) -> None:
        await self.client.close()


def answers_row(client, predicted, gold, cfg: CourseConfig, model: str, shots, method: str, path) -> dict:
    """The result row of labels a notebook's own requests gave (`predicted`, in the order of `gold`), in the form of
    `run_local_models`' rows: scores from the labels; latency, prompt tokens and throughput from the `CachedClient`'s
    records (None without one: the speed trick was deleted); size from the GGUF file at `path`."""
    records = getattr(client, "records", [])[-len(predicted):]  # a cell run again asks again: its last answers
    if len(records) == len(predicted):
        # latency and tokens are medians and counts: the order the answers arrived in does not matter
        results = [{**record, "label": label} for record, label in zip(records, predicted)]
        summary = summarise(results, list(gold), model, cfg, client.finished - client.started)
    else:
        summary = {**classification_metrics(list(gold), list(predicted), cfg.labels), "median_latency_s": None,
                   "median_prompt_tokens": None, "reviews_per_second": None, "cost_per_1000_usd": 0.0, "cached": 0,
                   "predictions": list(predicted)}
    backend = getattr(client, "backend", "llama.cpp")
    return {"backend": backend, "model": model, "shots": len(shots), **summary, "method": method,
            "size_mb": Path(path).stat().st_size / 1e6}


def cost_usd(results: list[dict], model: str, cfg: CourseConfig) -> float:
    """Token usage x the price table in the config; local models cost $0."""
    price = cfg.prices_per_million_tokens.get(model)
    if price is None:
        return 0.0
    prompt = sum(r["prompt_tokens"] for r in results)
    completion = sum(r["completion_tokens"] for r in results)
    return (prompt * price["input"] + completion * price["output"]) / 1e6


def summarise(results: list[dict], gold, model: str, cfg: CourseConfig, wall_seconds: float) -> dict:
    """Accuracy, macro-F1, invalid rate, median latency and prompt tokens, reviews per second and cost per 1,000
    reviews."""
    metrics = classification_metrics(gold, [r["label"] for r in results], cfg.labels)
    cached = sum(r["cached"] for r in results)
    return {**metrics, "median_latency_s": statistics.median(r["latency"] for r in results),
            "median_prompt_tokens": statistics.median(r["prompt_tokens"] for r in results),
            # throughput is measured only on a run that sent every request; a cached re-run says None
            "reviews_per_second": None if cached else len(results) / wall_seconds,
            "cost_per_1000_usd": 1000 * cost_usd(results, model, cfg) / len(results),
            "cached": cached, "predictions": [r["label"] for r in results]}


def fewshot_verdict(results: list[dict], gold, cfg: CourseConfig) -> str:
    """One sentence: does the best fine-tuned method beat, tie or fall behind the best few-shot prompt on the test
    reviews (`gold`), by the paired bootstrap?"""
    return fine_tuned_margin(gold, results, [r for r in results if r.get("shots")], "few-shot prompt", cfg.labels,
                             cfg.seed)


def training_rows(cfg: CourseConfig) -> list[dict]:
    """Notebook 02's label scoring of the base model (0-shot) and of the fine-tuned HF model on the same test reviews,
    as rows of this comparison with their predictions (nothing is run again); [] before notebook 02 has run."""
    m = layout(cfg).metrics(TRAINING)
    if not m:
        return []
    rows = [{"method": "fine-tuned HF fp32 (label scoring)", **m["fine_tuned"], "predictions": m["test_predictions"],
             "size_mb": m["artifact_mb"]["merged"]}]
    if "zero_shot" in m:  # the notebook scores the base model first; the `train` command does not
        rows.insert(0, {"method": "base 0-shot (HF label scoring)", **m["zero_shot"], "size_mb": None,
                        "predictions": [cfg.labels[i] for i in np.asarray(m["zero_shot_probabilities"]).argmax(1)]})
    return [{**r, "median_latency_s": None, "cost_per_1000_usd": 0.0, "shots": 0} for r in rows]


# --- the worked solutions of notebook 04's exercises ---------------------------------------------------------------

class InterruptingCache(ResponseCache):
    """A response cache that cancels `task` — as ■ cancels a running cell — as soon as it has stored `stop_after` new
    answers. It notes when the first answer was looked up and when it stopped, to time the answers it stored."""

    def __init__(self, path: Path, stop_after: int):
        super().__init__(path)
        self.stop_after, self.stored, self.task = stop_after, 0, None
        self.first_lookup = self.stopped_at = None

    def get(self, key: str):
        if self.first_lookup is None:
            self.first_lookup = time.perf_counter()
        return super().get(key)

    def put(self, key: str, response: dict) -> None:
        super().put(key, response)
        self.stored += 1
        if self.stored == self.stop_after:  # the answer is on disk; every request still in flight is cancelled
            self.stopped_at = time.perf_counter()
            self.task.cancel()


async def run_until_interrupted(served: dict, runs, test_df: pd.DataFrame, cfg: CourseConfig, cache_path: Path,
                                log_path: Path, stop_after: int) -> dict:
    """`run_local_models` with the answer cache at `cache_path`, cancelled once `stop_after` new answers are cached
    (the server stops, as when its cell is interrupted). Returns {"answered": answers cached by this call,
    "seconds": from the first lookup to the interrupt (or to the last answer when it finished first), "interrupted"}."""
    cache = InterruptingCache(cache_path, stop_after)
    cache.task = task = asyncio.ensure_future(run_local_models(served, runs, test_df, cfg, cache, log_path))
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:  # this call itself was interrupted: stop the run too
        task.cancel()
        await asyncio.wait({task})
        raise
    if not task.cancelled():
        task.result()  # an error other than the interrupt is raised here
    end = cache.stopped_at or time.perf_counter()
    return {"answered": cache.stored, "seconds": end - cache.first_lookup if cache.first_lookup else 0.0,
            "interrupted": task.cancelled()}


FIGURES = ("accuracy", "macro_f1", "invalid_rate", "median_latency_s", "median_prompt_tokens", "cost_per_1000_usd",
           "cached")


def comparison_figures(v: dict, *rows: dict) -> dict:
    """The figures of a paired comparison for a metrics file: each row's scores by method, and the verdict's macro-F1
    difference (first row of the verdict minus second), its 95 % interval and outcome."""
    return {"rows": {r["method"]: {k: r.get(k) for k in FIGURES} for r in rows},
            **{k: v[k] for k in ("difference", "low", "high", "outcome")}}


def shots_sentence(v: dict, fewer: dict, more: dict) -> str:
    """Exercise 1's answer: did more shots help the base model (`v`: `evaluate.verdict` of `more` against `fewer`),
    and what did they cost in prompt tokens and latency?"""
    said = {"ahead": "improved", "tied": "did not change beyond the test set's noise", "behind": "got worse"}
    ratio = more["median_latency_s"] / fewer["median_latency_s"] if fewer["median_latency_s"] else float("nan")
    cached = fewer.get("cached", 0) + more.get("cached", 0)
    return (f"With {more['shots']} shots instead of {fewer['shots']}, the base model {said[v['outcome']]}: macro-F1 "
            f"{more['macro_f1']:.3f} against {fewer['macro_f1']:.3f} ({v['interval']}). Its prompts grew from a median "
            f"of {fewer['median_prompt_tokens']:.0f} to {more['median_prompt_tokens']:.0f} tokens, and its median "
            f"latency went from {fewer['median_latency_s']:.3f} s to {more['median_latency_s']:.3f} s ({ratio:.2f}x)"
            + (f"; {cached} of the answers came from the answer cache, with the latency measured when they were sent."
               if cached else "."))


def openai_sentence(v: dict, gpt: dict, tuned: dict, prices_checked: str) -> str:
    """Exercise 2's answer: `gpt` (the OpenAI row) against the fine-tuned row (`v`: `evaluate.verdict` of `gpt`
    against `tuned`), and what it costs per 1,000 reviews."""
    said = {"ahead": "beat", "tied": "tied with", "behind": "fell behind"}[v["outcome"]]
    return (f"{gpt['method']} (macro-F1 {gpt['macro_f1']:.3f}) {said} {tuned['method']} ({tuned['macro_f1']:.3f}): "
            f"{v['interval']}{' (a tie: the test set cannot tell them apart)' if v['outcome'] == 'tied' else ''}. "
            f"It costs ${gpt['cost_per_1000_usd']:.4f} per 1,000 reviews at the list prices of {prices_checked} (check "
            f"the current ones); the fine-tuned model costs $0 per 1,000 on your own machine.")


def openai_skipped_answer(cfg: CourseConfig) -> str:
    """Exercise 2's answer when the OpenAI row could not be run (the note beside it in the record says why)."""
    return (f"{cfg.openai_model} was not asked here, so there is no comparison yet. To answer it, run this notebook "
            f"again with a valid OPENAI_API_KEY in the environment that JupyterLab or `make solutions` starts from: "
            f"it sends the test reviews to {cfg.openai_model} {cfg.shots}-shot (cached, so a run that stopped resumes) "
            f"and compares it with the fine-tuned model, with its cost per 1,000 reviews.")


def resume_sentence(total: int, answered: int, seconds: float, cached: int, new: int) -> str:
    """Exercise 3's answer: what the answer cache saved when an interrupted run was started again."""
    return (f"The interrupted run got {answered} of its {total} answers (in {seconds:.1f} s) before it stopped. Run "
            f"again, it read {cached} answers from the cache and sent {new} requests to the server: the cache saved "
            f"{cached} requests" + (f", about {seconds:.1f} s of the server's time." if cached == answered else "."))
