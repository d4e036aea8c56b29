"""One report per run, built from the notebooks' metrics.json files (nothing is re-run): REPORT.md and REPORT.html.

The report is a list of sections, each with prose, tables and figures; the same list renders to Markdown (figures
as PNG files next to it) and to one self-contained HTML file (figures inline). A notebook that failed is named with
its failing cell and error, and everything that did finish is kept.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from helpers import plots
from helpers.runs import ALTERNATIVES, DATA, DISTILLATION, EXPORT, FEWSHOT, MASKING, TRAINING, load_metrics

NOTEBOOK_TITLES = {DATA: "Data", MASKING: "Label masking ablation", TRAINING: "Logged training",
                   EXPORT: "GGUF size, speed and accuracy", FEWSHOT: "Few-shot vs fine-tuned vs classic baselines",
                   ALTERNATIVES: "The practitioner's alternatives, a human ceiling, out of domain",
                   DISTILLATION: "Distillation: the LLM's accuracy at the encoder's cost?"}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def notebook_failure(executed: Path) -> dict | None:
    """{"cell": execution count, "error": "Name: message"} for the first error output of an executed notebook."""
    if not executed.exists():
        return None
    for cell in json.loads(executed.read_text()).get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return {"cell": cell.get("execution_count"), "error": f"{output.get('ename')}: {output.get('evalue')}"}
    return None


def _figure(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _sections(run_dir: Path, metrics: dict) -> list[dict]:
    sections = []
    first = next(iter(metrics.values()), {})
    run_rows = [{"notebook": name, "wall seconds": m.get("wall_seconds"), "status": "done"} for name, m in metrics.items()]
    for executed in sorted(Path(run_dir).glob("*/*.ipynb")):
        failure = notebook_failure(executed)
        if failure:
            row = next((r for r in run_rows if r["notebook"] == executed.stem), None)
            text = f"FAILED in cell [{failure['cell']}]: {failure['error']}"
            if row:
                row["status"] = text
            else:
                run_rows.append({"notebook": executed.stem, "wall seconds": None, "status": text})
    config = first.get("config", {})
    seconds = [r["wall seconds"] for r in run_rows if r["wall seconds"] is not None]
    sections.append({"title": "Run", "text": [
        f"Run folder `{Path(run_dir).name}`; profile `{config.get('profile')}`, model `{config.get('model')}`, data "
        f"`{config.get('dataset')}`, seed {config.get('seed')}, {config.get('threads')} threads.",
        f"Wall time of the {len(seconds)} finished notebooks: {sum(seconds) / 60:.1f} min in all.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in first.get("versions", {}).items())],
        "tables": [run_rows], "figures": []})
    if m := metrics.get(DATA):
        sections.append({"title": NOTEBOOK_TITLES[DATA], "text": [
            f"{m['rows']} labelled rows from {m['groups']} groups; class balance {m['class_balance']}; split sizes "
            f"{m['split_sizes']}; {m['conflicting_texts']} texts with conflicting labels.", *_shortened(m)],
            "tables": [m["split_report"]] if m.get("split_report") else [],
            "figures": [("class_balance", plots.plot_class_balance(m["split_balance"]))]})
    if m := metrics.get(MASKING):
        rows = [{"run": arm, "accuracy": r["accuracy"], "macro-F1": r["macro_f1"], "steps": r["steps"],
                 "train s": r["train_seconds"]} for arm, r in m["ablation"].items()]
        curves = {arm: r["eval_curve"] for arm, r in m["ablation"].items() if r.get("eval_curve")}
        sections.append({"title": NOTEBOOK_TITLES[MASKING], "text": [m["verdict"]] + ([m["curve"]] if "curve" in m
                                                                                         else []), "tables": [rows],
                         "figures": [("ablation_loss", plots.plot_loss_curves(
                             {arm: r["loss_history"] for arm, r in m["ablation"].items()}))] +
                         ([("ablation_eval_curve", plots.plot_loss_curves(curves, "Eval macro-F1 along training",
                                                                          "eval macro-F1"))] if curves else [])})
    if m := metrics.get(TRAINING):
        # The notebook records more than the `train` command (no zero-shot row, no diagnosis): show what is there.
        rows = [{"model": name, "accuracy": m[key]["accuracy"], "macro-F1": m[key]["macro_f1"],
                 "invalid": m[key]["invalid_rate"], "reviews/s": m[key]["reviews_per_second"]}
                for name, key in (("zero-shot base", "zero_shot"), ("fine-tuned (scoring)", "fine_tuned"),
                                  ("fine-tuned (generation)", "fine_tuned_generation")) if key in m]
        text = [f"Trained in {m['train_seconds']:.0f} s."
                + (f" Diagnosis: {' '.join(m['diagnosis']['advice'])}" if "diagnosis" in m else "")] + ([m["verdict"]] if m.get("verdict") else [])
        if "calibration_ece" in m:
            text.append("Expected calibration error: " + ", ".join(f"{k} {v:.3f}" for k, v in m["calibration_ece"].items()))
        per_class = [{"label": label, "precision": s["precision"], "recall": s["recall"], "F1": s["f1"],
                      "support": s["support"]} for label, s in m["fine_tuned"].get("per_class", {}).items()]
        sections.append({"title": NOTEBOOK_TITLES[TRAINING], "text": text, "tables": [rows, per_class],
                         "figures": [("loss_curve", plots.plot_training(m["log_history"])),
                                     ("confusion_finetuned", plots.plot_confusion(m["fine_tuned"]["confusion"],
                                                                                  "fine-tuned (scoring)"))]})
    if m := metrics.get(EXPORT):
        rows = [{"format": r["format"], "size MB": r["size_mb"], "load s": r["load_seconds"],
                 "reviews/s": r["reviews_per_second"], "accuracy": r["accuracy"], "macro-F1": r["macro_f1"],
                 "changed vs HF": r["changed_vs_hf"]} for r in m["formats"]]
        sections.append({"title": NOTEBOOK_TITLES[EXPORT], "text": [m["verdict"]], "tables": [rows],
                         "figures": [("formats", plots.plot_comparison(m["formats"]))]})
    if m := metrics.get(FEWSHOT):
        rows = [{"method": r["method"], "accuracy": r["accuracy"], "macro-F1": r["macro_f1"],
                 "invalid": r["invalid_rate"], "median latency s": r.get("median_latency_s"),
                 "reviews/s": r.get("reviews_per_second"), "$ per 1000": r.get("cost_per_1000_usd"),
                 "size MB": r.get("size_mb")} for r in m["results"]]
        figures = [("methods", plots.plot_comparison(m["results"], [("accuracy", "accuracy"), ("macro_f1", "macro-F1")],
                                                     name_key="method"))]
        sections.append({"title": NOTEBOOK_TITLES[FEWSHOT], "text": [m["verdict"]],
                         "tables": [rows], "figures": figures})
    if m := metrics.get(ALTERNATIVES):
        sections.append(_alternatives_section(m))
    if m := metrics.get(DISTILLATION):
        sections.append(_distillation_section(m))
    return sections


def _method_rows(rows: list[dict]) -> list[dict]:
    """A comparison's rows of one domain for a table, best macro-F1 first."""
    return [{"method": r["method"], "kind": r["kind"], "accuracy": r["accuracy"], "macro-F1": r["macro_f1"],
             "train s": r.get("train_seconds"), "reviews/s": r.get("reviews_per_second"), "size MB": r.get("size_mb"),
             "trained on": r.get("n_train")} for r in sorted(rows, key=lambda r: -r["macro_f1"])]


