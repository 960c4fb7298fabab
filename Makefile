# Everyday commands; each assumes the virtual environment from the README is active.
PYTHON ?= python

.PHONY: install test test-fast demo summary paper-table clean

install:            ## editable install with the test and cluster extras
	$(PYTHON) -m pip install -e ".[dev]"

test:               ## the full suite, slow end-to-end tests included, as CI runs it
	$(PYTHON) -m pytest -m "slow or not slow" --durations=25

test-fast:          ## the default suite: everything but the tests marked slow (about 4 minutes on 2 cores)
	$(PYTHON) -m pytest

demo:               ## ResNet-20 without and with C3 on the bundled digits, on the CPU, then a comparison table
	$(PYTHON) -m c3exp demo

summary:            ## per-stage parameters and MACs of a config, e.g. make summary ARGS="model=resnet110 attn=c3"
	$(PYTHON) -m c3exp summary $(ARGS)

paper-table:        ## Table 1 of the paper, our counts beside the paper's
	$(PYTHON) -m c3exp summary table=paper

clean:
	rm -rf outputs multirun .pytest_cache
