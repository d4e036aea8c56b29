"""TRL's SFTTrainer + LoRA, configured from the course config for the machine it runs on.

bf16 on a CUDA GPU and on a CPU with AMX tiles, fp32 on other CPUs (`training_precision`); LoRA on all linear projections; a log row
every `logging_steps`, appended to `train_log.jsonl` as it happens so a crashed run keeps its history. Before any
training, the masking guard checks which tokens carry loss.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from helpers.config import CourseConfig
from helpers.data import fit_review
from helpers.masking import check_assistant_only_loss, check_trained_tokens
from helpers.model import load_model, pick_device, save_with_course_template, training_precision, without_autocast
from helpers.runs import disk_mb, layout


def build_lora_config(cfg: CourseConfig, model):
    """LoRA on all seven linear projections of every transformer block, or (`cfg.lora_layers` = K > 0) of the top K
    blocks only. Backward then stops at the lowest trainable block: the frozen blocks below it run forward only, which
    is why a top-K step is faster (only while activation checkpointing is off: TRL then forces input gradients on).
    Notebook 02 writes this `LoraConfig` out in a cell; a test proves the two equal."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, task_type="CAUSAL_LM",
                      target_modules=block_projections(model),
                      layers_to_transform=trained_layers(model.config.num_hidden_layers, cfg.lora_layers),
                      layers_pattern="layers")


def trained_layers(count: int, top: int) -> list[int]:
    """The indices of the top `top` of `count` transformer blocks, or of all of them (`top` 0, or not below `count`)."""
    return list(range(count - top, count)) if 0 < top < count else list(range(count))


def block_projections(model) -> list[str]:
    """The names of the linear layers inside one transformer block (q/k/v/o and the MLP's gate/up/down here)."""
    import torch

    block = model.get_decoder().layers[0]
    return sorted({name.rsplit(".", 1)[-1] for name, module in block.named_modules()
                   if isinstance(module, torch.nn.Linear)})


def record_tokens(records, tokenizer) -> list[int]:
    """Tokens of each record as the model will read it: chat records through the tokenizer's chat template, plain
    `text` records as they are."""
    def tokens(r):
        if "text" in r:
            return tokenizer(r["text"], add_special_tokens=False)["input_ids"]
        turns = r["messages"] if "messages" in r else r["prompt"] + r["completion"]
        return tokenizer.apply_chat_template(turns, tokenize=True, return_dict=True)["input_ids"]
    return [len(tokens(r)) for r in records]


def micro_batch_size(cfg: CourseConfig, lengths) -> int:
    """Rows per forward/backward pass: the largest divisor of `cfg.batch_size` whose rows at the longest of `lengths`
    (tokens per training row) hold at most `cfg.batch_tokens` tokens, and at least 1. Gradient accumulation makes up
    the rest, so every optimizer step still sees `batch_size` rows and the same loss."""
    longest = max(lengths, default=0)
    fits = [d for d in range(1, cfg.batch_size + 1) if cfg.batch_size % d == 0 and d * longest <= cfg.batch_tokens]
    return max(fits, default=1)


def build_sft_config(cfg: CourseConfig, output_dir: Path, completion_only_loss: bool = True,
                     with_eval: bool = False, micro_batch: int | None = None, **extra):
    """SFTConfig from the course config: what notebook 02 writes out argument by argument (a test proves the two
    equal). `micro_batch` (`micro_batch_size`; default `batch_size`) rows run per pass, accumulated to `batch_size`
    rows per step. `extra` passes SFTConfig fields that are not course knobs (e.g. disable_tqdm); a run with other
    course settings gets its own config (`dataclasses.replace(cfg, max_steps=...)`)."""
    from trl import SFTConfig

    device, _ = pick_device()
    micro_batch = micro_batch or cfg.batch_size
    settings = dict(
        output_dir=str(output_dir), max_steps=cfg.max_steps, per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=cfg.batch_size // micro_batch, per_device_eval_batch_size=micro_batch,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, cfg.max_steps // 10),
        logging_steps=cfg.logging_steps, logging_first_step=True,
        eval_strategy="steps" if with_eval else "no", eval_steps=cfg.eval_steps,
        save_strategy="no", report_to=cfg.report_to, seed=cfg.seed, data_seed=cfg.seed,
        bf16=training_precision(cfg) == "bf16", use_cpu=device == "cpu",
        # padding-free batches enforce no max_length in TRL: `fit_records` has already fitted every row to it
        max_length=None if cfg.padding_free else cfg.max_length, padding_free=cfg.padding_free,
        completion_only_loss=completion_only_loss,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        activation_checkpointing=False,
    )
    if device == "cpu" and world_size() > 1:  # under torchrun on CPUs DDP needs gloo (NCCL is GPU-only)
        settings["ddp_backend"] = "gloo"
    settings.update(extra)
    return SFTConfig(**settings)


