import dataclasses
import json

import pytest
import torch

from helpers.config import make_config
from helpers.data import prepare_splits, to_chat_records
from helpers.model import load_model, training_precision
from helpers.model import resolve_model
from helpers.runs import config_record
from helpers.training import (build_lora_config, build_sft_config, folder_sizes, make_trainer, micro_batch_size,
                              read_train_log, record_tokens, save_adapter_and_merged, train, train_losses)
from take_home import run_take_home


@pytest.fixture
def records(cfg):
    splits = prepare_splits(cfg)
    return to_chat_records(splits.train, cfg), to_chat_records(splits.eval, cfg)


def test_bf16_where_the_precision_says_and_todays_names(cfg, tmp_path):
    args = build_sft_config(cfg, tmp_path)
    gpu = torch.cuda.is_available()
    assert (args.bf16, args.use_cpu, args.completion_only_loss) == (training_precision(cfg) == "bf16", not gpu, True)
    for precision in ("fp32", "bf16"):
        assert build_sft_config(dataclasses.replace(cfg, precision=precision), tmp_path).bf16 == (precision == "bf16")
    assert (args.padding_free, args.max_length, args.train_sampling_strategy) == (False, 128, "group_by_length")
    packed = build_sft_config(dataclasses.replace(cfg, padding_free=True), tmp_path)
    assert (packed.padding_free, packed.max_length) == (True, None)  # TRL enforces no max_length without padding
    assert args.eval_strategy == "no" and build_sft_config(cfg, tmp_path, with_eval=True).eval_strategy == "steps"
    assert build_sft_config(cfg, tmp_path, max_steps=9).max_steps == 9


def test_auto_precision_is_bf16_only_where_the_hardware_has_bf16_units(cfg, monkeypatch):
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert training_precision(cfg) == ("bf16" if amx or torch.cuda.is_available() else "fp32")
    assert training_precision(dataclasses.replace(cfg, precision="fp32")) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        make_config("smoke", precision="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path: a GPU loads the model in bf16 already")
def test_bf16_training_on_a_cpu_gives_back_the_original_fp32_weights(cfg, records):
    model, tokenizer = load_model(cfg)
    frozen = [(p, p.detach().clone()) for p in model.parameters()]
    trainer = make_trainer(dataclasses.replace(cfg, precision="bf16", max_steps=2), model, tokenizer, records[0])
    assert {p.dtype for p, _ in frozen} == {torch.bfloat16} and model.config._attn_implementation == "eager"
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert lora and {p.dtype for n, p in trainer.model.named_parameters() if n in lora} == {torch.float32}
    train(trainer, len(records[0]))
    assert all(p.dtype == torch.float32 and torch.equal(p, before) for p, before in frozen)  # not a bf16 round trip
    assert model.config._attn_implementation == "sdpa"
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)  # it learned
    enc = tokenizer("a review", return_tensors="pt")
    with torch.no_grad():  # no bf16 autocast left on the forward: the adapter scores as its fp32 merge does
        adapter = trainer.model(**enc).logits
        assert torch.allclose(trainer.model.merge_and_unload()(**enc).logits, adapter, atol=1e-5)


def test_lora_targets_every_linear_projection(cfg):
    import dataclasses

    from helpers.model import load_model

    from peft import get_peft_model

    every = dataclasses.replace(cfg, lora_layers=0)
    model = load_model(every)[0]
    lora = build_lora_config(every, model)
    assert (lora.r, lora.lora_alpha) == (cfg.lora_r, cfg.lora_alpha)
    assert lora.layers_to_transform == list(range(model.config.num_hidden_layers))
    # the seven projections of every block: what peft's "all-linear" picks, and nothing else (not the LM head)
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name}
    named = {name for name, _ in get_peft_model(model, lora).named_modules() if name.endswith(".lora_A")}
    assert {name.split("base_model.model.", 1)[1].rsplit(".lora_A", 1)[0] for name in named} == linear


@pytest.mark.slow
def test_log_row_every_logging_steps_written_as_it_happens(cfg, records):
    cfg.max_steps, cfg.logging_steps, cfg.eval_steps = 10, 5, 5
    model, tokenizer = load_model(cfg)
    log_path = cfg.run_dir / "train_log.jsonl"
    trainer = make_trainer(cfg, model, tokenizer, records[0], records[1], log_path=log_path, logging_first_step=False,
                           disable_tqdm=True)
    run = train(trainer, len(records[0]))
    rows = read_train_log(log_path)
    assert [r["step"] for r in rows if "loss" in r] == [5, 10]
    assert [r["step"] for r in rows if "eval_loss" in r] == [5, 10]
    assert {"loss", "learning_rate", "grad_norm", "num_tokens"} <= set(next(r for r in rows if "loss" in r))
    assert rows[:len(run["log_history"])] == json.loads(json.dumps(run["log_history"]))[:len(rows)]


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_on_a_tiny_model(cfg, records):
    cfg.max_steps, cfg.logging_steps, cfg.learning_rate = 12, 1, 3e-3
    model, tokenizer = load_model(cfg)
    history = train(make_trainer(cfg, model, tokenizer, records[0][:8], disable_tqdm=True), 8)["log_history"]
    losses = [r["loss"] for r in history if "loss" in r]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2


