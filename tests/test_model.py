from pathlib import Path

import pytest
import torch

from helpers.data import to_chat_records
from helpers.model import (ModelError, embedded_gguf_path, load_model, load_tokenizer, pick_device, render_example,
                           resolve_model)


def test_embedded_gguf_ships_in_its_package():
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert path.read_bytes()[:4] == b"GGUF"


def test_embedded_models_resolve_to_prepared_folders(cfg):
    for name in ("embedded:tiny", "embedded:smollm2"):
        cfg.model = name
        folder = resolve_model(cfg)
        assert folder.startswith(str(cfg.cache_dir)) and (Path(folder) / "config.json").exists()


def test_tiny_model_loads_in_fp32_on_cpu_with_the_real_tokenizer(cfg):
    model, tokenizer = load_model(cfg)
    assert pick_device() == ("cpu", torch.float32)  # this machine and CI have no GPU
    assert model.dtype == torch.float32 and not model.training
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.pad_token == "<|im_end|>"
    with torch.no_grad():
        logits = model(**tokenizer("hello", return_tensors="pt")).logits
    assert logits.shape[-1] == 49152 and torch.isfinite(logits).all()


def test_the_labels_are_single_tokens_for_the_embedded_tokenizer(cfg):
    tokenizer = load_tokenizer(cfg)
    assert all(len(tokenizer.encode(label)) == 1 for label in cfg.labels)


def test_render_example_is_chatml_with_our_system_prompt(cfg):
    import pandas as pd

    record = to_chat_records(pd.DataFrame({"text": ["works"], "label": ["positive"]}), cfg)[0]
    assert render_example(load_tokenizer(cfg), record) == (
        f"<|im_start|>system\n{cfg.system_prompt}<|im_end|>\n<|im_start|>user\nworks<|im_end|>\n"
        "<|im_start|>assistant\npositive<|im_end|>\n")


def test_unknown_embedded_name_and_missing_folder(cfg, tmp_path):
    cfg.model = "embedded:gpt5"
    with pytest.raises(ModelError, match="Unknown embedded model 'embedded:gpt5'"):
        resolve_model(cfg)
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(cfg, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a loadable model folder"):
        load_model(cfg, tmp_path / "empty")


def test_hub_id_offline_says_to_use_the_embedded_model(cfg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="seems to be offline or the id is wrong.*model='embedded:smollm2'"):
        load_model(cfg, "Qwen/Qwen2.5-0.5B-Instruct")


def test_build_once_builds_into_a_partial_folder_and_never_again(tmp_path):
    from helpers.model import build_once

    calls = []

    def build(folder):
        calls.append(folder.name)
        folder.mkdir()
        (folder / "model.safetensors").write_text("weights")
    (tmp_path / "m.partial").mkdir()
    (tmp_path / "m.partial" / "stale").write_text("from an interrupted build")
    out = build_once(tmp_path / "m", build)
    assert out == tmp_path / "m" and calls == ["m.partial"] and not (tmp_path / "m.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]  # nothing stale carried over
    assert build_once(tmp_path / "m", build) == out and calls == ["m.partial"]


def test_an_interrupted_build_leaves_no_finished_looking_folder(tmp_path):
    from helpers.model import build_once

    def broken(folder):
        folder.mkdir()
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        build_once(tmp_path / "m", broken)
    assert not (tmp_path / "m").exists()