def weights_for_training(model, precision: str) -> list:
    """On a CPU in bf16, hold the frozen weights in bf16 for the run and attend eagerly. Autocast alone would cast
    every weight again in every step (16 % of a step here), and PyTorch's CPU flash-attention kernel is slow in bf16 at
    these lengths: 929 ms a step with autocast alone, 657 ms with both (top 10 blocks, batch 8, 2 cores; fp32 1,247 ms).
    Returns what `weights_after_training` needs to put the fp32 weights and the attention back ([] where nothing
    changed: fp32, or a GPU, where the model is loaded in bf16 already)."""
    import torch

    if precision != "bf16" or model.device.type != "cpu":
        return []
    kept = [(p, p.data) for p in model.parameters() if p.dtype == torch.float32]
    attention = model.config._attn_implementation
    for param, fp32 in kept:  # the weights only: buffers such as RoPE's frequencies stay fp32, as autocast wants them
        param.data = fp32.to(torch.bfloat16)  # peft then makes the LoRA weights fp32 (autocast_adapter_dtype)
    model.set_attn_implementation("eager")
    return [(model, attention), *kept]


def weights_after_training(kept: list) -> None:
    """Give the model of `weights_for_training` back its fp32 weights (the originals, not a bf16 round trip) and its
    attention, so every evaluation, the merged model and the GGUF files are what fp32 training gives them."""
    if not kept:
        return
    (model, attention), *weights = kept
    for param, fp32 in weights:
        param.data = fp32
    model.set_attn_implementation(attention)


def world_size() -> int:
    """Processes training together: 1, or what torchrun / accelerate launch set in WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def jsonl_log_callback(path: Path):
    """A TrainerCallback that appends every logged row (step, loss, eval loss, learning rate, grad norm, tokens...) to
    a JSONL file as it happens. (transformers is imported here, not at the top: `python -m helpers course` imports
    every helper and should not hold torch in memory beside the notebook kernels.)"""
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        def __init__(self, path: Path):
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:  # one log per run, however many processes train
                return
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **(logs or {})}) + "\n")
    return JsonlLogCallback(path)


def scoring_callback(steps, score):
    """A TrainerCallback that calls `score(model, tokenizer)` on the model being trained (in eval mode) at each of
    `steps` (0: before the first step): its `scores` keeps {step: what score returned} in order, its `seconds` the
    time spent scoring, which the caller takes off the training time."""
    from transformers import TrainerCallback

    class ScoringCallback(TrainerCallback):
        def __init__(self):
            self.scores, self.seconds = {}, 0.0

        def at(self, step, model, tokenizer):
            if step not in set(steps) or step in self.scores:
                return
            start = time.perf_counter()
            model.eval()
            self.scores[step] = score(model, tokenizer)
            model.train()
            self.seconds += time.perf_counter() - start

        def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
            self.at(0, model, processing_class)

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            self.at(state.global_step, model, processing_class)
    return ScoringCallback()


def score_answer_positions_only() -> bool:
    """Make TRL's fused LM head project only the positions that carry loss, on every device.

    TRL 1.x replaces the model's forward with a chunked LM head that never builds the full logits. Where Triton runs
    (CUDA, XPU) it projects only the positions whose label is not -100; elsewhere it projects every position onto the
    49k-word vocabulary and masks afterwards, to keep tile shapes fixed for compilers such as Neuron's. Eager PyTorch
    on a CPU recompiles nothing, and the answer is 3 of ~47 tokens: projecting only those gives the same loss and
    gradients, a ~16 % faster step and ~1.6 GB less peak memory here (bench). Returns False, changing nothing, if
    this TRL has no such switch (then every position is projected, as before)."""
    import trl.trainer.utils as trl_utils

    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None or getattr(decide, "course_patch", False):
        return decide is not None

    def answer_positions_only(device):
        return device.type == "cpu" or decide(device)
    answer_positions_only.course_patch = True
    trl_utils._use_triton = answer_positions_only
    return True


def make_trainer(cfg: CourseConfig, model, tokenizer, train_records, eval_records=None, output_dir: Path | None = None,
                 completion_only_loss: bool = True, log_path: Path | None = None, **sft_extra):
    """An SFTTrainer with a fresh LoRA adapter on `model`, its datasets already tokenized and labelled by TRL."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    if sft_extra.get("assistant_only_loss"):
        check_assistant_only_loss(tokenizer)
    score_answer_positions_only()
    set_seed(cfg.seed)  # the LoRA weights are initialised before the Trainer seeds itself
    output_dir = Path(output_dir or Path(cfg.run_dir) / "trainer")
    train_records = fit_records(train_records, tokenizer, cfg)
    eval_records = fit_records(eval_records, tokenizer, cfg) if eval_records else None
    micro = micro_batch_size(cfg, record_tokens(train_records + (eval_records or []), tokenizer))
    args = build_sft_config(cfg, output_dir, completion_only_loss, with_eval=eval_records is not None,
                            micro_batch=micro, **sft_extra)
    callbacks = [jsonl_log_callback(log_path)] if log_path else []
    kept = weights_for_training(model, training_precision(cfg))
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=build_lora_config(cfg, model),
                      train_dataset=Dataset.from_list(train_records),
                      eval_dataset=Dataset.from_list(eval_records) if eval_records else None, callbacks=callbacks)
    trainer.course_fp32_weights = kept  # `train` puts them back
    return trainer


