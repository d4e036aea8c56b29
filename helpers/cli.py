"""The course's one entry point: `python -m helpers <command> [--knob value ...]` (see `python -m helpers --help`).

`course` runs every notebook headless and writes the report; `data`, `ablation`, `train`, `export`, `compare`,
`alternatives` and `distill` are notebooks 00-06 as commands, with the same `CourseConfig` and the same helper calls as the
notebook, writing the same `metrics.json` into the same run-folder layout, so the notebooks, the commands and the
report read each other's results; `classify`, `serve` and `evaluate` use a trained model; `bench` measures speed;
`report` rebuilds a run's report; `prepare` is a set-up step of `make setup`. Every command takes every config knob
the same way: `--profile`, then a `--config` JSON/YAML file of knobs, then one `--knob value` option per knob, each
with its default and the profiles' values in --help.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from helpers.ablation import ablation_summary, ablation_verdict, curve_sentence, run_masking_ablation
from helpers.alternatives import (Comparison, add_classic_rows, add_encoder_row, add_frozen_row, add_llm_rows,
                                  add_setfit_rows, central_tests, human_ceilings, known_curve_points,
                                  learning_curve, out_of_domain_set, verdicts)
from helpers.baselines import baseline_verdict, run_baselines
from helpers.bench import BENCH_PARTS, BenchError, earlier_bench, format_results, run_bench, save_results
from helpers.classify import ClassifyError, classify_file, find_model
from helpers.config import PROFILES, ROOT, CourseConfig, make_config
from helpers.data import (DataError, class_balance, distillation_pool, label_consistency_report, load_dataset,
                          load_tweets, prepare_splits, short_classes, split_report, split_sentence, split_tokens,
                          to_chat_records)
from helpers.demo import DemoError, open_demo
from helpers.distributed import classify_on_ray
from helpers.distill import (RECORDED, RECORDED_FEW, add_distillation_rows, distillation_figures, distillation_verdict,
                             distills_live, few_gold_section, few_gold_text, pool_curve, pool_sentence,
                             recorded_distillation, recorded_metrics, recorded_sentence, recorded_table,
                             recorded_verdict, teacher_probabilities, teacher_sentence, write_student_card)
from helpers.evaluate import classification_metrics, metrics_summary
from helpers.fewshot import (FewShotError, fewshot_verdict, open_response_cache, openai_row, pick_shots,
                             run_local_models, training_rows)
from helpers.formats import compare_formats, format_verdict, scored_in_training
from helpers.gguf import (GGUFError, base_model_gguf, build_gguf_files, merged_model_dir, prepare_converter,
                          servable_gguf)
from helpers.model import ModelError, load_model, load_tokenizer, prepare_embedded_model, prepare_tiny_model
from helpers.modelcard import write_model_cards
from helpers.predict import choose_decision_rule, hf_predictor, load_predictor
from helpers.publish import SITE, PublishError, build_book, publish
from helpers.report import build_report
from helpers.runs import (ALTERNATIVES, DATA, DISTILLATION, EXPORT, FEWSHOT, MASKING, RELATIVE, SOLUTIONS, TRAINING, RunError,
                          course_estimate, course_notebooks, course_runs, decision_file, latest_run, layout,
                          load_metrics, new_run_dir, notebook_dir, pack_run, record_metrics, run_course, solution,
                          solution_notebooks, unpack_run, write_decision)
from helpers.serve import ServerError, decision_biases, llama_server
from helpers.teaching import TeachingError, read_figures, write_guide
from helpers.training import folder_sizes, make_trainer, save_adapter_and_merged, train, world_size

class KnobError(ValueError):
    """A --config file that cannot be read, or that names no knob."""


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
    group.add_argument("--config", type=Path, metavar="FILE", help="a JSON or YAML file of knobs (the names below, "
                                                                  "with underscores); options given here win")
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


def knob_overrides(args: argparse.Namespace) -> dict:
    """The knobs this command line sets: those of the --config file, then the --knob options on top."""
    names = {f.name for f in dataclasses.fields(CourseConfig)} - {"profile", "run_dir"}
    overrides = read_config_file(args.config) if args.config else {}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise KnobError(f"{args.config}: unknown setting(s) {', '.join(unknown)}. Valid names: "
                         f"{', '.join(sorted(names))}.")
    return {**overrides, **{name: value for name, value in vars(args).items() if name in names and value is not None}}


def read_config_file(path: Path) -> dict:
    """A JSON or YAML mapping of CourseConfig knobs (the same names as everywhere else)."""
    try:
        values = (yaml.safe_load if Path(path).suffix in (".yaml", ".yml") else json.loads)(Path(path).read_text())
    except FileNotFoundError:
        raise KnobError(f"--config {path}: no such file.") from None
    except (ValueError, yaml.YAMLError) as err:
        raise KnobError(f"--config {path} is not valid {'YAML' if Path(path).suffix != '.json' else 'JSON'}: "
                         f"{err}".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise KnobError(f"--config {path} must hold a mapping of knob names to values, e.g. {{\"max_steps\": 120}}.")
    return values


def config_from(args: argparse.Namespace, run_dir: Path | None) -> CourseConfig:
    return make_config(args.profile, run_dir=run_dir, **knob_overrides(args))


def latest_run_dir(args, needs: str) -> Path:
    """--run-dir, else the newest runs/<timestamp>-<profile> folder that holds `needs`."""
    run = args.run_dir or latest_run(needs, args.profile)
    if run is None:
        sys.exit(f"No run folder of profile {args.profile!r} holds {needs}: run the step before it first, or pass "
                 f"--run-dir.")
    return run


def fresh_run_dir(args) -> Path:
    """--run-dir, else a new runs/<timestamp>-<profile> folder (one process: several would each make their own)."""
    if args.run_dir:
        return args.run_dir
    if world_size() > 1:
        sys.exit("Under torchrun every process must write to the same folder: pass --run-dir.")
    return new_run_dir(args.profile)


def only(notebooks: list[Path], prefixes: list[str] | None) -> list[Path]:
    """The notebooks whose names start with one of `prefixes` (--only 00 02), or all of them."""
    return [nb for nb in notebooks if not prefixes or nb.name.startswith(tuple(prefixes))]


def cmd_course(args):
    """The whole course headless: every notebook in order into a new run folder, then its report (what `make course`
    does). The knobs given here reach every notebook as its `overrides`."""
    notebooks = only(course_notebooks(), args.only)
    cfg = config_from(args, args.run_dir)  # checks every knob before the first notebook starts
    run_dir, finished = run_course(args.profile, notebooks, overrides=knob_overrides(args), run_dir=args.run_dir)
    markdown, page = build_report(run_dir)  # also after a failure: it names the cell and keeps what finished
    message = f"Report: {markdown}\n        {page} (open it in a browser)"
    if not finished:
        print(message)
        sys.exit(1)
    return dataclasses.replace(cfg, run_dir=run_dir), message


def cmd_solutions(args):
    """Every chapter's worked solutions headless (notebooks/solutions/), into a new run folder started from a finished
    course run (--from-run, default: the newest of the profile), then every exercise's answer (what `make solutions`
    does; `make course` leaves them out, they take longer than the course's budget)."""
    overrides = knob_overrides(args)
    cfg = make_config(args.profile, run_dir=args.run_dir, **overrides)  # COURSE_FROM_RUN counts too
    if not cfg.from_run:
        latest = latest_run(RELATIVE.metrics_file(ALTERNATIVES), args.profile)
        if latest is None:
            sys.exit(f"No finished course run of profile {args.profile!r} under runs/ to start the solutions from: run "
                     f"`make course` first, or pass FROM=runs/<timestamp>-{args.profile} (--from-run).")
        cfg.from_run = str(latest)
    overrides["from_run"] = cfg.from_run  # every solution starts from it
    notebooks = only(solution_notebooks(), args.only)
    run_dir, finished = run_course(args.profile, notebooks, overrides=overrides, run_dir=args.run_dir)
    answers = [f"{solution(folder)}, exercise {key.removeprefix('exercise_')}: {value['answer']}"
               for folder, metrics in load_metrics(run_dir / SOLUTIONS).items()
               for key, value in metrics.items() if key.startswith("exercise_")]
    message = "\n".join(answers + [f"Solutions: {run_dir / SOLUTIONS}"])
    if not finished:  # the answers of the solutions that finished are kept and shown
        print(message)
        sys.exit(1)
    return dataclasses.replace(cfg, run_dir=run_dir), message


