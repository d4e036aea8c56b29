from pathlib import Path

import pytest

from helpers.config import make_config


@pytest.fixture(autouse=True)
def no_paid_api(monkeypatch):
    """No test reaches the OpenAI API with the developer's key (notebook 04 and `compare` would use it): a test that
    needs a key sets a fake one itself. Notebook kernels and commands started by a test inherit this environment."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def cfg(tmp_path):
    """The smoke profile (tiny model, tiny sizes) with the shared model cache, a private run folder and a private
    response cache (never the developer's own answers)."""
    return make_config("smoke", run_dir=tmp_path / "run", response_cache=str(tmp_path / "responses.jsonl"))


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a file in a temporary folder."""
    def _write(name, content):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path
    return _write


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """The tiny model converted to f16 and quantized to Q4_K_M by llama.cpp's own tools."""
    from helpers.config import make_config
    from helpers.gguf import convert_to_gguf, quantize_gguf
    from helpers.model import resolve_model

    folder = tmp_path_factory.mktemp("gguf")
    cfg = make_config("smoke", run_dir=folder)
    source = Path(resolve_model(cfg))
    f16 = convert_to_gguf(cfg, source, folder / "tiny-f16.gguf")
    return cfg, source, f16, quantize_gguf(f16, folder / "tiny-q4_k_m.gguf")
