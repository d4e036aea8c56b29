import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.data import to_chat_records
from helpers.model import (ModelError, embedded_gguf_path, free_memory, load_model, load_tokenizer, pick_device,
                           render_example, resolve_model)


def test_embedded_gguf_ships_in_its_package():
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert path.read_bytes()[:4] == b"GGUF"


def test_embedded_models_resolve_to_prepared_folders(cfg):
    for name in ("embedded:tiny", "embedded:smollm2"):
        cfg.model = name
        folder = resolve_model(cfg)
        assert folder.startswith(str(cfg.cache_dir)) and (Path(folder) / "config.json").exists()


def test_tiny_model_loads_on_the_best_device_with_the_real_tokenizer(cfg):
    model, tokenizer = load_model(cfg)
    expected = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    assert pick_device() == expected  # fp32 on a CPU (this machine and CI), bf16 on a CUDA GPU
    assert (model.device.type, model.dtype) == expected and not model.training
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.pad_token == "<|im_end|>"
    with torch.no_grad():
        logits = model(**tokenizer("hello", return_tensors="pt").to(model.device)).logits
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


def test_the_course_template_adds_the_system_prompt_only_when_a_request_has_none(cfg, tmp_path):
    from helpers.model import course_chat_template, save_with_course_template

    tokenizer = load_tokenizer(cfg)
    original = tokenizer.chat_template
    user = [{"role": "user", "content": "Great battery."}]
    course = [{"role": "system", "content": cfg.system_prompt}, *user]
    other = [{"role": "system", "content": "Be brief."}, *user]
    render = dict(tokenize=False, add_generation_prompt=True)
    templated = course_chat_template(tokenizer, cfg.system_prompt)
    assert tokenizer.apply_chat_template(user, chat_template=templated, **render) == \
        tokenizer.apply_chat_template(course, **render)
    assert tokenizer.apply_chat_template(other, chat_template=templated, **render) == \
        tokenizer.apply_chat_template(other, **render)
    assert "You are a helpful AI assistant" in tokenizer.apply_chat_template(user, **render)  # SmolLM2's own default
    save_with_course_template(tokenizer, tmp_path, 'Say "yes" or no.')
    assert tokenizer.chat_template == original  # the object in memory is unchanged
    saved = load_tokenizer(cfg, tmp_path)
    assert '<|im_start|>system\nSay "yes" or no.<|im_end|>' in saved.apply_chat_template(user, **render)


@pytest.mark.slow
def test_a_label_set_that_cannot_be_scored_is_refused_with_the_fix(cfg):
    import dataclasses

    from helpers.model import LabelError

    for labels, message in ((("very positive", "very negative", "neutral"), r"labels 'very positive' and 'very "
                             r"negative' both start with the token 'very'.*Rename them"),
                            (("Positive", "negative"), r"have capitals.*--labels positive negative"),
                            (("positive", "positive"), "two or more distinct"), (("positive",), "two or more")):
        with pytest.raises(LabelError, match=message):
            load_tokenizer(dataclasses.replace(cfg, labels=labels))
    for labels in (("negative", "positive"), ("1", "2", "3", "4", "5"), ("terrible", "bad", "okay", "good", "excellent")):
        load_tokenizer(dataclasses.replace(cfg, labels=labels))  # two classes, star counts, five words: all fine


# 400 MB in 64 KB blocks, each followed by a small block that stays: the freed blocks are holes that neither allocator
# hands back by itself. Their only reference is a cycle, so only a garbage collection frees them.
HOLES = """
import gc, psutil
from helpers.model import free_memory
gc.disable()  # no automatic collection: only free_memory's
rss = lambda: psutil.Process().memory_info().rss
blocks, keep = [], []
for _ in range(6400):
    blocks.append(bytearray(b"x" * 65536))
    keep.append(bytearray(b"y" * 512))
blocks.append(blocks)
del blocks
before = rss()
collected = free_memory()
print(before - rss(), collected)
"""


# glibc always; tcmalloc where `make setup` could install it (the Makefile preloads it then)
ALLOCATORS = {"glibc": "", **{"tcmalloc": str(path)
                              for path in Path("/usr/lib").glob("*-linux-gnu/libtcmalloc_minimal.so.4")}}


@pytest.mark.parametrize("allocator", sorted(ALLOCATORS))
def test_free_memory_collects_cycles_and_hands_the_pages_back(allocator):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "LD_PRELOAD": ALLOCATORS[allocator]}
    out = subprocess.run([sys.executable, "-c", HOLES], env=env, capture_output=True, text=True, check=True).stdout
    returned, collected = map(int, out.split())
    assert collected >= 1 and returned > 300 * 2 ** 20


def test_free_memory_frees_objects_kept_only_by_a_cycle():
    import weakref

    class Node:
        pass

    node = Node()
    node.self = node
    alive = weakref.ref(node)
    del node
    assert isinstance(alive(), Node)  # a cycle: no reference count reaches zero
    assert free_memory() >= 1
    assert alive() is None