def cmd_report(args):
    """REPORT.md and REPORT.html of a run folder (default: the newest run of the profile), from its metrics files."""
    run = args.run_dir or next(iter(course_runs(args.profile)), None)
    if run is None:
        sys.exit(f"No run folder of profile {args.profile!r} under runs/: run the course first, or pass --run-dir.")
    markdown, page = build_report(run)
    return config_from(args, run), f"Report: {markdown}\n        {page}"


def cmd_data(args):
    """Notebook 00: load the data set, split it by review, and record its size, class balance and label conflicts."""
    cfg = config_from(args, fresh_run_dir(args))
    df = load_dataset(cfg)
    splits = prepare_splits(cfg, df)
    counts = {name: class_balance(getattr(splits, name), cfg.labels) for name in ("train", "eval", "test")}
    conflicts, tweet_conflicts = label_consistency_report(df), label_consistency_report(load_tweets())
    per_class = split_report(df, splits, cfg)
    tokens = split_tokens(splits, load_tokenizer(cfg), cfg)
    estimate = course_estimate(cfg.profile, tokens, current=cfg.run_dir, distillation_live=distills_live(cfg, splits))
    record_metrics(cfg, DATA, rows=len(df), groups=df["group"].nunique(), class_balance=class_balance(df, cfg.labels),
                   split_sizes=splits.sizes(), split_balance=counts, split_report=per_class,
                   shortened=splits.shortened, conflicting_texts=len(conflicts),
                   tweets_conflicting_texts=len(tweet_conflicts), split_tokens=tokens, estimate=estimate,
                   unlabelled_rows=len(load_dataset(cfg, unlabelled=True)))
    return cfg, (f"{len(df)} labelled rows from {df['group'].nunique()} groups in {cfg.dataset!r}; splits "
                 f"{splits.sizes()}; {len(conflicts)} texts with conflicting labels\n{split_sentence(per_class, cfg)}"
                 f"\n{estimate['sentence']}")


