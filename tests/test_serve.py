import asyncio
import json
import socket

import pytest

from helpers.serve import ServerError, decision_biases, free_port, llama_server, port_is_taken

pytestmark = pytest.mark.slow  # notebooks, servers, llama.cpp or course runs: left out of make test-fast


@pytest.fixture(scope="module")
def tiny_gguf_file(tiny_gguf):
    """(smoke config, the tiny model's f16 GGUF file): the session's file, converted once for every test module."""
    cfg, _, f16, _ = tiny_gguf
    return cfg, f16


def test_round_trip_through_the_openai_client_and_clean_stop(tiny_gguf_file, tmp_path):
    from openai import AsyncOpenAI

    cfg, gguf = tiny_gguf_file

    async def ask(url):
        async with AsyncOpenAI(base_url=url, api_key="local") as client:
            models = await client.models.list()
            reply = await client.chat.completions.create(model="tiny", max_tokens=3, temperature=0,
                                                         messages=[{"role": "user", "content": "hi"}])
            return [m.id for m in models.data], reply

    with llama_server({"tiny": gguf}, cfg, tmp_path / "server.log") as url:
        assert url.startswith("http://127.0.0.1:")
        port = int(url.split(":")[2].split("/")[0])
        status, body = post(f"{url}/chat/completions", b'{"model": "tiny", "messages": [')
        ids, reply = asyncio.run(ask(url))
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and "not valid JSON" in body["error"]["message"]
    assert ids == ["tiny"] and reply.usage.completion_tokens <= 3 and reply.choices[0].message.content is not None
    assert not port_is_taken(port)  # stopped on exit
    assert (tmp_path / "server.log").exists()
    served = json.loads((tmp_path / "server.config.json").read_text())["models"][0]
    assert served["n_threads"] == served["n_threads_batch"] == cfg.threads  # prompt processing too: not every core


def post(url: str, data: bytes):
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_is_stopped_when_the_block_fails(tiny_gguf_file, tmp_path):
    cfg, gguf = tiny_gguf_file
    with pytest.raises(ZeroDivisionError):
        with llama_server({"tiny": gguf}, cfg, tmp_path / "server.log") as url:
            port = int(url.split(":")[2].split("/")[0])
            1 / 0
    assert not port_is_taken(port)


def test_port_taken_missing_file_and_a_server_that_dies(tiny_gguf_file, tmp_path):
    cfg, gguf = tiny_gguf_file
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ServerError, match=f"Port {busy.getsockname()[1]} on 127.0.0.1 is already taken"):
            with llama_server({"tiny": gguf}, cfg, tmp_path / "s.log", port=busy.getsockname()[1]):
                pass
    with pytest.raises(ServerError, match=r"The model file for 'ft' \(none.gguf\) is not in .*: run notebook 03 .*"
                                          r"make lab FROM="):
        with llama_server({"ft": tmp_path / "none.gguf"}, cfg, tmp_path / "s.log"):
            pass
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(ServerError, match="exited during start"):
        with llama_server({"b": broken}, cfg, tmp_path / "s.log", timeout=60):
            pass


def test_free_port_is_free():
    assert not port_is_taken(free_port())


def test_the_server_applies_the_decision_rule_beside_the_file_unless_the_request_sets_its_own(tiny_gguf_file, tmp_path):
    import json

    from helpers.runs import write_decision

    cfg, gguf = tiny_gguf_file
    ruled = tmp_path / "ruled" / "tiny.gguf"
    ruled.parent.mkdir()
    ruled.symlink_to(gguf)  # the same file, with a decision rule beside it
    offsets = [0.0, 30.0, 0.0]  # a bias no logit outweighs: every answer starts with the second label
    write_decision({"rule": "offsets", "offsets": offsets, "labels": list(cfg.labels), "eval": {}, "sentence": "s"},
                   ruled)
    assert decision_biases({"plain": gguf, "ruled": ruled}, cfg).keys() == {"ruled"}
    messages = [{"role": "user", "content": "a great phone"}]

    def answer(url, **extra):
        status, body = post(f"{url}/chat/completions", json.dumps(
            {"messages": messages, "max_tokens": 1, "temperature": 0, **extra}).encode())
        assert status == 200, body
        return body["choices"][0]["message"]["content"]

    with llama_server({"ruled": ruled, "plain": gguf}, cfg, tmp_path / "server.log") as url:
        first = llama_cpp_first_tokens(gguf, cfg.labels)
        assert answer(url, model="ruled") == answer(url) == cfg.labels[1]  # named, or the default (first) model
        own = answer(url, model="ruled", logit_bias={str(first[2]): 30.0})  # the request's own bias wins
        plain = answer(url, model="plain")
    assert own == cfg.labels[2]
    assert plain == answer_without_server(gguf, cfg, messages)


def llama_cpp_first_tokens(path, labels):
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return [vocab.tokenize(label.encode(), add_bos=False, special=False)[0] for label in labels]


def answer_without_server(path, cfg, messages):
    from helpers.predict import load_gguf

    reply = load_gguf(path, cfg).create_chat_completion(messages=messages, max_tokens=1, temperature=0)
    return reply["choices"][0]["message"]["content"]
