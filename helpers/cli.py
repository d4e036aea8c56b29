"""The course as commands: `python -m helpers <command> [--knob value ...]` (see `python -m helpers --help`).

Each command runs one notebook's main step with the same `CourseConfig` and the same helper calls as the notebook,
and writes the same `metrics.json` into the same run-folder layout, so the notebooks, the commands and the report
read each other's results. Every config knob is an option, with its default and the profiles' values in --help.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from helpers.config import PROFILES, CourseConfig, make_config
from helpers.runs import EXPORT, FEWSHOT, MASKING, RELATIVE, TRAINING, layout

SKIPPED_KNOBS = {"profile", "run_dir", "prices_per_million_tokens"}  # set otherwise, or too structured for a flag


def _knob_type(value):
    if isinstance(value, tuple):
        return type(value[0]) if value else str
    return Path if isinstance(value, Path) else type(value)


def add_knobs(parser: argparse.ArgumentParser) -> None:
    """One --option per CourseConfig field; unset options leave the profile's value."""
    defaults = CourseConfig()
    group = parser.add_argument_group("course settings (CourseConfig; unset ones keep the profile's value)")
    group.add_argument("--profile", default="workshop", choices=PROFILES, help="settings preset (default: workshop)")
    group.add_argument("--run-dir", type=Path, help="run folder (default: see the command)")
    for f in dataclasses.fields(CourseConfig):
        if f.name in SKIPPED_KNOBS:
            continue
        default = getattr(defaults, f.name)
        by_profile = ", ".join(f"{p}: {s[f.name]}" for p, s in PROFILES.items() if f.name in s)
        help_text = f"default: {default}" + (f" ({by_profile})" if by_profile else "")
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, type=_knob_type(default), nargs="*" if isinstance(default, tuple) else None,
                               default=None, metavar=f.name.upper(), help=help_text)


def config_from(args: argparse.Namespace, run_dir: Path | None) -> CourseConfig:
    names = {f.name for f in dataclasses.fields(CourseConfig)} - SKIPPED_KNOBS
    overrides = {name: value for name, value in vars(args).items() if name in names and value is not None}
    return make_config(args.profile, run_dir=run_dir, **overrides)


def latest_run_dir(args, needs: str) -> Path:
    """--run-dir, else the newest runs/<timestamp>-<profile> folder that holds `needs`."""
    from helpers.runs import latest_run

    run = args.run_dir or latest_run(needs, args.profile)
    if run is None:
        sys.exit(f"No run folder of profile {args.profile!r} holds {needs}: run the step before it first, or pass "
                 f"--run-dir.")
    return run


def new_run_dir(args) -> Path:
    """--run-dir, else a new runs/<timestamp>-<profile> folder (one process: several would each make their own)."""
    from helpers.runs import new_run_dir as make
    from helpers.training import world_size

    if args.run_dir:
        return args.run_dir
    if world_size() > 1:
        sys.exit("Under torchrun every process must write to the same folder: pass --run-dir.")
    return make(args.profile)


def cmd_ablation(args):
    """Notebook 01: train masked and unmasked arms with the same budget, score both on the test split."""
    from helpers.data import prepare_splits
    from helpers.ablation import ablation_summary, ablation_verdict, run_masking_ablation
    from helpers.runs import notebook_dir, record_metrics

    cfg = config_from(args, new_run_dir(args))
    notebook = MASKING
    results = run_masking_ablation(cfg, prepare_splits(cfg), notebook_dir(cfg, notebook))
    record_metrics(cfg, notebook, ablation=ablation_summary(results), verdict=ablation_verdict(results))
    return cfg, ablation_verdict(results)