def cmd_ablation(args):
    """Notebook 01: train masked and unmasked arms with the same budget, each scored on the eval split along the way
    and on the test split at the end."""
    cfg = config_from(args, fresh_run_dir(args))
    splits = prepare_splits(cfg)
    results = run_masking_ablation(cfg, splits, notebook_dir(cfg, MASKING))
    verdict = ablation_verdict(results, splits.test["label"], cfg)
    curve = curve_sentence(results, splits.eval["label"], cfg)
    record_metrics(cfg, MASKING, ablation=ablation_summary(results), verdict=verdict, curve=curve)
    return cfg, f"{verdict}\n{curve}"


def cmd_train(args):
    """Notebook 02: LoRA training with a JSONL log, label-scoring evaluation, adapter + merged model saved."""
    cfg = config_from(args, fresh_run_dir(args))
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
    saved = save_adapter_and_merged(trainer, cfg)  # as in the notebook: the merged model is evaluated
    rule = choose_decision_rule(cfg, hf_predictor(trainer.model, tokenizer, cfg), splits.eval, short_classes(splits, cfg))
    write_decision(rule, saved["adapter"], saved["merged"])
    scored = hf_predictor(trainer.model, tokenizer, cfg, offsets=rule["offsets"]).evaluate(splits.test, method="scoring")
    record_metrics(cfg, notebook, fine_tuned=metrics_summary(scored), train_seconds=run["train_seconds"],
                   precision=run["precision"], log_history=run["log_history"], artifacts=saved, artifact_mb=folder_sizes(saved),
                   test_labels=list(splits.test["label"]), test_predictions=scored["predictions"],
                   test_probabilities=scored["probabilities"], world_size=world_size(), decision_rule=rule)
    write_model_cards(cfg)
    return cfg, (f"fine-tuned: accuracy {scored['accuracy']:.3f}, macro-F1 {scored['macro_f1']:.3f} "
                 f"({run['train_seconds']:.0f} s of training); adapter {saved['adapter']}")


def cmd_export(args):
    """Notebook 03: merged model -> GGUF f16 / Q8_0 / Q4_K_M, then size, speed and accuracy against HF fp32."""
    cfg = config_from(args, latest_run_dir(args, RELATIVE.adapter))
    notebook = EXPORT
    merged = merged_model_dir(cfg)
    notebook_dir(cfg, notebook)
    files = build_gguf_files(cfg, merged, layout(cfg))
    test = prepare_splits(cfg).test
    rows = compare_formats(cfg, merged, files, test, known=scored_in_training(cfg))
    verdict = format_verdict(rows, test["label"], cfg)
    record_metrics(cfg, notebook, formats=[{k: v for k, v in r.items() if k != "predictions"} for r in rows],
                   verdict=verdict, gguf_files=files)
    write_model_cards(cfg)
    return cfg, verdict


