import json

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from helpers.report import build_report, notebook_failure
from helpers.runs import record_metrics


def fake_run(cfg):
    record_metrics(cfg, "00_setup_and_data", rows=10, groups=4, class_balance={"negative": 3, "neutral": 3, "positive": 4},
                   split_sizes={"train": 6, "eval": 2, "test": 2}, conflicting_texts=1,
                   split_balance={"train": {"negative": 2, "neutral": 2, "positive": 2},
                                  "test": {"negative": 1, "neutral": 0, "positive": 1}}, wall_seconds=7.0)
    arm = {"accuracy": 0.6, "macro_f1": 0.55, "steps": 3, "train_seconds": 1.0, "loss_history": [(1, 2.0), (2, 1.0)]}
    record_metrics(cfg, "01_label_masking", ablation={"masked": arm, "unmasked": {**arm, "accuracy": 0.5}},
                   verdict="masking helped (test verdict)")
    nb = new_notebook(cells=[new_code_cell("1/0", execution_count=4, outputs=[
        new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])])])
    (cfg.run_dir / "02_logged_training").mkdir(parents=True)
    nbformat.write(nb, cfg.run_dir / "02_logged_training" / "02_logged_training.ipynb")


def test_report_has_each_finished_section_and_names_the_failed_cell(cfg):
    fake_run(cfg)
    md_path, html_path = build_report(cfg.run_dir)
    md = md_path.read_text()
    assert "## Data" in md and "## Label masking ablation" in md and "## Logged training" not in md
    assert "Wall time of the 1 finished notebooks: 0.1 min in all." in md  # 00's 7 s; 01 recorded none
    assert "masking helped (test verdict)" in md and "| masked | 0.600 | 0.550 | 3 | 1.000 |" in md
    assert "| 02_logged_training |  | FAILED in cell [4]: ZeroDivisionError: division by zero |" in md
    assert (cfg.run_dir / "report_figures" / "ablation_loss.png").read_bytes()[:4] == b"\x89PNG"
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 2 and "FAILED in cell [4]" in page and "src=\"report_figures" not in page


def test_notebook_failure_is_none_for_a_clean_or_missing_notebook(tmp_path):
    assert notebook_failure(tmp_path / "missing.ipynb") is None
    path = tmp_path / "ok.ipynb"
    path.write_text(json.dumps(new_notebook(cells=[new_code_cell("1", outputs=[])])))
    assert notebook_failure(path) is None


def test_report_shows_the_alternatives_with_the_human_row_and_the_curve(cfg):
    row = {"method": "MiniLM fine-tuned end to end", "kind": "encoder", "accuracy": 0.7, "macro_f1": 0.68,
           "train_seconds": 75.0, "reviews_per_second": 300.0, "size_mb": 90.9, "n_train": 480}
    human = {"n": 240, "draws": 200, "accuracy_mean": 0.76, "accuracy_sd": 0.02, "macro_f1_mean": 0.747,
             "macro_f1_sd": 0.021}
    record_metrics(cfg, "05_practitioners_alternatives", ood_dataset="hutto:tweets",
                   results={"test": [row], "ood": [{**row, "macro_f1": 0.5}]}, human={"test": human},
                   learning_curve=[{"method": "TF-IDF", "size": 48, "macro_f1": 0.45},
                                   {"method": "TF-IDF", "size": 480, "macro_f1": 0.55}],
                   verdict={"advice": "computed advice (test)"})
    md = build_report(cfg.run_dir)[0].read_text()
    assert "## The practitioner's alternatives, a human ceiling, out of domain" in md and "computed advice (test)" in md
    assert "| MiniLM fine-tuned end to end | encoder | 0.700 | 0.680 | 75.000 | 300 | 90.900 | 480 |" in md
    assert "| one human rater vs the others (200 draws) | human | 0.760 ± 0.020 | 0.747 ± 0.021 |" in md
    assert "| TF-IDF | 0.450 | 0.550 |" in md
    assert {p.name for p in (cfg.run_dir / "report_figures").glob("*.png")} == {"ranked_test.png", "ranked_ood.png",
                                                                             "learning_curve_all.png"}


def test_report_works_on_a_run_made_by_the_train_command(cfg):
    """`python -m helpers train` records less than notebook 02 (no zero-shot row, no diagnosis)."""
    scores = {"accuracy": 0.7, "macro_f1": 0.69, "invalid_rate": 0.0, "reviews_per_second": 20.0,
              "confusion": {"labels": ["negative", "neutral", "positive", "invalid"],
                            "matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}}
    record_metrics(cfg, "02_logged_training", fine_tuned=scores, train_seconds=12.0,
                   log_history=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    md = build_report(cfg.run_dir)[0].read_text()
    assert "## Logged training" in md and "Trained in 12 s." in md
    assert "| fine-tuned (scoring) | 0.700 | 0.690 | 0.000 | 20.000 |" in md and "zero-shot" not in md


def test_the_data_section_says_what_was_shortened_and_what_each_class_got(cfg):
    per_class = [{"label": "neutral", "available": 30, "train": 10, "train_short": 6, "eval": 2, "eval_short": 2,
                  "test": 5, "test_short": 3, "train_distinct": 10}]
    shortened = {"budget_tokens": 90, "train": {"reviews": 48, "shortened": 2, "longest_tokens": 1400, "tokens_cut": 1500},
                 "eval": {"reviews": 12, "shortened": 0, "longest_tokens": 40, "tokens_cut": 0}}
    record_metrics(cfg, "00_setup_and_data", rows=10, groups=4, class_balance={}, split_sizes={}, conflicting_texts=0,
                   split_balance={"train": {"neutral": 10}}, split_report=per_class, shortened=shortened)
    md = build_report(cfg.run_dir)[0].read_text()
    assert ("Reviews shortened to their first 90 tokens: train 2 of 48 (longest 1400 tokens, 1500 tokens cut in all)."
            in md)
    assert "| neutral | 30 | 10 | 6 | 2 | 2 | 5 | 3 | 10 |" in md
