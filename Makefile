# The two commands of the README. Both do every set-up step themselves on a fresh machine.
#   make run    install, then run a whole grid on configs/paper.toml
#   make test   install (including Debian's mosquitto), then ruff + the test suite
VENV ?= .venv
SCENARIO ?= configs/paper.toml
ARGS ?=

.PHONY: run test setup setup-test lint
setup:
	VENV=$(VENV) scripts/setup.sh

setup-test:
	VENV=$(VENV) scripts/setup.sh --system-packages

run: setup
	$(VENV)/bin/privgrid run $(SCENARIO) $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

test: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(ARGS)