def cmd_compare(args):
    """Notebook 04: the base model 5-shot (and gpt-4o-mini when OPENAI_API_KEY is set) against the fine-tuned GGUF
    through a local llama.cpp server and the openai client, beside the classic baselines."""
    import asyncio

    notebook = FEWSHOT
    cfg = config_from(args, latest_run_dir(args, RELATIVE.gguf("Q4_K_M")))
    splits = prepare_splits(cfg)
    shots, cache = pick_shots(splits.train, cfg), open_response_cache(cfg)
    served = {"base": base_model_gguf(cfg), "finetuned": layout(cfg).gguf("Q4_K_M")}
    runs = [("base", shots, f"base {cfg.shots}-shot (GGUF)"), ("finetuned", (), "fine-tuned 0-shot (GGUF Q4_K_M)")]
    results = asyncio.run(run_local_models(served, runs, splits.test, cfg, cache,
                                           notebook_dir(cfg, notebook) / "server.log"))
    row, note = asyncio.run(openai_row(cfg, splits.test, cache, shots))  # after the local rows: never loses them
    results += [row] if row else []
    print(note)
    results += training_rows(cfg)
    results += [{**row, "shots": 0, "size_mb": None} for row in run_baselines(cfg, splits.train, splits.test)]
    gold = splits.test["label"]
    verdict = fewshot_verdict(results, gold, cfg) + " " + baseline_verdict(results, gold, cfg)
    record_metrics(cfg, notebook, verdict=verdict, shots=shots, prices_checked=cfg.prices_checked,
                   results=[{k: v for k, v in r.items() if k not in ("predictions", "per_class", "probabilities")}
                            for r in results])
    table = "\n".join(f"  {r['method']:<34} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}"
                      for r in results)
    return cfg, f"{table}\n{verdict}"


def cmd_alternatives(args):
    """Notebook 05: the practitioner's alternatives (classic baselines, frozen encoder, SetFit, fine-tuned encoder)
    beside the LLM rows of notebooks 02-04 of the run folder, in and out of domain, with the human ceiling, the
    learning curve and the verdicts."""
    run = args.run_dir or latest_run(RELATIVE.metrics_file(TRAINING), args.profile) or fresh_run_dir(args)
    cfg = config_from(args, run)
    out_dir = notebook_dir(cfg, ALTERNATIVES)
    splits, ood = prepare_splits(cfg), out_of_domain_set(cfg)
    comparison = Comparison({"test": splits.test} if ood is None else {"test": splits.test, "ood": ood}, cfg.labels)
    humans = human_ceilings(cfg, {"test": (splits.test, cfg.dataset), "ood": (ood, cfg.ood_dataset)})
    add_llm_rows(comparison, cfg, len(splits.train))
    add_classic_rows(comparison, cfg, splits.train)
    add_frozen_row(comparison, cfg, splits.train)
    add_setfit_rows(comparison, cfg, splits.train, out_dir)
    add_encoder_row(comparison, cfg, splits.train, out_dir)
    curve = learning_curve(cfg, splits.train, splits.test, known_curve_points(comparison.rows["test"]), out_dir,
                           eval_df=splits.eval)
    verdict = verdicts(comparison, curve, humans, cfg.seed)
    record_metrics(cfg, ALTERNATIVES, results=comparison.summary(), human=humans, learning_curve=curve,
                   verdict=verdict, llm_vs_alternatives=central_tests(comparison, cfg.seed),
                   ood_dataset=cfg.ood_dataset, encoder=cfg.encoder)
    return cfg, comparison.table("test").round(3).to_string() + "\n\n" + "\n\n".join(verdict.values())