def _distillation_section(m: dict) -> dict:
    """Notebook 06: teacher, students and references per domain, the curve over the pool's size, the verdicts."""
    rows = {r["method"]: r for r in m["results"]["test"]}
    teacher = next(r for r in rows.values() if r["kind"] == "fine-tuned LLM")
    upper = [{"size": m["pool_rows"], "macro_f1": r["macro_f1"]} for r in rows.values() if "upper bound" in r["method"]]
    domains = [d for d in ("test", "ood") if d in m["results"]]
    recorded = m.get("recorded")
    source = ([f"Recorded, not run in this run: the figures of `{recorded['command']}` ({recorded['date'][:10]}, the "
               f"{recorded['profile']} profile, seeds {', '.join(map(str, recorded['seeds']))}); the tables are seed "
               f"{recorded['seeds'][0]}'s."] if recorded else [])
    return {"title": NOTEBOOK_TITLES[DISTILLATION],
            "text": source + list(m["verdict"].values()) + [f"Pool: {m['pool_rows']} rows, {m['teacher_labelled']} labelled by "
                                                   f"the teacher; distill_alpha {m['alpha']}. Tables: in domain"
                                                   + (", out of domain" if "ood" in domains else "") +
                                                   ", then the student's macro-F1 by pool size."],
            "tables": [_method_rows(m["results"][d]) for d in domains] + [m["curve"]],
            "figures": [("distillation_curve", plots.plot_distillation_curve(m["curve"], teacher["macro_f1"], upper))]}


