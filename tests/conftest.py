import pytest

from helpers.config import make_config


@pytest.fixture
def cfg(tmp_path):
    """The smoke profile (tiny model, tiny sizes) with the shared model cache and a private run folder."""
    return make_config("smoke", run_dir=tmp_path / "run")


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a file in a temporary folder."""
    def _write(name, content):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path
    return _write
