"""llama.cpp's OpenAI-compatible server (the Python bindings' `llama_cpp.server`) for GGUF files, on 127.0.0.1 only.

`llama_server(...)` is a context manager: it starts the server on a free port, waits until `/v1/models` answers,
keeps the server's log in the run folder, and stops it on exit — also when the code inside fails. The server process
is `python -m helpers.serve CONFIG`: llama.cpp's own FastAPI app with one guard in front, which answers a request body
that is not JSON with HTTP 400 (the app alone answers 500), and gives a completion request for a model with a decision
rule (`runs.read_decision`, beside its GGUF file) that rule as the API's `logit_bias`, unless the request sets its own.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from helpers.config import CourseConfig
from helpers.predict import label_bias, stored_offsets
from helpers.runs import EXPORT, missing_input

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """The server could not start or answer; the message says why and what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((HOST, port)) == 0


def _log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def decision_biases(models: dict, cfg: CourseConfig) -> dict:
    """{alias: {token id: offset}} for each served GGUF file with a decision rule beside it (per-class offsets on the
    labels' first tokens, `predict.label_bias`, read with the file's own vocabulary); the others are left out."""
    import llama_cpp

    biases = {}
    for alias, path in models.items():
        offsets = stored_offsets(cfg, Path(path))
        if offsets:
            vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            first = [vocab.tokenize(label.encode(), add_bos=False, special=False)[0] for label in cfg.labels]
            biases[alias] = {str(t): b for t, b in label_bias(first, offsets).items()}
    return biases


@contextmanager
def llama_server(models: dict, cfg: CourseConfig, log_path: Path, port: int | None = None, timeout: float = 120,
                 biases: dict | None = None):
    """Serve {alias: gguf_path} on http://127.0.0.1:<port>/v1 and yield that base URL. Each model's decision rule
    (`biases`, default `decision_biases`) is applied to the completion requests that name it."""
    for alias, path in models.items():
        if not Path(path).exists():
            raise ServerError(missing_input(cfg, f"The model file for {alias!r} ({Path(path).name})", EXPORT))
    biases = decision_biases(models, cfg) if biases is None else biases
    if port is None:
        port = free_port()
    elif port_is_taken(port):
        raise ServerError(f"Port {port} on {HOST} is already taken by another program. Stop it, or leave the port "
                          f"unset to use a free one.")
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    config = {"host": HOST, "port": port, "models": [
        # the settings notebook 04's `python -m llama_cpp.server` command passes (n_threads_batch: every core else)
        {"model": str(path), "model_alias": alias, "n_ctx": cfg.context_length, "n_threads": cfg.threads,
         "n_threads_batch": cfg.threads, "verbose": False}
        for alias, path in models.items()], "course_logit_bias": biases}
    config_path = log_path.with_suffix(".config.json")
    config_path.write_text(json.dumps(config, indent=2))
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "helpers.serve", str(config_path)],
                                   stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://{HOST}:{port}/v1"
    try:
        _wait_until_ready(process, base_url, log_path, timeout)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process, base_url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"The llama.cpp server exited during start (code {process.returncode}). Its log "
                              f"({log_path}) ends with:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise ServerError(f"The llama.cpp server did not answer within {timeout:.0f} s. Its log ({log_path}) ends "
                      f"with:\n{_log_tail(log_path)}")


COMPLETIONS = ("/v1/chat/completions", "/v1/completions")


def guard(app, biases: dict | None = None, default: str | None = None):
    """ASGI middleware: a POST whose body is not JSON gets an OpenAI-style 400 error; a completion request for a model
    in `biases` ({alias: {token id: bias}}; a request naming no model asks for `default`) that sets no `logit_bias`
    gets that one; every other request, with its body replayed untouched, goes to `app`."""
    biases = biases or {}

    async def guarded(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body or b"null")
        except ValueError as err:
            error = {"error": {"message": f"The request body is not valid JSON ({err}).", "type": "invalid_request_error",
                               "param": None, "code": None}}
            payload = json.dumps(error).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            return await send({"type": "http.response.body", "body": payload})
        if scope["path"] in COMPLETIONS and isinstance(request, dict) and request.get("logit_bias") is None:
            bias = biases.get(request.get("model") or default)
            if bias:
                body = json.dumps({**request, "logit_bias": bias}).encode()
                scope = {**scope, "headers": [(k, str(len(body)).encode() if k == b"content-length" else v)
                                              for k, v in scope["headers"]]}
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await app(scope, replay, send)
    return guarded


def main(config_file: str) -> None:
    """Run llama.cpp's server app from its config file, behind `guard` (with the config's decision rules), on the
    config's host."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ConfigFileSettings, ServerSettings

    config = json.loads(Path(config_file).read_text())
    biases = config.pop("course_logit_bias", {})  # ours, not llama.cpp's: its settings refuse unknown keys
    settings = ConfigFileSettings.model_validate(config)
    app = create_app(server_settings=ServerSettings.model_validate(settings), model_settings=settings.models)
    uvicorn.run(guard(app, biases, settings.models[0].model_alias), host=HOST, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1])