def _alternatives_section(m: dict) -> dict:
    """Notebook 05: the comparison per domain with the human rows, the learning curve, and the computed verdicts."""
    def table(domain):
        rows = _method_rows(m["results"][domain])
        if human := m["human"].get(domain):
            rows.append({"method": f"one human rater vs the others ({human['draws']} draws)", "kind": "human",
                         "accuracy": f"{human['accuracy_mean']:.3f} ± {human['accuracy_sd']:.3f}",
                         "macro-F1": f"{human['macro_f1_mean']:.3f} ± {human['macro_f1_sd']:.3f}"})
        return rows
    domains = [d for d in ("test", "ood") if d in m["results"]]
    figures = [(f"ranked_{d}", plots.plot_ranked(m["results"][d], m["human"].get(d),
                                                 title="in domain" if d == "test" else f"out of domain: {m['ood_dataset']}"))
               for d in domains]
    curve = m.get("learning_curve") or []
    if curve:
        figures.append(("learning_curve_all", plots.plot_learning_curve(curve, m["human"].get("test"))))
    sizes = sorted({p["size"] for p in curve})
    curve_rows = [{"method": method, **{str(s): next((p["macro_f1"] for p in curve if p["method"] == method
                                                      and p["size"] == s), None) for s in sizes}}
                  for method in dict.fromkeys(p["method"] for p in curve)]
    text = list(m["verdict"].values()) + ["Tables: in domain, out of domain (" + str(m.get("ood_dataset")) +
                                          "), then macro-F1 by training size (the learning curve)."]
    return {"title": NOTEBOOK_TITLES[ALTERNATIVES], "text": text,
            "tables": [table(d) for d in domains] + ([curve_rows] if curve_rows else []), "figures": figures}


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _shortened(m: dict) -> list[str]:
    """What the split did to long reviews, from notebook 00's `shortened` (older runs have none)."""
    s = m.get("shortened")
    if not s:
        return []
    cut = {name: r for name, r in s.items() if isinstance(r, dict) and r["shortened"]}
    if not cut:
        return [f"No review was longer than the {s['budget_tokens']} tokens a review may take: none was shortened."]
    return ["Reviews shortened to their first " f"{s['budget_tokens']} tokens: " + "; ".join(
        f"{name} {r['shortened']} of {r['reviews']} (longest {r['longest_tokens']} tokens, {r['tokens_cut']} tokens "
        f"cut in all)" for name, r in cut.items()) + "."]


def build_report(run_dir: Path) -> tuple[Path, Path]:
    """Write REPORT.md (figures in report_figures/) and a self-contained REPORT.html into the run folder."""
    run_dir = Path(run_dir)
    sections = _sections(run_dir, load_metrics(run_dir))
    figures_dir = run_dir / "report_figures"
    figures_dir.mkdir(exist_ok=True)
    md = [f"# Report: {run_dir.name}"]
    body = [f"<h1>Report: {html.escape(run_dir.name)}</h1>"]
    for section in sections:
        md.append(f"\n## {section['title']}\n")
        body.append(f"<h2>{html.escape(section['title'])}</h2>")
        for paragraph in section["text"]:
            md.append(paragraph + "\n")
            body.append(f"<p>{html.escape(paragraph)}</p>")
        for table in section["tables"]:
            md.append(_markdown_table(table) + "\n")
            body.append(_html_table(table))
        for name, fig in section["figures"]:
            png = _figure(fig)
            (figures_dir / f"{name}.png").write_bytes(png)
            md.append(f"![{name}](report_figures/{name}.png)\n")
            body.append(f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    md_path, html_path = run_dir / "REPORT.md", run_dir / "REPORT.html"
    md_path.write_text("\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run_dir.name)}"
                         f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    return md_path, html_path
