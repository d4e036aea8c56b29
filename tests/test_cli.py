import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.cli import COMMANDS, build_parser, config_from, knob_overrides
from helpers.config import ROOT, CourseConfig
from helpers.model import resolve_model
from helpers.runs import RunLayout

pytestmark = pytest.mark.slow  # notebooks, servers, llama.cpp or course runs: left out of make test-fast


def run_cli(*args, timeout=600, runner=(sys.executable, "-m", "helpers")):
    return subprocess.run([*runner, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_every_command_has_help_that_lists_every_knob_with_its_default():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(COMMANDS)
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for knob in ("--max-steps", "--learning-rate", "--lora-r", "--system-prompt", "--seed", "--threads"):
            assert knob in text, (name, knob)
        assert "default: 180 (smoke: 4, deep: 514, full: 600)" in text  # max_steps: its default and each profile's value
        assert "--group-by-length | --no-group-by-length" in text


def test_help_runs_as_a_module():
    result = run_cli("--help")
    assert result.returncode == 0 and "classify" in result.stdout and "serve" in result.stdout
    result = run_cli("classify", "--help")
    assert result.returncode == 0 and "--trained" in result.stdout and "--text-column" in result.stdout


def test_only_the_options_given_override_the_profile(tmp_path):
    args = build_parser().parse_args(["train", "--profile", "smoke", "--max-steps", "7", "--sweep-learning-rates",
                                      "1e-4", "2e-4", "--no-group-by-length", "--system-prompt", "Say it."])
    cfg = config_from(args, tmp_path)
    assert (cfg.max_steps, cfg.sweep_learning_rates, cfg.group_by_length) == (7, (1e-4, 2e-4), False)
    assert cfg.system_prompt == "Say it." and cfg.train_size == 48 and cfg.model == "embedded:tiny"  # smoke's own
    assert cfg.run_dir == tmp_path
    default = config_from(build_parser().parse_args(["train"]), tmp_path)
    assert default.max_steps == CourseConfig().max_steps and default.profile == "workshop"


def test_a_config_file_sets_knobs_and_options_win_over_it(tmp_path):
    (tmp_path / "my.json").write_text(json.dumps({"max_steps": 9, "labels": ["negative", "positive"], "lora_r": 2}))
    (tmp_path / "my.yaml").write_text("max_steps: 11\nsystem_prompt: Say it.\n")
    args = build_parser().parse_args(["train", "--profile", "smoke", "--config", str(tmp_path / "my.json"),
                                      "--lora-r", "8"])
    cfg = config_from(args, tmp_path)
    assert (cfg.max_steps, cfg.labels, cfg.lora_r, cfg.train_size) == (9, ("negative", "positive"), 8, 48)
    assert knob_overrides(args) == {"max_steps": 9, "labels": ["negative", "positive"], "lora_r": 8}
    yaml_cfg = config_from(build_parser().parse_args(["data", "--config", str(tmp_path / "my.yaml")]), tmp_path)
    assert (yaml_cfg.max_steps, yaml_cfg.system_prompt) == (11, "Say it.")


def test_a_bad_config_file_is_one_clear_message(tmp_path):
    (tmp_path / "typo.json").write_text('{"max_step": 9}')
    (tmp_path / "broken.json").write_text('{"max_steps": ')
    (tmp_path / "list.yaml").write_text("- max_steps\n")
    for name, expected in (("typo.json", "unknown setting(s) max_step. Valid names:"), ("broken.json", "not valid JSON"),
                           ("list.yaml", "must hold a mapping"), ("none.json", "no such file")):
        result = run_cli("data", "--profile", "smoke", "--config", tmp_path / name, "--run-dir", tmp_path / "run")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.startswith("error: --config") or result.stderr.startswith("error: " + str(tmp_path))
        assert expected in result.stderr, result.stderr


def test_the_data_command_records_notebook_00_s_metrics(tmp_path):
    result = run_cli("data", "--profile", "smoke", "--run-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "00_setup_and_data" / "metrics.json").read_text())
    assert metrics["split_sizes"]["test"] == 24 and sum(metrics["split_balance"]["train"].values()) == 48
    assert f"Run folder: {tmp_path}" in result.stdout


def test_classify_labels_a_csv_and_a_bad_file_is_one_clear_message(tmp_path):
    reviews = tmp_path / "mine.csv"
    reviews.write_text("id,text\n1,Great battery.\n2,\n3,Broke after a day.\n")
    result = run_cli("classify", reviews, "--profile", "smoke", "--trained", resolve_model_dir())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 rows labelled" in result.stdout and "1 bad rows" in result.stdout
    rows = list(csv.DictReader((tmp_path / "mine.labelled.csv").open()))
    assert [r["id"] for r in rows] == ["1", "3"]
    assert all(abs(sum(float(r[f"p_{lab}"]) for lab in ("negative", "neutral", "positive")) - 1) < 1e-3 for r in rows)
    result = run_cli("classify", reviews, "--profile", "smoke", "--trained", resolve_model_dir(),
                     "--text-column", "review")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and "'review'" in result.stderr and "id, text" in result.stderr


def resolve_model_dir():
    from helpers.config import make_config

    return resolve_model(make_config("smoke"))


def documented_command(prefix: str, page: Path = ROOT / "docs" / "tools.md") -> list[str]:
    """The command line that starts with `prefix` on the docs page that shows it (`page`), split into words."""
    lines = [line for line in page.read_text().splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"{page.relative_to(ROOT)} should show exactly one command starting with {prefix!r}"
    return lines[0].split()


def test_the_docs_torchrun_command_trains_with_two_processes(tmp_path):
    command = documented_command(".venv/bin/torchrun --nproc_per_node 2")
    assert command[command.index("--profile") + 1] == "smoke"  # a tiny model: CPU DDP in seconds
    command[0] = str(Path(sys.executable).parent / "torchrun")  # installed with torch, beside this Python
    command[command.index("--run-dir") + 1] = str(tmp_path)
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "process 1 of 2 done" in result.stdout
    metrics = json.loads((tmp_path / "02_logged_training" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    rows = [json.loads(line) for line in (tmp_path / "02_logged_training" / "train_log.jsonl").open()]
    steps = metrics["config"]["max_steps"]
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, steps + 1))  # one log: the first process's

    from peft import PeftModel

    from helpers.config import make_config
    from helpers.model import load_model

    base, _ = load_model(make_config("smoke"))
    model = PeftModel.from_pretrained(base, tmp_path / "02_logged_training" / "adapter")
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_serve_answers_the_openai_client_on_localhost_and_stops_on_sigterm(tmp_path):
    import signal
    import time

    from openai import OpenAI

    from helpers.config import make_config
    from helpers.serve import free_port, port_is_taken

    cfg = make_config("smoke", run_dir=tmp_path)
    port = free_port()
    # an HF folder, exported to a Q4_K_M GGUF once (into the cache) whose template defaults to the course's prompt
    server = subprocess.Popen([sys.executable, "-m", "helpers", "serve", "--profile", "smoke", "--trained",
                               resolve_model(cfg), "--port", str(port)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        banner = server.stdout.readline()  # printed once the server answers
        assert f"http://127.0.0.1:{port}/v1" in banner and "model-Q4_K_M.gguf" in banner, banner
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local")
        user = {"role": "user", "content": "Great battery."}
        bare, course = (client.chat.completions.create(model="sentiment", max_tokens=2, temperature=0, messages=m)
                        for m in ([user], [{"role": "system", "content": cfg.system_prompt}, user]))
        assert bare.model == "sentiment" and bare.usage.completion_tokens <= 2
        # no system turn in the request: the course's own, so the same prompt and the same answer
        assert bare.usage.prompt_tokens == course.usage.prompt_tokens
        assert bare.choices[0].message.content == course.choices[0].message.content
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    deadline = time.time() + 10
    while port_is_taken(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not port_is_taken(port)  # the llama.cpp server went down with the command


def own_file(folder: Path, case: str) -> tuple[Path, list[str]]:
    """A labelled CSV the course was not tuned on, made from the Amazon snippets (text, label, group), and the
    extra options it needs. Two files carry the four things a learner's own file brings: two classes with six reviews
    of ~5,000 characters among short ones; five classes (star counts from the mean human rating, -4..4) of which
    one is rare (14 rows, 8 %), short of its training share (16 of 80 rows) and filled by oversampling, the default.
    The two-class file also has 20 rows with an empty label: notebook 06's pool, which no split may hold."""
    from helpers.data import load_amazon

    df = load_amazon().sample(frac=1.0, random_state=0)
    if case == "two-class":
        df, extra = df[df["label"] != "neutral"].head(120).copy(), ["--labels", "negative", "positive"]
        long = df.index[:6]
        df.loc[long, "text"] = [t + " " + ("It went on and on about the product. " * 140)[:5000] for t in df.loc[long, "text"]]
        unlabelled = load_amazon().sample(frac=1.0, random_state=1).head(20).assign(label="", group=lambda d: "u" + d["id"])
        df = pd.concat([df, unlabelled[~unlabelled["text"].isin(df["text"])]])
    else:  # five-class
        df = df.assign(label=pd.cut(df["rating"], [-4.1, -2, -0.5, 0.5, 2, 4.1], labels=list("12345")).astype(str))
        df = pd.concat([df[df["label"] == RARE].head(14), df[df["label"] != RARE].groupby("label").head(40)])
        extra = ["--labels", *"12345", "--train-size", "80"]  # oversampling is the default
    path = folder / f"{case}.csv"
    df[["text", "label", "group"]].to_csv(path, index=False)
    return path, extra


RARE = "1"  # the rare class of the five-class file


# Every notebook's twin in the course's order, then the report: what `make course DATA=` runs, minus the notebooks'
# kernels and prose (the notebooks themselves run in test_notebooks.py).
def own_metrics(run: Path, notebook: str) -> dict | None:
    return RunLayout(run).metrics(notebook)


OWN_STEPS = ("data", "ablation", "train", "export", "compare", "alternatives", "distill", "report")


@pytest.fixture(scope="module")
def own_course(tmp_path_factory):
    """Each own file through every step of the course, by the command twins of the notebooks, called in this process
    (`helpers.cli.main`, as `python -m helpers` calls it), into one run folder; then its report. Run once per module
    and read by every test of that file: {case: run folder}."""
    from helpers.cli import main

    runs = {}

    def run(case):
        if case not in runs:
            folder = tmp_path_factory.mktemp(case)
            path, extra = own_file(folder, case)
            common = ["--profile", "smoke", "--run-dir", str(folder / "run")]
            knobs = ["--dataset", str(path), "--response-cache", str(folder / "responses.jsonl"), *extra]
            for step in OWN_STEPS:
                assert main([step, *common, *([] if step == "report" else knobs)]) == 0, f"{step} failed on {case}"
            runs[case] = folder / "run"
        return runs[case]
    return run


def check_report_and_model_cards(run: Path, labels: list[str]) -> None:
    """A run of every step on an own file: every notebook's metrics and its report, the labels through the split and
    the trained model, the model cards, and the GGUF Q4_K_M export answering with those labels only."""
    from helpers.runs import course_notebooks

    assert [nb.stem for nb in course_notebooks() if own_metrics(run, nb.stem) is None] == []
    report = (run / "REPORT.md").read_text()
    assert "FAILED" not in report and "## Logged training" in report
    data, trained = own_metrics(run, "00_setup_and_data"), own_metrics(run, "02_logged_training")
    assert data["config"]["labels"] == labels
    assert list(trained["fine_tuned"]["per_class"]) == labels and [r["label"] for r in data["split_report"]] == labels
    for folder in ("02_logged_training/adapter", "02_logged_training/merged", "03_gguf_quantization"):
        assert (run / folder / "README.md").read_text().startswith("---\nbase_model:")
    exported = own_metrics(run, "03_gguf_quantization")
    assert any(r["format"] == "GGUF Q4_K_M" and r["invalid_rate"] == 0 for r in exported["formats"])


# One class per own file: pytest-xdist (--dist loadscope) runs a class's tests on one worker, beside the other file's.
class TestYourOwnTwoClassFileWithLongReviews:
    def test_every_step_runs_on_it_to_a_report_and_model_cards(self, own_course):
        check_report_and_model_cards(own_course("two-class"), ["negative", "positive"])

    def test_its_rows_with_an_empty_label_are_the_pool_and_no_split_holds_them(self, own_course, tmp_path):
        run = own_course("two-class")
        distilled = own_metrics(run, "06_distillation")
        pool = pd.read_csv(next(p for p in (run / "06_distillation").glob("pool-*.csv") if p.name.count(".") == 1))
        assert distilled["pool_unlabelled"] and distilled["pool_rows"] == len(pool) > 10
        assert distilled["teacher_labelled"] == len(pool)
        data = own_metrics(run, "00_setup_and_data")
        assert data["rows"] == 120 and data["unlabelled_rows"] == len(pool) and "the rows of your file whose label is empty" in (
            run / "06_distillation" / "student" / "README.md").read_text()

    def test_its_long_reviews_are_shortened_and_the_report_says_so(self, own_course):
        run = own_course("two-class")
        data = own_metrics(run, "00_setup_and_data")
        assert sum(r["shortened"] for name, r in data["shortened"].items() if name != "budget_tokens") >= 1
        assert "Reviews shortened to their first" in (run / "REPORT.md").read_text()


class TestYourOwnFiveClassFileWithARareClass:
    def test_every_step_runs_on_it_to_a_report_and_model_cards(self, own_course):
        check_report_and_model_cards(own_course("five-class"), list("12345"))

    def test_its_rare_class_fills_its_training_share_by_oversampling_by_default(self, own_course):
        data = own_metrics(own_course("five-class"), "00_setup_and_data")
        rows = {r["label"]: r for r in data["split_report"]}
        rare, others = rows.pop(RARE), rows.values()
        assert rare["available"] == 14 and all(r["available"] == 40 for r in others)
        assert rare["train"] == max(r["train"] for r in others) and rare["train_distinct"] < rare["train"]


def test_pack_and_unpack_say_in_one_line_what_to_pass(tmp_path, capsys):
    from helpers.cli import main

    assert main(["unpack", str(tmp_path / "nope.tar"), "--into", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Pass the .tar that `python -m helpers pack`" in err
    assert main(["pack", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a finished run folder" in err and "after `make course`" in err