def test_guard_runs_before_training(cfg, records):
    model, tokenizer = load_model(cfg)
    trainer = make_trainer(cfg, model, tokenizer, records[0], completion_only_loss=False)
    from helpers.masking import MaskingError
    with pytest.raises(MaskingError):
        train(trainer, len(records[0]))  # expects answer-only loss, gets every token
    assert trainer.state.global_step == 0


@pytest.mark.slow
def test_adapter_and_merged_model_are_saved_and_merged_matches(cfg, records):
    cfg.max_steps = 2
    model, tokenizer = load_model(cfg)
    trainer = make_trainer(cfg, model, tokenizer, records[0], disable_tqdm=True)
    train(trainer, len(records[0]))
    assert not trainer.model.training  # else LoRA dropout would blur every evaluation
    enc = tokenizer("a review", return_tensors="pt").to(trainer.model.device)
    with torch.no_grad():
        before = trainer.model(**enc).logits
    saved = save_adapter_and_merged(trainer, cfg)
    assert saved == {"adapter": cfg.run_dir / "02_logged_training" / "adapter",
                     "merged": cfg.run_dir / "02_logged_training" / "merged"}  # where the run layout keeps them
    assert (saved["adapter"] / "adapter_config.json").exists() and (saved["merged"] / "model.safetensors").exists()
    merged, _ = load_model(cfg, saved["merged"])
    with torch.no_grad():
        tolerance = 1e-4 if merged.dtype == torch.float32 else 0.1  # merging in bf16 (on a GPU) rounds the weights
        assert torch.allclose(merged(**enc).logits.float(), before.float(), atol=tolerance)
    sizes = folder_sizes(saved)
    assert 0 < sizes["adapter"] < sizes["merged"]


def test_train_losses_skip_eval_and_summary_rows():
    log = [{"step": 5, "loss": 2.0}, {"step": 5, "eval_loss": 1.5}, {"step": 10, "loss": 1.0},
           {"step": 10, "train_runtime": 3.0, "train_loss": 1.5}]
    assert train_losses(log) == [(5, 2.0), (10, 1.0)]


def on_device(trainer, rows):
    """The trainer's collated batch of its first `rows` examples, tensors on the model's device."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(rows)])
    return {k: v.to(trainer.model.device) if hasattr(v, "to") else v for k, v in batch.items()}


@pytest.mark.slow
def test_lm_head_projects_only_the_answer_positions_with_the_same_loss_and_gradients(cfg, records, monkeypatch):
    import trl.trainer.utils as trl_utils

    model, tokenizer = load_model(cfg)
    trainer = make_trainer(cfg, model, tokenizer, records[0][:4], disable_tqdm=True)
    batch = on_device(trainer, 4)
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())
    patched, projected = trl_utils._use_triton, []
    chunked = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: projected.append(hidden.shape[0]) or chunked(hidden, *rest))

    def loss_and_grads(decide):
        monkeypatch.setattr(trl_utils, "_use_triton", decide)
        trainer.model.zero_grad()
        loss = trainer.model(**batch, fused_lm_head=True).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]

    compact_loss, compact_grads = loss_and_grads(patched)
    full_loss, full_grads = loss_and_grads(lambda device: False)  # TRL's own choice on a CPU: every position
    rows, width = batch["input_ids"].shape
    assert projected == [answer_tokens, rows * (width - 1)]
    fp32 = next(trainer.model.parameters()).dtype == torch.float32  # bf16 on a GPU: the chunks round differently
    assert compact_loss == pytest.approx(full_loss, rel=1e-5 if fp32 else 1e-2)
    assert all(torch.allclose(a.float(), b.float(), atol=1e-6 if fp32 else 1e-3, rtol=1e-4 if fp32 else 5e-2)
               for a, b in zip(compact_grads, full_grads))


@pytest.mark.slow
def test_padding_free_batches_give_the_padded_loss_without_a_padding_token(cfg, records):
    """The rows of a padding-free batch run as one sequence; transformers builds a block-diagonal mask from the position
    ids, so no row attends to another: the loss is the padded batch's, and not one token is padding."""
    def batch_and_loss(padding_free):
        model, tokenizer = load_model(dataclasses.replace(cfg, padding_free=padding_free))
        trainer = make_trainer(dataclasses.replace(cfg, padding_free=padding_free), model, tokenizer, records[0][:4],
                               disable_tqdm=True)
        batch = on_device(trainer, 4)
        with torch.no_grad():
            return batch, trainer.model(**batch, fused_lm_head=True).loss.item()

    packed, packed_loss = batch_and_loss(True)
    padded, padded_loss = batch_and_loss(False)
    real_tokens = int(padded["attention_mask"].sum())
    assert packed["input_ids"].shape == (1, real_tokens) and "attention_mask" not in packed
    assert padded["input_ids"].numel() > real_tokens  # the padded batch did pad
    assert packed_loss == pytest.approx(padded_loss, rel=1e-4)


