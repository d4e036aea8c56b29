import io
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from helpers import gguf
from helpers.gguf import GGUFError, extract_converter, llama_cpp_version, prepare_converter

pytestmark = pytest.mark.slow  # notebooks, servers, llama.cpp or course runs: left out of make test-fast


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


def test_converted_file_reads_back_with_architecture_vocab_and_template(tiny_gguf):
    from helpers.gguf import read_gguf_metadata

    cfg, _, f16, _ = tiny_gguf
    meta = read_gguf_metadata(f16)
    assert meta["architecture"] == "llama" and meta["vocab_size"] == 49152 and meta["tokenizer_pre"] == "smollm"
    assert "<|im_start|>" in meta["chat_template"] and "F16" in meta["tensor_types"]


def test_converter_refuses_q4_k_m_and_missing_inputs(tiny_gguf, tmp_path):
    from helpers.gguf import convert_to_gguf, quantize_gguf

    cfg, source, _, _ = tiny_gguf
    with pytest.raises(GGUFError, match=r"only writes f32, f16, bf16 or q8_0, not 'q4_k_m'.*invalid choice.*quantize_gguf"):
        convert_to_gguf(cfg, source, tmp_path / "x.gguf", outtype="q4_k_m")
    with pytest.raises(GGUFError, match="not a Hugging Face model folder"):
        convert_to_gguf(cfg, tmp_path, tmp_path / "x.gguf")
    with pytest.raises(GGUFError, match="no such GGUF file"):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "q.gguf")
    with pytest.raises(GGUFError, match="Unknown quantization 'Q3_X'"):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "q.gguf", "Q3_X")


