import io
import subprocess
import tarfile

import pytest

from helpers import gguf
from helpers.gguf import GGUFError, extract_converter, llama_cpp_version, prepare_converter


def make_sdist(path, names):
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = f"# {name}\n".encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_takes_only_the_converter_and_its_packages(tmp_path):
    root = "llama_cpp_python-9.9/vendor/llama.cpp/"
    sdist = make_sdist(tmp_path / "s.tar.gz", [root + "convert_hf_to_gguf.py", root + "conversion/llama.py",
                                               root + "gguf-py/gguf/gguf_writer.py", root + "src/llama.cpp",
                                               "llama_cpp_python-9.9/llama_cpp/llama.py"])
    script = extract_converter(sdist, tmp_path / "out")
    found = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert script == tmp_path / "out" / "convert_hf_to_gguf.py"
    assert found == ["conversion/llama.py", "convert_hf_to_gguf.py", "gguf-py/gguf/gguf_writer.py"]


def test_extract_refuses_an_archive_without_the_converter(tmp_path):
    sdist = make_sdist(tmp_path / "s.tar.gz", ["other-1.0/setup.py"])
    with pytest.raises(GGUFError, match="holds no vendor/llama.cpp/convert_hf_to_gguf.py"):
        extract_converter(sdist, tmp_path / "out")


def test_converter_comes_from_the_installed_runtime_release_and_is_cached(cfg, monkeypatch):
    script = prepare_converter(cfg)  # set-up made it; this call only checks the stamp
    assert script.exists() and (script.parent / "gguf-py" / "gguf").is_dir()
    assert (script.parent / "LLAMA_CPP_PYTHON_VERSION").read_text() == llama_cpp_version()

    def no_download(*args, **kwargs):
        raise AssertionError("prepare_converter downloaded again")
    monkeypatch.setattr(subprocess, "run", no_download)
    assert prepare_converter(cfg) == script


def test_missing_bindings_say_how_to_install(monkeypatch):
    def missing(name):
        raise gguf.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(gguf.metadata, "version", missing)
    with pytest.raises(GGUFError, match=r"bindings are not installed\. Run `make setup`"):
        llama_cpp_version()