def test_micro_batches_hold_the_token_budget_and_accumulate_to_the_same_step(cfg, records):
    assert [micro_batch_size(dataclasses.replace(cfg, batch_size=8, batch_tokens=t), [100, 256]) for t in
            (4096, 2048, 2047, 1024, 600, 10)] == [8, 8, 4, 4, 2, 1]  # divisors of 8: every step still sees 8 rows
    assert micro_batch_size(cfg, []) == cfg.batch_size
    run = dataclasses.replace(cfg, batch_size=4, max_steps=2, logging_steps=1, group_by_length=False)
    longest = max(record_tokens(records[0], load_model(cfg)[1]))

    def first_step(batch_tokens):
        model, tokenizer = load_model(run)
        trainer = make_trainer(dataclasses.replace(run, batch_tokens=batch_tokens), model, tokenizer, records[0],
                               disable_tqdm=True)
        args = (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps)
        logged = train(trainer, len(records[0]))["log_history"][0]
        return args, logged["loss"], logged["grad_norm"]

    whole, split = first_step(4 * longest), first_step(2 * longest)
    assert whole[0] == (4, 1) and split[0] == (2, 2)  # two passes of 2 rows make each step of 4
    assert split[1] == pytest.approx(whole[1], rel=1e-4) and split[2] == pytest.approx(whole[2], rel=1e-3)


def test_lora_on_the_top_blocks_names_the_projections_and_stops_backward_there(cfg):
    import dataclasses

    import torch
    from peft import get_peft_model

    from helpers.model import load_model

    model, _ = load_model(cfg)
    top = dataclasses.replace(cfg, lora_layers=1)
    lora = build_lora_config(top, model)
    assert lora.layers_to_transform == [model.config.num_hidden_layers - 1] and lora.layers_pattern == "layers"
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    peft_model = get_peft_model(model, lora)
    trained = {name.split(".layers.")[1].split(".")[0] for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trained == {str(model.config.num_hidden_layers - 1)}
    hidden = peft_model(torch.tensor([[1, 2, 3]]), output_hidden_states=True).hidden_states
    assert not hidden[-2].requires_grad and hidden[-1].requires_grad  # autograd never enters the frozen blocks
    every = build_lora_config(dataclasses.replace(cfg, lora_layers=99), model)  # more than the model has: every block
    assert every.layers_to_transform == list(range(model.config.num_hidden_layers))


@pytest.mark.slow
def test_the_take_home_cells_train_merge_and_score_on_their_own(cfg, records, tmp_path):
    """Notebook 02's take-home cells as a learner's script: a model folder, a few records, the knobs as plain values;
    they train a LoRA adapter with a log, save it, merge it, and score a review."""
    train_records, eval_records = records
    inputs = dict(model_dir=str(resolve_model(cfg)), train_records=train_records[:8], eval_records=eval_records[:4],
                  labels=list(cfg.labels), device="cpu", dtype="float32", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                  projections=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                  lora_blocks=[1], output_dir=str(tmp_path / "trainer"), max_steps=2, batch_size=4, micro_batch=4,
                  learning_rate=3e-4, seed=1, logging_steps=1, eval_steps=1, report_to="none", max_length=128,
                  padding_free=False, sampling="group_by_length", bf16=False, use_cpu=True,
                  adapter_dir=str(tmp_path / "adapter"), merged_dir=str(tmp_path / "merged"))
    done = run_take_home("02_logged_training", inputs, tmp_path / "script")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "merged" / "model.safetensors").exists() and (tmp_path / "merged" / "tokenizer.json").exists()
    probabilities = json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert list(probabilities) == list(cfg.labels) and sum(probabilities.values()) == pytest.approx(1, abs=2e-3)


@pytest.mark.slow
def test_the_notebook_s_library_objects_equal_the_helpers_and_its_few_lines_score_as_the_predictor(course_run):
    """One procedure: notebook 02 writes LoraConfig and SFTConfig out; the twin and the experiments build them with
    build_lora_config and build_sft_config. For the smoke run's config the two are the same objects, and the
    notebook's label scoring in a few lines gives the fast predictor's probabilities."""
    run_dir = course_run.through("02_logged_training")
    metrics = json.loads((run_dir / "02_logged_training" / "metrics.json").read_text())
    cfg = make_config("smoke", **{k: v for k, v in metrics["config"].items() if k in ("run_dir", "response_cache")})
    model, tokenizer = load_model(cfg)
    splits = prepare_splits(cfg)
    lengths = record_tokens(to_chat_records(splits.train, cfg) + to_chat_records(splits.eval, cfg), tokenizer)
    sft = build_sft_config(cfg, run_dir / "02_logged_training" / "trainer", with_eval=True,
                           micro_batch=micro_batch_size(cfg, lengths))
    assert metrics["library_configs"]["sft"] == config_record(sft)
    lora = {**config_record(build_lora_config(cfg, model)), "base_model_name_or_path": resolve_model(cfg)}  # peft's
    assert metrics["library_configs"]["lora"] == lora  # note of the model it wrapped
    assert metrics["scoring_difference"] < 1e-4