def fit_records(records, tokenizer, cfg: CourseConfig) -> list[dict]:
    """The records with every user turn fitted to `cfg.max_length` (`fit_review`: a long review keeps its beginning),
    so that TRL never cuts an answer off and the masking guard never fires for a review that could be shortened."""
    def fit(turns):
        return [{**m, "content": fit_review(m["content"], tokenizer, cfg)} if m["role"] == "user" else m for m in turns]
    return [{**r, **{key: fit(r[key]) for key in ("prompt", "messages") if key in r}} for r in records]


def fresh_trainer(cfg: CourseConfig, records, output_dir: Path, **trainer_extra):
    """An SFTTrainer with a new LoRA adapter on a freshly loaded base model (every run starts from the same weights)."""
    model, tokenizer = load_model(cfg)
    return make_trainer(cfg, model, tokenizer, records, output_dir=output_dir, **trainer_extra)


def prepared_dataset(cfg: CourseConfig, records, **sft_extra):
    """The records as SFTTrainer prepares them (input_ids, labels): what it would train on, on a fresh base model."""
    return fresh_trainer(cfg, records, Path(cfg.run_dir) / "prepared", **sft_extra).train_dataset


def train_fresh(cfg: CourseConfig, records, output_dir: Path, expect: str = "answer", progress: bool = False,
                callbacks=(), **trainer_extra):
    """Train a new adapter on a freshly loaded base model: (trainer, run) with run as `train` returns it. `callbacks`
    are Trainer callbacks added before training starts."""
    from transformers import PrinterCallback

    trainer = fresh_trainer(cfg, records, output_dir, disable_tqdm=not progress, **trainer_extra)
    if not progress:  # without a progress bar the Trainer prints every log row instead: the log history keeps them
        trainer.remove_callback(PrinterCallback)
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer, train(trainer, len(records), expect=expect)


def train_losses(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, loss) of the training rows of a Trainer log history (eval and summary rows left out)."""
    return [(row["step"], float(row["loss"])) for row in log_history if "loss" in row and "step" in row]


def train(trainer, source_rows: int, expect: str = "answer") -> dict:
    """Run the masking guard on what TRL prepared, then train; the model is left in eval mode, in fp32 on a CPU.
    Returns the wall time, TRL's log history and the precision training computed in."""
    check_trained_tokens(trainer.train_dataset, trainer.processing_class, expect=expect, source_rows=source_rows)
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        after_training(trainer, getattr(trainer, "course_fp32_weights", []))
    return {"train_seconds": time.perf_counter() - start, "log_history": trainer.state.log_history,
            "precision": "bf16" if trainer.args.bf16 else "fp32"}


def after_training(trainer, kept: list) -> None:
    """Undo what training left on the model: accelerate's bf16 autocast, the bf16 weights of `weights_for_training`
    (`kept`), and train mode (LoRA dropout would blur every evaluation after this)."""
    without_autocast(trainer)
    weights_after_training(kept)
    trainer.model.eval()


def save_adapter_and_merged(trainer, cfg: CourseConfig) -> dict:
    """Save the LoRA adapter, then merge it into the (16/32-bit, never 4-bit) base and save the merged model, where the
    run layout keeps them, each with a tokenizer whose chat template defaults to the course's system prompt. Returns
    {"adapter": path, "merged": path}. Merging changes `trainer.model` in place: afterwards it is the merged model
    (the same logits to ~1e-6, and faster, with no LoRA layers beside the projections)."""
    run = layout(cfg)
    trainer.model.save_pretrained(run.adapter)
    save_with_course_template(trainer.processing_class, run.adapter, cfg.system_prompt)
    model = trainer.model.merge_and_unload()
    model.save_pretrained(run.merged)
    save_with_course_template(trainer.processing_class, run.merged, cfg.system_prompt)
    return {"adapter": run.adapter, "merged": run.merged}


def folder_sizes(paths: dict) -> dict:
    """{name: megabytes on disk} for folders or files."""
    return {name: round(disk_mb(p), 1) for name, p in paths.items()}


def read_train_log(path: Path) -> list[dict]:
    """The rows a training run appended to its JSONL log (what survives a crash)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
