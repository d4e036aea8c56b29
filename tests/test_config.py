import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from helpers.config import LABELS, PROFILES, ROOT, CourseConfig, default_threads, free_cores, make_config


def test_profiles_pick_their_models():
    assert make_config("smoke").model == "embedded:tiny"
    assert make_config("workshop").model == "embedded:smollm2"
    assert make_config("full").model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert make_config().profile == "workshop"


def test_overrides_win_over_the_profile():
    cfg = make_config("smoke", max_steps=7, learning_rate=1e-4)
    assert (cfg.max_steps, cfg.learning_rate, cfg.train_size) == (7, 1e-4, PROFILES["smoke"]["train_size"])


def test_unknown_profile_and_setting_are_named():
    with pytest.raises(ValueError, match="Unknown profile 'fast'.*smoke, workshop, deep, full"):
        make_config("fast")
    with pytest.raises(ValueError, match=r"Unknown setting\(s\) lr\. Valid names: .*learning_rate"):
        make_config("smoke", lr=1e-3)
    with pytest.raises(ValueError, match="decision_rule must be one of auto, offsets, argmax, not 'best'"):
        make_config("smoke", decision_rule="best")
    with pytest.raises(ValueError, match=r"ablation_points \[20, 90\] must be steps from 1 to ablation_steps \(60\)"):
        make_config("workshop", ablation_points=(20, 90))
    assert make_config("workshop", ablation_steps=90).ablation_points == (20, 40, 60)  # scored early, trained longer


def test_run_dir_defaults_to_a_shared_lab_folder(tmp_path):
    assert make_config("smoke").run_dir == ROOT / "runs" / "lab-smoke"
    assert make_config("smoke", run_dir=str(tmp_path)).run_dir == tmp_path
    assert make_config("smoke", run_dir="").run_dir == ROOT / "runs" / "lab-smoke"


def test_threads_default_to_the_free_cores_and_labels_are_sorted(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = CourseConfig()
    assert cfg.threads == free_cores() and 1 <= cfg.threads <= os.cpu_count()
    assert cfg.labels == LABELS == tuple(sorted(LABELS)) and CourseConfig(threads=3).threads == 3


def test_omp_num_threads_where_set_is_the_share_of_the_cores_a_process_takes(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert CourseConfig().threads == default_threads() == 1 and CourseConfig(threads=2).threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: the free cores, as without it
    assert CourseConfig().threads == free_cores()


def test_a_core_kept_busy_by_another_program_is_not_counted_free():
    cores = os.cpu_count()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy = free_cores.__wrapped__(look=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy == 1 if cores <= 2 else busy <= cores - 1


def test_to_dict_is_json_ready():
    data = json.loads(json.dumps(make_config("smoke").to_dict()))
    assert data["labels"] == list(LABELS) and data["cache_dir"].endswith(".cache")


def _pins(lines):
    return {m.group(1).lower(): m.group(2) for line in lines
            if (m := re.match(r"\s*-?\s*([A-Za-z0-9_.\-]+(?:\[[a-z,]+\])?)==([^\s#]+)", line))}


def test_the_distributed_extra_is_pinned_in_its_file_and_read_from_there():
    import tomllib

    extra = _pins((ROOT / "requirements-distributed.txt").read_text().splitlines())
    assert set(extra) == {"ray[data]"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["dynamic"]["optional-dependencies"]["distributed"] == {
        "file": ["requirements-distributed.txt"]}
    assert not set(extra) & set(_pins((ROOT / "requirements.txt").read_text().splitlines())), "pinned in one place"


def test_environment_yml_pins_exactly_what_requirements_txt_pins():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert req, "requirements.txt pins nothing"
    assert _pins(pip_section) == req
    assert all("==" in line for line in (ROOT / "requirements.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")), "every requirement is pinned with =="