def test_unknown_tokenizer_is_named(tiny_gguf, tmp_path):
    import json
    import shutil

    from helpers.gguf import convert_to_gguf

    cfg, source, _, _ = tiny_gguf
    odd = tmp_path / "odd"
    shutil.copytree(source, odd)
    tok = json.loads((odd / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Whitespace"}  # a pre-tokenizer llama.cpp has no fingerprint for
    (odd / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(GGUFError, match="does not recognise the tokenizer"):
        convert_to_gguf(cfg, odd, tmp_path / "odd.gguf")


def test_merged_model_comes_from_notebook_02_or_is_merged_from_its_adapter(cfg):
    import shutil

    from helpers.data import prepare_splits, to_chat_records
    from helpers.gguf import merged_model_dir
    from helpers.model import load_model
    from helpers.training import make_trainer, save_adapter_and_merged, train

    with pytest.raises(GGUFError, match=r"Notebook 02's fine-tuned model is not in .*: run notebook 02 "
                                        r"\(02_logged_training\) first with the same run_dir, or start from a finished "
                                        r"run: make lab FROM=runs/<timestamp>-smoke"):
        merged_model_dir(cfg)
    cfg.max_steps = 1
    records = to_chat_records(prepare_splits(cfg).train, cfg)
    model, tokenizer = load_model(cfg)
    trainer = make_trainer(cfg, model, tokenizer, records, disable_tqdm=True)
    train(trainer, len(records))
    saved = save_adapter_and_merged(trainer, cfg)
    assert merged_model_dir(cfg) == saved["merged"]
    reference = (saved["merged"] / "model.safetensors").read_bytes()
    shutil.rmtree(saved["merged"])
    assert merged_model_dir(cfg) == saved["merged"]  # merged again from the adapter
    from safetensors.torch import load
    again, first = load((saved["merged"] / "model.safetensors").read_bytes()), load(reference)
    assert again.keys() == first.keys() and all((again[k] - first[k]).abs().max() < 1e-5 for k in first)


def test_not_enough_disk_is_named_with_what_to_delete(tiny_gguf, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from helpers.gguf import convert_to_gguf

    cfg, source, _, _ = tiny_gguf
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    with pytest.raises(GGUFError, match="Not enough disk space.*old runs/ folders are safe to delete"):
        convert_to_gguf(cfg, source, tmp_path / "x.gguf")


def test_q4_k_m_is_smaller_and_really_quantized(tiny_gguf):
    from helpers.gguf import read_gguf_metadata

    cfg, _, f16, q4 = tiny_gguf
    assert q4.stat().st_size < f16.stat().st_size
    assert read_gguf_metadata(q4)["tensor_types"].keys() - {"F32", "F16"}


def test_serving_exports_a_folder_once_and_refuses_what_is_no_chat_model(cfg, tmp_path):
    import time

    from helpers.gguf import read_gguf_metadata, servable_gguf
    from helpers.model import resolve_model

    gguf = servable_gguf(cfg, Path(resolve_model(cfg)))  # kept in the course's cache, keyed by the folder's content
    assert gguf.name == "model-Q4_K_M.gguf" and gguf.is_relative_to(cfg.cache_dir / "served")
    assert cfg.system_prompt in read_gguf_metadata(gguf)["chat_template"]  # the default system turn
    made = gguf.stat().st_mtime
    time.sleep(0.01)
    assert servable_gguf(cfg, Path(resolve_model(cfg))) == gguf and gguf.stat().st_mtime == made  # cached
    assert servable_gguf(cfg, gguf) == gguf  # a GGUF file is served as it is
    (tmp_path / "setfit").mkdir()
    (tmp_path / "setfit" / "model_head.pkl").write_bytes(b"")
    with pytest.raises(GGUFError, match=r"setfit is an encoder classifier, not a chat model"):
        servable_gguf(cfg, tmp_path / "setfit")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(GGUFError, match=r"nothing: not a model\. Serve a \.gguf file"):
        servable_gguf(cfg, tmp_path / "nothing")


def test_the_chapter_s_files_are_where_the_layout_keeps_them_with_the_merged_model_s_decision_rule(tmp_path):
    from helpers.gguf import gguf_files
    from helpers.runs import RunLayout, read_decision, write_decision

    run, merged = RunLayout(tmp_path / "run"), tmp_path / "merged"
    with pytest.raises(GGUFError, match=r"No GGUF file at .*model-f16\.gguf.*run the converter and the quantizer "
                                        r"cells of notebook 03"):
        gguf_files(merged, run)
    for fmt in ("f16", "q8_0", "Q4_K_M"):
        run.gguf(fmt).parent.mkdir(parents=True, exist_ok=True)
        run.gguf(fmt).write_bytes(b"GGUF")
    files = gguf_files(merged, run)
    assert files == {"GGUF f16": run.gguf("f16"), "GGUF Q8_0": run.gguf("q8_0"), "GGUF Q4_K_M": run.gguf("Q4_K_M")}
    assert read_decision(files["GGUF Q4_K_M"]) is None  # the merged model has none: the most probable label
    rule = {"rule": "offsets", "offsets": [0.5, 0.0, -0.5], "labels": ["negative", "neutral", "positive"],
            "eval": None, "sentence": "tuned"}
    write_decision(rule, merged)
    gguf_files(merged, run)
    assert read_decision(files["GGUF Q4_K_M"]) == rule


def test_the_take_home_cells_convert_quantize_and_score_as_the_helpers_do(tiny_gguf, tmp_path):
    """Notebook 03's take-home cells on their own, on the tiny model: the converter command and the quantizer call
    write the very bytes of the helpers' `convert_to_gguf` and `quantize_gguf` (the `tiny_gguf` files), and the
    `Llama(...)` label scoring prints the probabilities of the course's GGUF predictor for the same review."""
    from helpers.gguf import converter_script
    from helpers.predict import load_predictor
    from take_home import run_take_home

    cfg, source, f16, q4 = tiny_gguf
    out = tmp_path / "gguf"
    out.mkdir()
    review = "The battery died after two days and the seller never answered my emails."
    inputs = {"merged_dir": str(source), "converter": str(converter_script(cfg)),
              "f16_path": str(out / "model-f16.gguf"), "q8_path": str(out / "model-q8_0.gguf"),
              "q4_path": str(out / "model-Q4_K_M.gguf"), "threads": cfg.threads, "review": review,
              "labels": list(cfg.labels), "system_prompt": cfg.system_prompt, "context_length": cfg.context_length}
    done = run_take_home("03_gguf_quantization", inputs, tmp_path / "work")
    written = {name: Path(inputs[name]) for name in ("f16_path", "q8_path", "q4_path")}
    assert all(path.stat().st_size > 0 for path in written.values())
    assert written["q4_path"].stat().st_size < written["q8_path"].stat().st_size < written["f16_path"].stat().st_size
    assert written["f16_path"].read_bytes() == f16.read_bytes()  # the helpers' converter run, byte for byte
    assert written["q4_path"].read_bytes() == q4.read_bytes()  # and their quantizer
    printed = dict(re.findall(r"^P\((\w+)\) = ([0-9.]+)$", done.stdout, re.M))
    assert list(printed) == list(cfg.labels), done.stdout[-2000:]
    probabilities = np.array([float(printed[label]) for label in cfg.labels])
    assert probabilities.sum() == pytest.approx(1, abs=1e-5)
    assert f"answer: {cfg.labels[int(probabilities.argmax())]}" in done.stdout
    helper = load_predictor(cfg, written["q4_path"]).probabilities([review])[0]
    assert probabilities == pytest.approx(helper, abs=1e-4)


# llama.cpp's name for each instruction set (llama_print_system_info) -> the flag /proc/cpuinfo lists for it
CPU_FLAGS = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2",
             "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
             "AVX_VNNI": "avx_vnni", "AMX_INT8": "amx_int8", "AMX_BF16": "amx_bf16"}
WIDER = ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI")  # what make setup adds where the CPU has it


def test_llama_cpp_is_built_with_the_widest_instructions_this_cpu_has_none_it_lacks_and_no_amx():
    from helpers.formats import engine_features

    built = engine_features()["llama.cpp"].split()
    assert not [name for name in built if name.startswith("AMX")]  # AMX tiles crashed llama.cpp on a Xeon VM
    if Path("/proc/cpuinfo").exists() and "avx2" in (cpu := set(re.findall(r"\S+", next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))))):
        assert [name for name in built if name in CPU_FLAGS and CPU_FLAGS[name] not in cpu] == []
        assert {"AVX2", "FMA", "F16C"} <= set(built)
        assert [name for name in WIDER if CPU_FLAGS[name] in cpu and name not in built] == []
    else:  # not an x86-64 with AVX2: llama.cpp's own defaults for this CPU
        assert "AVX512" not in built
