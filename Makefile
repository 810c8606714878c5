# Set-up and entry points. Each target creates/uses its own virtual environment (.venv) and
# installs what it needs; torch is pinned to the local CPU wheel (an unpinned torch pulls CUDA).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default model.
run: $(STAMP)
	$(VENV)/bin/longllava ask --ct tests/fixtures/ct/example_ct.nii.gz --max-slices 8 \
		--question "Is there a lesion in this CT? Answer yes or no." --json

test: $(STAMP)
	$(PY) -m pytest