def cmd_distill(args):
    """Notebook 06: the fine-tuned LLM of notebook 02 labels the pool (the training side beyond its own training rows,
    or your file's rows with an empty label), MiniLM learns from its probabilities, and the student is compared with
    its teacher, MiniLM on the gold rows only, the hard-label student and the upper bound, with the pool-size curve
    and the verdicts."""
    run = args.run_dir or latest_run(RELATIVE.metrics_file(ALTERNATIVES), args.profile) or fresh_run_dir(args)
    cfg = config_from(args, run)
    out_dir = notebook_dir(cfg, DISTILLATION)
    splits = prepare_splits(cfg)
    pool = distillation_pool(cfg, splits)
    if recorded := recorded_distillation(cfg, pool):
        few = few_gold_section(cfg, splits, out_dir)
        record_metrics(cfg, DISTILLATION, **recorded_metrics(recorded), few_gold=few)
        return cfg, (f"{recorded_sentence(cfg, recorded)}\n\n{recorded_table(recorded).round(3).to_string()}\n\n" +
                     "\n\n".join(recorded_verdict(recorded).values()) + f"\n\n{few_gold_text(cfg, few)}")
    ood = out_of_domain_set(cfg)
    comparison = Comparison({"test": splits.test} if ood is None else {"test": splits.test, "ood": ood}, cfg.labels)
    targets = teacher_probabilities(cfg, pool, out_dir)
    student = add_distillation_rows(comparison, cfg, splits.train, pool, targets, out_dir)
    curve = pool_curve(cfg, comparison, splits.train, pool, targets, out_dir)
    verdict = distillation_verdict(comparison, cfg.seed)
    write_student_card(cfg, comparison, pool, len(splits.train), student["model_dir"], verdict)
    few = few_gold_section(cfg, splits, out_dir)
    record_metrics(cfg, DISTILLATION, results=comparison.summary(), verdict=verdict,
                   **distillation_figures(cfg, curve, pool, targets, len(splits.train)), few_gold=few)
    return cfg, (f"{pool_sentence(cfg, pool, len(splits.train))}\n{teacher_sentence(cfg, pool, targets)}\n\n"
                 f"{comparison.table('test').round(3).to_string()}\n\n" + "\n\n".join(verdict.values()) +
                 f"\n\n{few_gold_text(cfg, few)}")


def cmd_evaluate(args):
    """Accuracy and macro-F1 of any model (GGUF file, HF folder or LoRA adapter) on the test split."""
    cfg = config_from(args, args.run_dir)
    test = prepare_splits(cfg).test
    probabilities = load_predictor(cfg, args.trained).probabilities(test["text"])
    metrics = classification_metrics(test["label"], [cfg.labels[i] for i in probabilities.argmax(1)], cfg.labels)
    return cfg, json.dumps({k: metrics[k] for k in ("n", "accuracy", "macro_f1", "confusion")})


ENGINES = {"local": classify_file, "ray": classify_on_ray}  # one process here, or Ray Data here or on a cluster


def cmd_classify(args):
    """Label your own CSV/JSONL file: input columns + predicted_label + one probability per label."""
    cfg = config_from(args, args.run_dir)
    if args.engine == "local" and (args.address or args.workers):
        raise ClassifyError("--address and --workers are for --engine ray; leave them out, or add --engine ray.")
    ray = {"address": args.address, "workers": args.workers} if args.engine == "ray" else {}
    summary = ENGINES[args.engine](cfg, args.file, args.output, args.trained, batch_size=args.batch, **ray)
    on = f" on Ray, {summary['workers']} workers" if args.engine == "ray" else ""
    return cfg, (f"{summary['rows_labelled']} rows labelled ({summary['reviews_per_second']:.1f} reviews/s{on}), "
                 f"{summary['rows_skipped']} already done, {summary['bad_rows']} bad rows -> {summary['errors']}\n"
                 f"labels: {summary['label_counts']}\noutput: {summary['output']}\nmodel: {summary['model']}")


def cmd_serve(args):
    """The fine-tuned GGUF as an OpenAI-compatible endpoint on 127.0.0.1 until Ctrl-C."""
    cfg = config_from(args, args.run_dir)
    trained = Path(args.trained) if args.trained else find_model(cfg)
    model = servable_gguf(cfg, trained)  # an HF folder or an adapter: exported to GGUF once, like notebook 03
    log = Path(args.log or model.with_suffix(".server.log"))
    biases = decision_biases({args.alias: model}, cfg)
    rule = (f"Its decision rule ({decision_file(model)}) is added to every completion request that sets no "
            f"logit_bias of its own.\n" if biases else "")
    with llama_server({args.alias: model}, cfg, log, port=args.port, biases=biases) as base_url:
        print(f"Serving {model} as model {args.alias!r} at {base_url} (log: {log}). {rule}Try:\n"
              f"  curl {base_url}/chat/completions -H 'Content-Type: application/json' -d "
              f"'{{\"model\": \"{args.alias}\", \"messages\": [{{\"role\": \"user\", \"content\": "
              f"\"Great battery life.\"}}]}}'\n(the course's system prompt is the model's default system turn)\n"
              f"Ctrl-C stops it.", flush=True)
        until_stopped()
    return cfg, "server stopped"


