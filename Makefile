# Two entry points: `make report` (the cpu preset sweep and the rendered report) and `make test`
# (the fast tests; `make test-slow` runs the slow ones: real training runs, notebooks, sweeps).
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

.PHONY: test test-slow report reference env lab clean

env: $(STAMP)

# A virtual environment with the project and its test extra; rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -m slow $(PYTEST_ARGS)

report: $(STAMP)
	$(PY) -m lora_nb.sweep --preset cpu --runs-dir runs/cpu --workers $(WORKERS) --report

# The committed reference run: restores the committed records, runs only what is missing
# (resumable over several sittings), renders report/ and figures/.
reference: $(STAMP)
	$(PY) -m lora_nb.sweep --preset reference --runs-dir runs/reference --workers $(WORKERS) \
		--resume-from report/records --report

# JupyterLab and ipywidgets (the `lab` extra) beside the test extra; installed again only when
# pyproject.toml changes.
LAB_STAMP := $(VENV)/.lab-installed
# Options for `jupyter lab`, e.g. make lab LAB_ARGS="--port 8890 --no-browser".
LAB_ARGS ?=
# Jupyter refuses to start as root (containers, fresh cloud machines) unless told to.
LAB_ROOT = $(if $(filter 0,$(shell id -u)),--allow-root)

$(LAB_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[test,lab]'
	touch $(LAB_STAMP)

# Serves the repository root (README, report/, runs/ and the notebooks a click apart), opened on notebooks/.
lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(LAB_ROOT) $(LAB_ARGS)

clean:
	rm -rf $(VENV)
