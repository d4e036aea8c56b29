import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from helpers.data import prepare_splits
from helpers.fewshot import (FewShotError, ResponseCache, build_messages, classify_async, comparison_figures, cost_usd,
                             fewshot_verdict, make_client, openai_key, openai_row, openai_sentence,
                             openai_skipped_answer, pick_shots, resume_sentence, run_backend, run_local_models,
                             run_until_interrupted, shots_sentence, training_rows)
from helpers.runs import TRAINING, record_metrics

FAKE_KEY = "test-key-never-written-0123456789"


class FlakyOpenAI(BaseHTTPRequestHandler):
    """A real HTTP server on 127.0.0.1 speaking the chat-completions format; the first `fail` requests get a 500."""
    fail = 0
    status = 500
    seen = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FlakyOpenAI.seen.append(body)
        if len(FlakyOpenAI.seen) <= FlakyOpenAI.fail:
            self.send_response(FlakyOpenAI.status)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "transient"}}')
            return
        answer = "Positive." if "great" in body["messages"][-1]["content"] else "neutral"
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                 "usage": {"prompt_tokens": 100, "completion_tokens": 2, "total_tokens": 102}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    FlakyOpenAI.fail, FlakyOpenAI.status, FlakyOpenAI.seen = 0, 500, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


TEXTS = ["a great phone", "it is a phone", "great value", "a box"]


def classify(url, cfg, cache, texts=TEXTS, retries=2):
    cfg.max_retries = retries

    async def go():
        async with make_client(url, "local", cfg) as client:
            return await classify_async(client, "test", "m", texts, cfg, cache, progress=False)
    return asyncio.run(go())


def test_shots_are_balanced_seeded_and_from_the_training_split_only(cfg):
    splits = prepare_splits(cfg)
    shots = pick_shots(splits.train, cfg)
    assert len(shots) == 5 and sorted(pd.Series([lab for _, lab in shots]).value_counts()) == [1, 2, 2]
    assert all(text in set(splits.train["text"]) and text not in set(splits.test["text"]) for text, _ in shots)
    assert pick_shots(splits.train, cfg) == shots
    cfg.seed += 1
    assert pick_shots(splits.train, cfg) != shots