def cmd_demo(args):
    """The demo page on 127.0.0.1 over a finished run's models (--run-dir; default: the newest run of any profile
    with a trained model, under the settings it was made with) until Ctrl-C: type a review and see every model's
    label probabilities, or label a CSV file (helpers/demo.py)."""
    page, url, models = open_demo(args.run_dir, port=args.port, **knob_overrides(args))
    print(f"Demo page over {models.cfg.run_dir} ({', '.join(models.predictors)}): {url}\nCtrl-C stops it.", flush=True)
    try:
        until_stopped()
    finally:
        page.close()
    return models.cfg, "demo page stopped"


def until_stopped() -> None:
    """Wait until Ctrl-C, or a `kill` (SIGTERM), which stops a server as cleanly."""
    import signal
    import time

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass


def cmd_bench(args):
    """Every figure with its target, side by side in one run (what `make bench` does): the course run by `make course`
    with the memory of all its processes sampled, training utilisation (strict count, over the matmul peak and over
    the step's own products timed alone) with training rows per second, fine-tuned macro-F1 of the workshop and deep
    profiles over several seeds (with the encoder on the same rows), reviews per second of HF fp32 vs GGUF Q4_K_M and
    of scoring vs generation, each notebook's wall time and every method of notebook 05, notebook 01 beside one
    competing process, and the LoRA-blocks x rows grid on the eval split; saved to runs/bench/bench-<time>.json. Without the 'course' part, --run-dir is the course
    run to read (default: the latest finished run of the profile)."""
    cfg = config_from(args, ROOT / "runs" / "bench" / f"work-{args.profile}")
    earlier = earlier_bench(args.resume) if args.resume else None
    path = Path(args.resume) if args.resume else save_results({"parts_done": []})  # written after every part
    print(f"Figures: {path} (after each part; make bench RESUME={path} goes on from a stopped run)")
    results = run_bench(cfg, run_dir=args.run_dir, steps=args.steps, parts=args.parts, seeds=args.seeds,
                        overrides=knob_overrides(args), earlier=earlier, save=lambda r: save_results(r, path),
                        recorded=None if args.profile == "smoke" else RECORDED,
                        recorded_few=None if args.profile == "smoke" else RECORDED_FEW)
    return cfg, f"{format_results(results)}\nsaved: {path}"


def cmd_pack(args):
    """A finished run folder as one .tar without its caches, to hand out: a learner unpacks it and starts at any
    notebook from it (make lab FROM=...)."""
    cfg = config_from(args, args.run)
    archive = pack_run(args.run, args.output)
    return cfg, f"Packed: {archive} ({archive.stat().st_size / 1e6:.0f} MB). Unpack: python -m helpers unpack {archive}"


def cmd_unpack(args):
    """A packed run unpacked under runs/ (or --into): the folder to start from (make lab FROM=...)."""
    folder = unpack_run(args.archive, args.into)
    return config_from(args, folder), f"Unpacked: {folder}\nStart from it: make lab FROM={folder}"


def cmd_teaching(args):
    """TEACHING.md, the teacher's guide, from the newest `make bench` results with a course part (or --bench) and the
    course run they timed: each notebook's wall time, what to show live, the number to predict, the usual failure and
    its fix, and a 90-minute and a half-day plan computed from those times."""
    figures = read_figures(args.bench)
    path = write_guide(figures, args.output)
    return config_from(args, None), (f"Teacher's guide: {path} (from {figures['bench_file']} and "
                                     f"{figures['course_run']})")


def cmd_publish(args):
    """The executed notebooks of a real run (--run RUN: a course run; --solutions SOL: a `make solutions` run) copied
    into notebooks/ with their outputs cleaned and stamped (what `make publish` does): a reader sees every table, plot
    and verdict without running anything."""
    if not (args.run or args.solutions):
        raise PublishError("Give the run to publish: make publish RUN=runs/<timestamp>-workshop (and SOLUTIONS= a "
                           "make solutions run).")
    written = [*(publish(args.run, course_notebooks()) if args.run else []),
               *(publish(args.solutions, solution_notebooks()) if args.solutions else [])]
    return config_from(args, None), "\n".join(f"Published: {path.relative_to(ROOT)} ({path.stat().st_size / 1e3:.0f} kB)"
                                               for path in written)