def cmd_train(args):
    """Notebook 02: LoRA training with a JSONL log, label-scoring evaluation, adapter + merged model saved."""
    from helpers.data import prepare_splits, to_chat_records
    from helpers.evaluate import evaluate_model, metrics_summary
    from helpers.model import load_model
    from helpers.runs import notebook_dir, record_metrics
    from helpers.training import folder_sizes, make_trainer, save_adapter_and_merged, train, world_size

    cfg = config_from(args, new_run_dir(args))
    notebook = TRAINING
    out_dir = notebook_dir(cfg, notebook)
    splits = prepare_splits(cfg)
    model, tokenizer = load_model(cfg)
    trainer = make_trainer(cfg, model, tokenizer, to_chat_records(splits.train, cfg),
                           to_chat_records(splits.eval, cfg), output_dir=out_dir / "trainer",
                           log_path=layout(cfg).train_log)
    run = train(trainer, len(splits.train))
    if not trainer.is_world_process_zero():  # under torchrun: the first process evaluates and saves
        return cfg, f"process {trainer.args.process_index} of {world_size()} done"
    saved = save_adapter_and_merged(trainer, layout(cfg))  # as in the notebook: the merged model is evaluated
    scored = evaluate_model(trainer.model, tokenizer, splits.test, cfg, method="scoring")
    record_metrics(cfg, notebook, fine_tuned=metrics_summary(scored), train_seconds=run["train_seconds"],
                   log_history=run["log_history"], artifacts=saved, artifact_mb=folder_sizes(saved),
                   test_labels=list(splits.test["label"]), test_predictions=scored["predictions"],
                   test_probabilities=scored["probabilities"], world_size=world_size())
    return cfg, (f"fine-tuned: accuracy {scored['accuracy']:.3f}, macro-F1 {scored['macro_f1']:.3f} "
                 f"({run['train_seconds']:.0f} s of training); adapter {saved['adapter']}")


def cmd_export(args):
    """Notebook 03: merged model -> GGUF f16 / Q8_0 / Q4_K_M, then size, speed and accuracy against HF fp32."""
    from helpers.data import prepare_splits
    from helpers.formats import compare_formats, format_verdict
    from helpers.gguf import build_gguf_files, merged_model_dir
    from helpers.runs import notebook_dir, record_metrics

    cfg = config_from(args, latest_run_dir(args, RELATIVE.adapter))
    notebook = EXPORT
    merged = merged_model_dir(cfg)
    notebook_dir(cfg, notebook)
    files = build_gguf_files(cfg, merged, layout(cfg))
    rows = compare_formats(cfg, merged, files, prepare_splits(cfg).test)
    record_metrics(cfg, notebook, formats=[{k: v for k, v in r.items() if k != "predictions"} for r in rows],
                   verdict=format_verdict(rows), gguf_files=files)
    return cfg, format_verdict(rows)


def cmd_compare(args):
    """Notebook 04: the base model 5-shot (and gpt-4o-mini when OPENAI_API_KEY is set) against the fine-tuned GGUF
    through a local llama.cpp server and the openai client, beside the classic baselines."""
    import asyncio

    from helpers.baselines import baseline_verdict, run_baselines
    from helpers.data import prepare_splits
    from helpers.fewshot import ResponseCache, fewshot_verdict, openai_key, pick_shots, run_backend, run_local_models
    from helpers.gguf import base_model_gguf
    from helpers.runs import notebook_dir, record_metrics

    notebook = FEWSHOT
    cfg = config_from(args, latest_run_dir(args, RELATIVE.gguf("Q4_K_M")))
    splits = prepare_splits(cfg)
    shots, cache = pick_shots(splits.train, cfg), ResponseCache(cfg.cache_dir / "responses.jsonl")
    served = {"base": base_model_gguf(cfg), "finetuned": layout(cfg).gguf("Q4_K_M")}
    runs = [("base", shots, f"base {cfg.shots}-shot (GGUF)"), ("finetuned", (), "fine-tuned 0-shot (GGUF Q4_K_M)")]
    results = asyncio.run(run_local_models(served, runs, splits.test, cfg, cache,
                                           notebook_dir(cfg, notebook) / "server.log"))
    if openai_key():
        row = asyncio.run(run_backend("openai", None, openai_key(), cfg.openai_model, splits.test, cfg, cache, shots))
        results.append({**row, "method": f"{cfg.openai_model} {cfg.shots}-shot"})
    results += [{**row, "shots": 0, "size_mb": None} for row in run_baselines(cfg, splits.train, splits.test)]
    verdict = fewshot_verdict(results) + " " + baseline_verdict(results)
    record_metrics(cfg, notebook, verdict=verdict, shots=shots, prices_checked=cfg.prices_checked,
                   results=[{k: v for k, v in r.items() if k not in ("predictions", "per_class", "probabilities")}
                            for r in results])
    table = "\n".join(f"  {r['method']:<34} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}"
                      for r in results)
    return cfg, f"{table}\n{verdict}"