def test_messages_put_each_shot_as_a_user_and_assistant_turn(cfg):
    messages = build_messages("the review", cfg, [("good", "positive"), ("bad", "negative")])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == cfg.system_prompt and messages[-1]["content"] == "the review"
    assert build_messages("x", cfg) == [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": "x"}]


def test_answers_are_parsed_and_usage_recorded(flaky, cfg, tmp_path):
    results = classify(flaky, cfg, ResponseCache(tmp_path / "c.jsonl"))
    assert [r["label"] for r in results] == ["positive", "neutral", "positive", "neutral"]
    assert all(r["prompt_tokens"] == 100 and not r["cached"] and r["latency"] > 0 for r in results)
    assert FlakyOpenAI.seen[0]["temperature"] == 0 and FlakyOpenAI.seen[0]["max_tokens"] == 5


def test_a_cache_hit_sends_no_second_request(flaky, cfg, tmp_path):
    classify(flaky, cfg, ResponseCache(tmp_path / "c.jsonl"))
    sent = len(FlakyOpenAI.seen)
    again = classify(flaky, cfg, ResponseCache(tmp_path / "c.jsonl"))  # a fresh object reads the file
    assert len(FlakyOpenAI.seen) == sent and all(r["cached"] for r in again)
    cached = ResponseCache(tmp_path / "c.jsonl").entries.values()  # in the order the answers arrived
    assert sorted(r["latency"] for r in again) == sorted(r["latency"] for r in cached)
    assert [r["label"] for r in again] == ["positive", "neutral", "positive", "neutral"]


def test_an_interrupted_batch_resumes_where_it_stopped(flaky, cfg, tmp_path):
    cache = ResponseCache(tmp_path / "c.jsonl")
    classify(flaky, cfg, cache, TEXTS[:2])  # the run that was interrupted after two reviews
    FlakyOpenAI.seen.clear()
    results = classify(flaky, cfg, ResponseCache(tmp_path / "c.jsonl"))
    assert [r["cached"] for r in results] == [True, True, False, False] and len(FlakyOpenAI.seen) == 2


def test_a_transient_server_error_is_retried(flaky, cfg, tmp_path):
    FlakyOpenAI.fail = 1
    results = classify(flaky, cfg, ResponseCache(tmp_path / "c.jsonl"), TEXTS[:1], retries=2)
    assert results[0]["label"] == "positive" and len(FlakyOpenAI.seen) == 2


def test_persistent_errors_keep_what_was_cached(flaky, cfg, tmp_path):
    cache = ResponseCache(tmp_path / "c.jsonl")
    classify(flaky, cfg, cache, TEXTS[:1])
    FlakyOpenAI.fail = 10**6
    with pytest.raises(FewShotError, match="failed after 0 retries.*cached in .*c.jsonl; re-run to resume"):
        classify(flaky, cfg, cache, TEXTS, retries=0)
    assert len(ResponseCache(tmp_path / "c.jsonl").entries) == 1


def test_a_refused_key_is_not_retried_and_skips_only_the_openai_row(flaky, cfg, tmp_path, monkeypatch):
    FlakyOpenAI.fail, FlakyOpenAI.status = 10**6, 401
    with pytest.raises(FewShotError, match=r"test refused the API key \(HTTP 401, not retried\): check OPENAI_API_KEY"):
        classify(flaky, cfg, ResponseCache(tmp_path / "c.jsonl"), ["a review only this test sends"], retries=3)
    # no retry of a 401 (counted by its own text: a late retry of another test's request may reach the shared server)
    assert [m["messages"][-1]["content"] for m in FlakyOpenAI.seen].count("a review only this test sends") == 1
    from openai import AsyncOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-invalid")
    monkeypatch.setattr("helpers.fewshot.make_client",  # api.openai.com is out of reach here: the same 401 locally
                        lambda base_url, key, cfg: AsyncOpenAI(base_url=flaky, api_key=key, max_retries=3))
    df = pd.DataFrame({"text": TEXTS[:2], "label": ["positive", "neutral"]})
    row, note = asyncio.run(openai_row(cfg, df, ResponseCache(tmp_path / "c.jsonl"), ()))
    assert row is None and note.startswith("gpt-4o-mini skipped: openai refused the API key (HTTP 401")
    assert "sk-invalid" not in note


def test_a_torn_last_line_of_the_cache_is_cut_off_and_the_rest_kept(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = ResponseCache(path)
    cache.put("a", {"answer": "positive"})
    cache.put("b", {"answer": "neutral"})
    path.write_bytes(path.read_bytes() + b'{"key": "c", "respo')  # a crash in the middle of a write
    again = ResponseCache(path)
    assert again.entries == {"a": {"answer": "positive"}, "b": {"answer": "neutral"}}
    again.put("c", {"answer": "negative"})
    assert ResponseCache(path).entries["c"] == {"answer": "negative"} and len(path.read_text().splitlines()) == 3


def test_missing_key_is_none_and_the_client_refuses_without_one(monkeypatch, cfg):
    from openai import OpenAIError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert openai_key() is None
    with pytest.raises(OpenAIError, match="api_key"):
        make_client(None, None, cfg)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    assert openai_key() == FAKE_KEY


def test_the_key_never_lands_in_a_written_file(flaky, cfg, tmp_path):
    df = pd.DataFrame({"text": TEXTS, "label": ["positive", "neutral", "positive", "neutral"]})
    cache = ResponseCache(tmp_path / "cache" / "c.jsonl")
    row = asyncio.run(run_backend("openai", flaky, FAKE_KEY, "gpt-4o-mini", df, cfg, cache, progress=False))
    from helpers.runs import record_metrics
    record_metrics(cfg, "04_test", results=[{k: v for k, v in row.items()}])
    written = [p for p in list(tmp_path.rglob("*")) + list(cfg.run_dir.rglob("*")) if p.is_file()]
    assert written and not any(FAKE_KEY in p.read_text(errors="ignore") for p in written)
    assert row["accuracy"] == 1.0 and row["cost_per_1000_usd"] == pytest.approx(1000 * (100 * 0.15 + 2 * 0.6) / 1e6)


def test_summary_of_a_cached_rerun_keeps_latency_and_claims_no_throughput(cfg):
    from helpers.fewshot import summarise

    results = [{"label": "positive", "latency": 0.2, "cached": True, "prompt_tokens": 1, "completion_tokens": 1},
               {"label": "negative", "latency": 0.4, "cached": False, "prompt_tokens": 1, "completion_tokens": 1}]
    summary = summarise(results, ["positive", "neutral"], "local", cfg, wall_seconds=0.5)
    assert summary["median_latency_s"] == pytest.approx(0.3) and summary["reviews_per_second"] is None
    assert summary["cached"] == 1 and summary["accuracy"] == 0.5 and summary["median_prompt_tokens"] == 1
    fresh = summarise([{**r, "cached": False} for r in results], ["positive", "neutral"], "local", cfg, 0.5)
    assert fresh["reviews_per_second"] == pytest.approx(4.0)


def test_cost_uses_the_price_table_and_local_is_free(cfg):
    results = [{"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}]
    assert cost_usd(results, "gpt-4o-mini", cfg) == pytest.approx(0.75)
    assert cost_usd(results, "finetuned", cfg) == 0.0


def test_verdict_beats_or_ties_by_the_paired_bootstrap(cfg):
    gold = list(np.array(cfg.labels)[np.arange(60) % 3])
    wrong = [cfg.labels[(cfg.labels.index(g) + 1) % 3] for g in gold]
    tuned = {"method": "fine-tuned x", "macro_f1": 1.0, "predictions": gold}
    rows = [{"method": "base 5-shot", "shots": 5, "macro_f1": 0.0, "predictions": wrong}, tuned]
    assert fewshot_verdict(rows, gold, cfg) == ("The best fine-tuned model (fine-tuned x, macro-F1 1.000) beat the best "
                                                "few-shot prompt (base 5-shot, 0.000): +1.000, 95 % interval +1.000 to "
                                                "+1.000.")
    rows[0] = {**rows[0], "macro_f1": 0.983, "predictions": ["neutral"] + gold[1:]}
    assert " tied with the best few-shot prompt " in fewshot_verdict(rows, gold, cfg)


def test_training_rows_read_notebook_02_with_predictions(cfg):
    assert training_rows(cfg) == []
    labels = list(cfg.labels)
    summary = {"accuracy": 1.0, "macro_f1": 1.0, "invalid_rate": 0.0, "reviews_per_second": 9.0}
    record_metrics(cfg, TRAINING, fine_tuned=summary, zero_shot={**summary, "macro_f1": 0.5}, test_labels=labels,
                   test_predictions=labels, zero_shot_probabilities=[[0.1, 0.2, 0.7]] * 3, artifact_mb={"merged": 5})
    base, tuned = training_rows(cfg)
    assert (base["method"], base["predictions"], base["size_mb"]) == ("base 0-shot (HF label scoring)",
                                                                       ["positive"] * 3, None)
    assert (tuned["predictions"], tuned["size_mb"], tuned["shots"], tuned["cost_per_1000_usd"]) == (labels, 5, 0, 0.0)


@pytest.mark.slow
def test_local_models_run_behind_one_real_server_one_row_per_run(cfg, tmp_path):
    from pathlib import Path

    from helpers.gguf import convert_to_gguf
    from helpers.model import resolve_model

    gguf = convert_to_gguf(cfg, Path(resolve_model(cfg)), tmp_path / "tiny.gguf")
    df = pd.DataFrame({"text": ["Works well.", "Broke at once."], "label": ["positive", "negative"]})
    cache = ResponseCache(tmp_path / "responses.jsonl")
    runs = [("tiny", (), "0-shot"), ("tiny", [("Nice.", "positive")], "1-shot")]
    rows = asyncio.run(run_local_models({"tiny": gguf}, runs, df, cfg, cache, tmp_path / "server.log"))
    assert [r["method"] for r in rows] == ["0-shot", "1-shot"]
    assert all(r["n"] == 2 and r["cached"] == 0 for r in rows)
    assert rows[0]["size_mb"] == pytest.approx(gguf.stat().st_size / 1e6)
    assert (tmp_path / "server.log").exists()
    again = asyncio.run(run_local_models({"tiny": gguf}, runs, df, cfg, cache, tmp_path / "server.log"))
    assert [r["cached"] for r in again] == [2, 2] and [r["predictions"] for r in again] == [r["predictions"] for r in rows]


# --- notebook 04's worked solutions --------------------------------------------------------------------------------

FIVE = {"method": "base 5-shot", "shots": 5, "macro_f1": 0.36, "accuracy": 0.46, "median_latency_s": 0.5,
        "median_prompt_tokens": 300, "cached": 0}
TEN = {**FIVE, "method": "base 10-shot", "shots": 10, "macro_f1": 0.41, "median_latency_s": 0.8,
       "median_prompt_tokens": 560}


def test_the_shots_sentence_says_improved_tied_or_worse_and_what_latency_did():
    ahead = {"outcome": "ahead", "interval": "+0.050, 95 % interval +0.010 to +0.090"}
    assert shots_sentence(ahead, FIVE, TEN) == (
        "With 10 shots instead of 5, the base model improved: macro-F1 0.410 against 0.360 (+0.050, 95 % interval "
        "+0.010 to +0.090). Its prompts grew from a median of 300 to 560 tokens, and its median latency went from "
        "0.500 s to 0.800 s (1.60x).")
    tied = shots_sentence({**ahead, "outcome": "tied"}, {**FIVE, "cached": 24}, TEN)
    assert "model did not change beyond the test set's noise: " in tied
    assert tied.endswith("; 24 of the answers came from the answer cache, with the latency measured when they were "
                         "sent.")
    assert " got worse: " in shots_sentence({**ahead, "outcome": "behind"}, FIVE, TEN)


def test_comparison_figures_keep_each_row_s_scores_and_the_verdict():
    v = {"difference": 0.05, "low": 0.01, "high": 0.09, "outcome": "ahead", "sentence": "x", "interval": "y"}
    figures = comparison_figures(v, TEN, FIVE)
    assert list(figures["rows"]) == ["base 10-shot", "base 5-shot"] and figures["outcome"] == "ahead"
    assert figures["rows"]["base 5-shot"]["median_prompt_tokens"] == 300 and "sentence" not in figures
    assert figures["rows"]["base 5-shot"]["invalid_rate"] is None  # a figure a row lacks is None, not an error
    json.dumps(figures)


def test_the_openai_sentence_gives_the_verdict_and_the_cost_and_the_skip_says_what_to_do(cfg):
    gpt = {"method": "gpt-4o-mini 5-shot", "macro_f1": 0.7, "cost_per_1000_usd": 0.0312}
    tuned = {"method": "fine-tuned HF fp32 (label scoring)", "macro_f1": 0.8}
    v = {"outcome": "tied", "interval": "-0.100, 95 % interval -0.210 to +0.020"}
    assert openai_sentence(v, gpt, tuned, "2024-07-18") == (
        "gpt-4o-mini 5-shot (macro-F1 0.700) tied with fine-tuned HF fp32 (label scoring) (0.800): -0.100, 95 % "
        "interval -0.210 to +0.020 (a tie: the test set cannot tell them apart). It costs $0.0312 per 1,000 reviews at "
        "the list prices of 2024-07-18 (check the current ones); the fine-tuned model costs $0 per 1,000 on your own "
        "machine.")
    assert " fell behind fine-tuned" in openai_sentence({**v, "outcome": "behind"}, gpt, tuned, "x")
    df = pd.DataFrame({"text": TEXTS[:2], "label": ["positive", "neutral"]})
    row, note = asyncio.run(openai_row(cfg, df, ResponseCache(cfg.run_dir / "c.jsonl"), ()))  # no key in tests
    assert row is None and note.startswith("OPENAI_API_KEY is not set: gpt-4o-mini skipped")
    answer = openai_skipped_answer(cfg)
    assert answer.startswith("gpt-4o-mini was not asked here, so there is no comparison yet. To answer it, run this")
    assert "with a valid OPENAI_API_KEY in the environment" in answer and "gpt-4o-mini 5-shot" in answer


def test_the_resume_sentence_counts_cached_and_new_requests():
    assert resume_sentence(48, 24, 10.04, 24, 24) == (
        "The interrupted run got 24 of its 48 answers (in 10.0 s) before it stopped. Run again, it read 24 answers "
        "from the cache and sent 24 requests to the server: the cache saved 24 requests, about 10.0 s of the server's "
        "time.")
    assert resume_sentence(48, 24, 10.0, 20, 28).endswith("the cache saved 20 requests.")  # no time claimed then


@pytest.mark.slow
def test_an_interrupted_run_stops_after_n_answers_and_the_next_run_reads_them_from_the_cache(tiny_gguf, cfg, tmp_path):
    f16 = tiny_gguf[2]
    df = pd.DataFrame({"text": ["Works well.", "Broke at once.", "It is a box.", "Fine."],
                       "label": ["positive", "negative", "neutral", "positive"]})
    runs, path = [("tiny", (), "0-shot")], tmp_path / "fresh.jsonl"
    stopped = asyncio.run(run_until_interrupted({"tiny": f16}, runs, df, cfg, path, tmp_path / "s.log", stop_after=2))
    assert stopped["answered"] == 2 and stopped["interrupted"] and stopped["seconds"] > 0
    assert len(ResponseCache(path).entries) == 2 and len(path.read_text().splitlines()) == 2  # nothing after the stop
    rows = asyncio.run(run_local_models({"tiny": f16}, runs, df, cfg, ResponseCache(path), tmp_path / "s.log"))
    assert rows[0]["cached"] == 2 and rows[0]["n"] == 4 and len(ResponseCache(path).entries) == 4
    done = asyncio.run(run_until_interrupted({"tiny": f16}, runs, df, cfg, tmp_path / "other.jsonl",
                                             tmp_path / "s.log", stop_after=10))  # more than it has to ask
    assert done == {"answered": 4, "seconds": done["seconds"], "interrupted": False}


# --- notebook 04's take-home cells, and the helper path that must send the same requests -----------------------------

STEM = "04_few_shot_vs_finetuned"


def take_home_function(name: str, **scope):
    """The function `name` as notebook 04's take-home cells define it, with the plain names it reads in `scope`."""
    import ast

    from take_home import take_home_cells

    for source in take_home_cells(STEM):
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                exec(compile(ast.Module([node], []), f"<{STEM}>", "exec"), scope)
                return scope[name]
    raise LookupError(f"no take-home cell of {STEM} defines {name}()")


def test_the_take_home_cells_read_answers_and_build_messages_as_the_helpers_do(cfg):
    import re

    from helpers.evaluate import parse_label

    to_label = take_home_function("to_label", re=re, labels=list(cfg.labels))
    answers = ["Positive.", " negative\n", "NEUTRAL", "positive or negative", "not positive", "", "positive positive",
               "Negative: the screen broke", "neutral-ish", "5 stars", "positive, neutral", "It is positive."]
    assert [to_label(a) for a in answers] == [parse_label(a, cfg.labels) for a in answers]
    shots = [("good", "positive"), ("bad", "negative")]
    few_shot_messages = take_home_function("few_shot_messages", system_prompt=cfg.system_prompt, shots=shots)
    assert few_shot_messages("the review") == build_messages("the review", cfg, shots)


def test_the_cached_client_shares_the_helper_path_s_answers_and_gives_a_row_of_its_form(flaky, cfg, tmp_path):
    from helpers.fewshot import CachedClient, answers_row

    cache, shots = ResponseCache(tmp_path / "c.jsonl"), [("a great box", "positive")]
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")

    async def ask(texts):  # what the take-home cells do, with the speed-trick line in between
        client = CachedClient(make_client(flaky, "local", cfg), cache, backend="test")
        answers = [(await client.chat.completions.create(model="m", messages=build_messages(t, cfg, shots),
                                                         max_tokens=5, temperature=0)).choices[0].message.content
                   for t in texts]
        await client.close()
        return client, answers

    client, answers = asyncio.run(ask(TEXTS))
    assert answers == ["Positive.", "neutral", "Positive.", "neutral"] and len(FlakyOpenAI.seen) == 4
    predicted = ["positive", "neutral", "positive", "neutral"]
    row = answers_row(client, predicted, predicted, cfg, "m", shots, "m 1-shot", path)
    df = pd.DataFrame({"text": TEXTS, "label": predicted})
    helper = asyncio.run(run_backend("test", flaky, "local", "m", df, cfg, cache, shots, progress=False))
    assert len(FlakyOpenAI.seen) == 4 and helper["cached"] == 4  # the same keys: the helper sent nothing
    assert set(row) == set(helper) | {"method", "size_mb"} and row["predictions"] == helper["predictions"]
    assert row["accuracy"] == 1.0 and row["cached"] == 0 and row["median_prompt_tokens"] == 100
    again, answers_again = asyncio.run(ask(TEXTS))
    assert answers_again == answers and len(FlakyOpenAI.seen) == 4 and all(r["cached"] for r in again.records)
    assert answers_row(again, predicted, predicted, cfg, "m", shots, "x", path)["reviews_per_second"] is None
    bare = answers_row(object(), predicted, predicted, cfg, "m", shots, "x", path)  # the speed trick deleted
    assert bare["accuracy"] == 1.0 and bare["median_latency_s"] is None


@pytest.mark.slow
def test_the_take_home_cells_get_an_answer_from_a_real_llama_cpp_server_for_every_review(tiny_gguf, tmp_path):
    from helpers.serve import free_port, port_is_taken
    from take_home import run_take_home

    cfg, _, f16, _ = tiny_gguf
    reviews = [("Works well.", "positive"), ("Broke at once.", "negative"), ("It is a box.", "neutral")]
    port = free_port()
    inputs = {"gguf_path": str(f16), "model_alias": "tiny", "port": port, "n_ctx": 512, "n_threads": cfg.threads,
              "server_log": str(tmp_path / "server.log"), "system_prompt": cfg.system_prompt,
              "labels": list(cfg.labels), "shots": [("Nice.", "positive"), ("Awful.", "negative")],
              "test_reviews": reviews, "concurrency": 2, "request_timeout": 60.0, "max_retries": 0}
    done = run_take_home(STEM, inputs, tmp_path / "work", timeout=300)
    assert "serving: ['tiny']" in done.stdout
    assert f"{len(reviews)} answers for {len(reviews)} reviews: accuracy " in done.stdout
    assert done.stdout.count(" | answered ") == len(reviews)
    assert "POST /v1/chat/completions" in (tmp_path / "server.log").read_text()  # the real server answered them
    assert not port_is_taken(port)  # and was stopped


@pytest.mark.slow
def test_the_helper_path_sends_the_take_home_cells_requests_and_gets_their_labels(course_run, tmp_path):
    """One procedure: `run_local_models` (the `compare` command's path) asks the base model with the requests notebook
    04's take-home cells sent (every one is in the notebook's answer cache: same model file, messages and parameters),
    and a server asked afresh gives the labels the take-home cells read."""
    import shutil

    from helpers.config import make_config
    from helpers.gguf import base_model_gguf

    run_dir = course_run.through(STEM)
    metrics = json.loads((run_dir / STEM / "metrics.json").read_text())
    cfg = make_config("smoke", run_dir=tmp_path / "run")
    splits = prepare_splits(cfg)
    shots = pick_shots(splits.train, cfg)
    assert [tuple(s) for s in metrics["shots"]] == shots
    shutil.copy(course_run.parameters["overrides"]["response_cache"], tmp_path / "notebook.jsonl")
    runs, served = [("base", shots, "helper")], {"base": base_model_gguf(cfg)}
    seen, fresh = (asyncio.run(run_local_models(served, runs, splits.test, cfg, ResponseCache(tmp_path / name),
                                                tmp_path / "server.log"))[0]
                   for name in ("notebook.jsonl", "fresh.jsonl"))
    assert seen["cached"] == len(splits.test) and fresh["cached"] == 0
    assert fresh["predictions"] == seen["predictions"] == metrics["take_home"]["predictions"]
    base = next(r for r in metrics["results"] if r["method"] == f"base {cfg.shots}-shot (GGUF)")
    assert (base["accuracy"], base["macro_f1"]) == (fresh["accuracy"], fresh["macro_f1"])