def cmd_book(args):
    """The course site (what `make book` does): static HTML from the committed executed notebooks, the README,
    TEACHING.md and docs/, built offline without running anything. Host the folder on any static file server."""
    start = build_book(args.output)
    return config_from(args, None), f"Site: {start} (open it in a browser, or serve {args.output} with any web server)"


def cmd_prepare(args):
    """A set-up step that `make setup` runs once: llama.cpp's converter, the embedded base model, the tiny model."""
    cfg = config_from(args, args.run_dir)
    return cfg, f"{args.step}: {SETUP_STEPS[args.step](cfg)}"


SETUP_STEPS = {"converter": prepare_converter, "base-model": prepare_embedded_model, "tiny-model": prepare_tiny_model}
COMMANDS = {"course": cmd_course, "solutions": cmd_solutions, "data": cmd_data, "ablation": cmd_ablation,
            "train": cmd_train, "export": cmd_export, "compare": cmd_compare, "alternatives": cmd_alternatives, "distill": cmd_distill,
            "report": cmd_report, "evaluate": cmd_evaluate, "classify": cmd_classify, "serve": cmd_serve, "demo": cmd_demo,
            "bench": cmd_bench, "pack": cmd_pack, "unpack": cmd_unpack, "teaching": cmd_teaching, "prepare": cmd_prepare,
            "publish": cmd_publish, "book": cmd_book}
RUN_COMMANDS = ("data", "ablation", "train", "export", "compare", "alternatives", "distill")  # they fill a run folder


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
            p.add_argument("--engine", choices=ENGINES, default="local",
                           help="local: this process (default); ray: Ray Data, here or on a cluster (the "
                                "'distributed' extra), the same output")
            p.add_argument("--address", help="with --engine ray: a running Ray cluster to join ('auto', or "
                                             "ray://host:10001; default: start a local Ray)")
            p.add_argument("--workers", type=int, help="with --engine ray: model copies (default: one per CPU)")
        if name in ("course", "solutions"):
            p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 02 (default: all)")
        if name == "bench":
            p.add_argument("--steps", type=int, default=8, help="training steps to time (after 2 warm-up steps)")
            p.add_argument("--parts", nargs="*", default=list(BENCH_PARTS), choices=BENCH_PARTS,
                           help="what to measure (default: all; 'course' runs the course with its memory sampled, "
                                "the other parts read that run or --run-dir)")
            p.add_argument("--seeds", nargs="*", type=int, default=[42, 43, 44],
                           help="training seeds of the 'seeds' and 'deep' parts, all on one split (default: 42 43 44)")
            p.add_argument("--resume", metavar="FILE", help="a runs/bench/bench-*.json of a stopped benchmark: measure "
                           "only the parts it had not finished, into the same file")
        if name == "demo":
            p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default: 7860)")
        if name == "prepare":
            p.add_argument("step", choices=SETUP_STEPS)
        if name == "teaching":
            p.add_argument("--bench", type=Path, help="a runs/bench/bench-*.json with a course part "
                                                      "(default: the newest)")
            p.add_argument("--output", type=Path, default=ROOT / "TEACHING.md", help="default: TEACHING.md")
        if name == "publish":
            p.add_argument("--run", type=Path, help="a finished course run of the workshop profile (runs/<timestamp>-workshop)")
            p.add_argument("--solutions", type=Path, help="a finished `make solutions` run")
        if name == "book":
            p.add_argument("--output", type=Path, default=SITE, help="the site's folder (default: runs/book)")
        if name == "pack":
            p.add_argument("run", type=Path, help="a finished run folder, e.g. runs/<timestamp>-workshop")
            p.add_argument("--output", type=Path, help="default: <run folder>.tar beside it")
        if name == "unpack":
            p.add_argument("archive", type=Path, help="a .tar written by `python -m helpers pack`")
            p.add_argument("--into", type=Path, default=ROOT / "runs", help="the folder to unpack under (default: runs/)")
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
    args = build_parser().parse_args(argv)
    try:
        cfg, message = args.func(args)
    except (BenchError, ClassifyError, DataError, DemoError, FewShotError, GGUFError, KnobError, ModelError,
            PublishError, RunError, ServerError, TeachingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(message)
    if cfg.run_dir and Path(cfg.run_dir).exists() and args.command in RUN_COMMANDS:
        print(f"Run folder: {cfg.run_dir}")
    return 0
