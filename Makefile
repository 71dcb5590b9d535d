# Each target creates or refreshes .venv (pip, from pyproject.toml) before doing its job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BUDGET ?= default

.PHONY: venv run test lab course pretrain bench student

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

## make run: pretrain the backbones if needed, train + evaluate the LLaVA baseline, print the accuracy table
run: venv
	$(BIN)/vlmlab run --arch llava --budget $(BUDGET)

## make test: the full test suite (smoke budget)
test: venv
	$(BIN)/python -m pytest -q

## make lab: JupyterLab on the notebooks
lab: venv
	$(BIN)/jupyter lab notebooks

## make course: execute the numbered notebooks at BUDGET, render papermill_runs/course-$(BUDGET)/index.html
course: venv
	$(BIN)/vlmlab course --budget $(BUDGET)

## make student: student copies (solutions removed) and autograders of the numbered notebooks, in dist/<notebook>/
student: venv
	$(BIN)/python -m vlmlab.teaching --out dist

pretrain: venv
	$(BIN)/vlmlab pretrain --budget $(BUDGET)

bench: venv
	$(BIN)/python benchmarks/run_all.py
