# Two entry points: `make report` (the cpu preset sweep and the rendered report) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKERS ?= 2
# The local GLUE directory beside the checkout, when there is one (else data come from the Hub).
GLUE_DIR ?= $(wildcard $(abspath ../shared/glue))
ifneq ($(GLUE_DIR),)
export LORA_NB_GLUE_DIR ?= $(GLUE_DIR)
endif

.PHONY: test report env lab clean

env: $(STAMP)

# A virtual environment with the project and its test extra; rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

report: $(STAMP)
	$(PY) -m lora_nb.sweep --preset cpu --runs-dir runs/cpu --workers $(WORKERS) --report

lab: $(STAMP)
	$(PY) -m pip install -q -e '.[test,lab]'
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV)
