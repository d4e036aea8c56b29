"""Export to llama.cpp: its own converter (from the same release as the runtime) and its quantizer. Running a GGUF
file is `helpers.predict`'s job, serving it `helpers.serve`'s.

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
from helpers.model import (build_once, embedded_gguf_path, fingerprint, is_encoder_folder, load_adapter, load_model,
                           resolve_model, save_with_course_template)
from helpers.runs import TRAINING, RunLayout, layout, missing_input, read_decision, write_decision

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


def converter_script(cfg: CourseConfig) -> Path:
    """The path of llama.cpp's `convert_hf_to_gguf.py` that `make setup` unpacked (`prepare_converter`), checked."""
    script = converter_dir(cfg) / "convert_hf_to_gguf.py"
    if not script.exists():
        raise GGUFError(f"llama.cpp's converter is missing ({script}). Run `make setup` to unpack it.")
    return script


QUANT_TYPES = {"Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M"}


def _check_disk(folder: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise GGUFError(f"Not enough disk space in {folder}: {free / 1e9:.2f} GB free, about {needed_bytes / 1e9:.2f} GB "
                        f"needed. Free some space (old runs/ folders are safe to delete) and retry.")


def convert_to_gguf(cfg: CourseConfig, model_dir: Path, out_path: Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's `convert_hf_to_gguf.py` on a Hugging Face folder (merged, full precision).

    `outtype` is one the converter accepts: f32, f16, bf16, q8_0 (it rejects q4_k_m: that is `quantize_gguf`'s job)."""
    script = converter_script(cfg)
    model_dir, out_path = Path(model_dir), Path(out_path)
    if not (model_dir / "config.json").exists():
        raise GGUFError(f"{model_dir} is not a Hugging Face model folder (no config.json). Run notebook 02 first.")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    weights = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    _check_disk(out_path.parent, weights if outtype == "f32" else weights // 2 + 50_000_000)
    cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(out_path), "--outtype", outtype]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        log = result.stderr.strip()
        if "pre-tokenizer was not recognized" in log:
            raise GGUFError(f"llama.cpp's converter does not recognise the tokenizer of {model_dir} (its BPE "
                            f"pre-tokenizer fingerprint is unknown to this llama.cpp release). Use a model whose "
                            f"tokenizer llama.cpp supports, or a newer llama-cpp-python.")
        if "argument --outtype: invalid choice" in log:
            raise GGUFError(f"The converter only writes f32, f16, bf16 or q8_0, not {outtype!r}: "
                            f"{log.splitlines()[-1]}. Q4_K_M is a second step: quantize_gguf(f16_file, out, 'Q4_K_M').")
        raise GGUFError(f"convert_hf_to_gguf.py failed (exit {result.returncode}):\n{log[-1500:]}")
    return out_path


def quantize_gguf(in_path: Path, out_path: Path, quant: str = "Q4_K_M", threads: int = 0) -> Path:
    """Quantize a GGUF file with llama.cpp's own quantizer (through its Python binding), e.g. f16 -> Q4_K_M, on
    `threads` threads (0: llama.cpp's default, every core)."""
    import llama_cpp

    if quant not in QUANT_TYPES:
        raise GGUFError(f"Unknown quantization {quant!r}; choose one of: {', '.join(QUANT_TYPES)}.")
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.exists():
        raise GGUFError(f"{in_path}: no such GGUF file. Convert the model first (convert_to_gguf).")
    _check_disk(out_path.parent, in_path.stat().st_size // 2)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant])
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(in_path).encode(), str(out_path).encode(), params)
    if status != 0:
        raise GGUFError(f"llama.cpp's quantizer failed on {in_path} (status {status}).")
    return out_path


def read_gguf_metadata(path: Path) -> dict:
    """Architecture, vocabulary size, chat template and tensor types of a GGUF file (read with gguf-py)."""
    from collections import Counter

    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name):
        f = reader.fields.get(name)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {
        "architecture": arch,
        "name": field("general.name"),
        "file_type": field("general.file_type"),
        "context_length": field(f"{arch}.context_length"),
        "tokenizer_model": field("tokenizer.ggml.model"),
        "tokenizer_pre": field("tokenizer.ggml.pre"),
        "vocab_size": len(tokens.data) if tokens is not None else None,
        "chat_template": field("tokenizer.chat_template"),
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "size_mb": round(Path(path).stat().st_size / 1e6, 1),
    }


def merged_model_dir(cfg: CourseConfig) -> Path:
    """The merged fine-tuned model of notebook 02 in this run folder; merged from the adapter if only that exists."""
    run = layout(cfg)
    if (run.merged / "config.json").exists():
        return run.merged
    if not (run.adapter / "adapter_config.json").exists():
        raise GGUFError(missing_input(cfg, "Notebook 02's fine-tuned model", TRAINING))
    return merge_adapter(cfg, run.adapter, run.merged)


def merge_adapter(cfg: CourseConfig, adapter_dir: Path, out_dir: Path) -> Path:
    """The adapter merged into its full-precision base (fp32 on a CPU: never a 4-bit base), saved with a tokenizer
    whose chat template defaults to the course's system prompt."""
    model, tokenizer = load_adapter(cfg, adapter_dir)
    model.merge_and_unload().save_pretrained(out_dir)
    save_with_course_template(tokenizer, out_dir, cfg.system_prompt)
    return Path(out_dir)


def servable_gguf(cfg: CourseConfig, path: Path) -> Path:
    """A GGUF file that llama.cpp's server can run for what `classify` takes: a .gguf file as it is; a Hugging Face
    folder or a LoRA adapter exported once, like notebook 03 (f16 by the converter, then Q4_K_M by the quantizer),
    into the cache, keyed by the folder's content. An encoder or SetFit folder is refused: it is no chat model."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return path
    adapter, hf = (path / "adapter_config.json").is_file(), (path / "config.json").is_file()
    if path.is_dir() and is_encoder_folder(path):
        raise GGUFError(f"{path} is an encoder classifier, not a chat model: llama.cpp cannot serve it. Use it with "
                        f"`classify` or `evaluate`, or serve a .gguf file, a Hugging Face LLM folder or a LoRA adapter.")
    if not (adapter or hf):
        raise GGUFError(f"{path}: not a model. Serve a .gguf file, a Hugging Face model folder (with config.json) or "
                        f"a LoRA adapter folder (with adapter_config.json).")
    out = cfg.cache_dir / "served" / f"{path.name}-{fingerprint(path)[:12]}"

    def export(tmp: Path) -> None:
        source = tmp / "hf"
        if adapter:
            merge_adapter(cfg, path, source)
        else:
            model, tokenizer = load_model(cfg, path)
            model.save_pretrained(source)
            save_with_course_template(tokenizer, source, cfg.system_prompt)
        q4_k_m_file(cfg, source, tmp / "model-Q4_K_M.gguf")
        shutil.rmtree(source)
    return build_once(out, export, done="model-Q4_K_M.gguf") / "model-Q4_K_M.gguf"


def q4_k_m_file(cfg: CourseConfig, model_dir: Path, out: Path) -> Path:
    """A Hugging Face folder as one GGUF Q4_K_M file `out`: the converter's f16 file beside it, quantized, then deleted."""
    f16 = convert_to_gguf(cfg, model_dir, out.with_name(out.stem + "-f16.gguf"))
    quantize_gguf(f16, out, threads=cfg.threads)
    f16.unlink()
    return out


# {name in the tables: format of `RunLayout.gguf`}
GGUF_FORMATS = {"GGUF f16": "f16", "GGUF Q8_0": "q8_0", "GGUF Q4_K_M": "Q4_K_M"}


def build_gguf_files(cfg: CourseConfig, model_dir: Path, run: RunLayout) -> dict:
    """What notebook 03's take-home cells do, for the command twin and the experiments: f16 and q8_0 by the converter,
    then Q4_K_M from the f16 file by the quantizer, where the run layout keeps them; then `gguf_files`."""
    files = {name: run.gguf(fmt) for name, fmt in GGUF_FORMATS.items()}
    convert_to_gguf(cfg, model_dir, files["GGUF f16"], "f16")
    convert_to_gguf(cfg, model_dir, files["GGUF Q8_0"], "q8_0")
    quantize_gguf(files["GGUF f16"], files["GGUF Q4_K_M"], "Q4_K_M", cfg.threads)
    return gguf_files(model_dir, run)


def gguf_files(model_dir: Path, run: RunLayout) -> dict:
    """The chapter's GGUF files where the run layout keeps them, {format: path}, each checked to exist; the merged
    model's decision rule (`runs.read_decision`) goes beside them, so that llama.cpp decides as the merged model."""
    files = {name: run.gguf(fmt) for name, fmt in GGUF_FORMATS.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise GGUFError(f"No GGUF file at {', '.join(missing)}: run the converter and the quantizer cells of notebook "
                        f"03 (or `python -m helpers export`) first.")
    if (rule := read_decision(model_dir)) is not None:  # the decision rule goes with the files, for llama.cpp too
        write_decision(rule, files["GGUF Q4_K_M"])
    return files


def base_model_gguf(cfg: CourseConfig) -> Path:
    """The *base* model as a GGUF file, for the like-for-like few-shot baseline: the embedded SmolLM2 file as
    shipped (Q4_1), or any other base model converted to f16 once into the cache."""
    if cfg.model == "embedded:smollm2":
        return embedded_gguf_path()
    out = cfg.cache_dir / "gguf" / (cfg.model.replace("/", "--").replace(":", "-") + "-f16.gguf")
    if not out.exists():
        convert_to_gguf(cfg, Path(resolve_model(cfg)), out)
    return out