def cmd_evaluate(args):
    """Accuracy and macro-F1 of any model (GGUF file, HF folder or LoRA adapter) on the test split."""
    from helpers.predict import load_predictor
    from helpers.data import prepare_splits
    from helpers.evaluate import classification_metrics

    cfg = config_from(args, args.run_dir)
    test = prepare_splits(cfg).test
    probabilities = load_predictor(cfg, args.trained).probabilities(test["text"])
    metrics = classification_metrics(test["label"], [cfg.labels[i] for i in probabilities.argmax(1)], cfg.labels)
    return cfg, json.dumps({k: metrics[k] for k in ("n", "accuracy", "macro_f1", "confusion")})


def cmd_classify(args):
    """Label your own CSV/JSONL file: input columns + predicted_label + one probability per label."""
    from helpers.classify import classify_file

    cfg = config_from(args, args.run_dir)
    summary = classify_file(cfg, args.file, args.output, args.trained, batch_size=args.batch)
    return cfg, (f"{summary['rows_labelled']} rows labelled ({summary['reviews_per_second']:.1f} reviews/s), "
                 f"{summary['rows_skipped']} already done, {summary['bad_rows']} bad rows -> {summary['errors']}\n"
                 f"labels: {summary['label_counts']}\noutput: {summary['output']}\nmodel: {summary['model']}")


def cmd_serve(args):
    """The fine-tuned GGUF as an OpenAI-compatible endpoint on 127.0.0.1 until Ctrl-C."""
    import signal
    import time

    from helpers.classify import find_model
    from helpers.serve import llama_server

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server as cleanly as Ctrl-C

    cfg = config_from(args, args.run_dir)
    model = Path(args.trained) if args.trained else find_model(cfg)
    log = Path(args.log or model.with_suffix(".server.log"))
    with llama_server({args.alias: model}, cfg, log, port=args.port) as base_url:
        print(f"Serving {model} as model {args.alias!r} at {base_url} (log: {log}). Try:\n"
              f"  curl {base_url}/chat/completions -H 'Content-Type: application/json' -d "
              f"'{{\"model\": \"{args.alias}\", \"messages\": [{{\"role\": \"system\", \"content\": "
              f"\"{cfg.system_prompt}\"}}, {{\"role\": \"user\", \"content\": \"Great battery life.\"}}]}}'\n"
              f"Ctrl-C stops it.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except (KeyboardInterrupt, SystemExit):
            pass
    return cfg, "server stopped"


COMMANDS = {"ablation": cmd_ablation, "train": cmd_train, "export": cmd_export, "compare": cmd_compare,
            "evaluate": cmd_evaluate,
            "classify": cmd_classify, "serve": cmd_serve}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in COMMANDS.items():
        p = sub.add_parser(name, help=func.__doc__, description=func.__doc__)
        if name in ("evaluate",):
            p.add_argument("--trained", required=True, help="a .gguf file, a Hugging Face folder, a LoRA adapter, or a "
                                                            "fine-tuned encoder or SetFit folder (notebook 05)")
        if name == "classify":
            p.add_argument("file", type=Path, help="a .csv (with a header row) or .jsonl file")
            p.add_argument("--output", type=Path, help="default: <file stem>.labelled.<suffix> beside the input")
            p.add_argument("--trained", help="the trained model: a .gguf file, a Hugging Face folder or a LoRA "
                                             "adapter (default: the Q4_K_M GGUF of the latest course run)")
            p.add_argument("--batch", type=int, default=32, help="rows labelled and written at a time (default: 32)")
        if name == "serve":
            p.add_argument("--trained", help="the trained model: a .gguf file, a Hugging Face folder or a LoRA "
                                             "adapter (default: the Q4_K_M GGUF of the latest course run)")
            p.add_argument("--alias", default="sentiment", help="the model name clients ask for (default: sentiment)")
            p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default: 8000)")
            p.add_argument("--log", help="server log file (default: beside the model)")
        add_knobs(p)
        p.set_defaults(func=func)
    return parser


def main(argv=None) -> int:
    from helpers.classify import ClassifyError
    from helpers.data import DataError
    from helpers.gguf import GGUFError
    from helpers.model import ModelError
    from helpers.serve import ServerError

    args = build_parser().parse_args(argv)
    try:
        cfg, message = args.func(args)
    except (ClassifyError, DataError, GGUFError, ModelError, ServerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(message)
    if cfg.run_dir and Path(cfg.run_dir).exists() and args.command in ("ablation", "train", "export", "compare"):
        print(f"Run folder: {cfg.run_dir}")
    return 0
