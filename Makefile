# Set-up and entry points. Each target creates/uses its own virtual environment (.venv) and
# installs what it needs; torch is pinned to the local CPU wheel (an unpinned torch pulls CUDA).
# `run` installs only what running needs; the test targets add the [test] extra and Chromium.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test test-full install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[test]"
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	touch $(TEST_STAMP)

install: $(STAMP)

# The main job on the default model (shipped with the package: no training first).
run: $(STAMP)
	$(VENV)/bin/longllava ask --ct examples/example_ct.nii.gz --max-slices 8 \
		--question "Is there a lesion in this CT? Answer yes or no." --json

test: $(TEST_STAMP)
	$(PY) -m pytest

# Also the `rebuild` tests: the default model rebuilt from scratch and checked against the shipped
# report's targets (~7 min more on 2 cores).
test-full: $(TEST_STAMP)
	$(PY) -m pytest -m ""
