"""llama.cpp's own tools: its converter (from the same release as the runtime) and, later, its quantizer.

The runtime is the `llama-cpp-python` package, which vendors one llama.cpp release whole. Its sdist carries that
release's `convert_hf_to_gguf.py` with the `conversion/` and `gguf-py/` folders it needs; we unpack exactly those
into the cache, so converter and runtime always come from one llama.cpp. (PyPI's `gguf` is older than the
converter: run the converter with its own `gguf-py`.)
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from helpers.config import CourseConfig

CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")


class GGUFError(RuntimeError):
    """A llama.cpp step that cannot run, with the one command that fixes it."""


def llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise GGUFError("llama.cpp's Python bindings are not installed. Run `make setup` "
                        "(or: pip install 'llama-cpp-python[server]' as pinned in requirements.txt).") from None


def converter_dir(cfg: CourseConfig) -> Path:
    return cfg.cache_dir / "llama.cpp"


def extract_converter(sdist: Path, out: Path) -> Path:
    """Unpack llama.cpp's converter, its `conversion/` package and `gguf-py/` from a llama-cpp-python sdist."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            parts = member.name.split("/vendor/llama.cpp/", 1)
            if len(parts) == 2 and parts[1].startswith(CONVERTER_PARTS) and (member.isfile() or member.isdir()):
                member.name = parts[1]
                members.append(member)
        if not any(m.name == "convert_hf_to_gguf.py" for m in members):
            raise GGUFError(f"{sdist} holds no vendor/llama.cpp/convert_hf_to_gguf.py; is it a llama-cpp-python sdist?")
        tar.extractall(tmp, members=members, filter="data")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out / "convert_hf_to_gguf.py"


def prepare_converter(cfg: CourseConfig) -> Path:
    """llama.cpp's `convert_hf_to_gguf.py` from the installed runtime's own release, unpacked once into the cache."""
    version = llama_cpp_version()
    out = converter_dir(cfg)
    stamp = out / "LLAMA_CPP_PYTHON_VERSION"
    if stamp.exists() and stamp.read_text().strip() == version:
        return out / "convert_hf_to_gguf.py"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={version}", "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if result.returncode != 0 or not sdists:
            raise GGUFError(f"Could not fetch the llama-cpp-python {version} sources for its converter:\n"
                            f"{result.stderr.strip()[-500:]}\nCheck that PyPI is reachable, then run `make setup`.")
        script = extract_converter(sdists[0], out)
    stamp.write_text(version)
    return script
