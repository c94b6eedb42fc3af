# The commands of the README. Each does every set-up step itself on a fresh machine.
#   make run            install, then run a whole grid on configs/paper.toml
#   make check          install, then ruff + the type check + the fast tier of the tests
#                       (pytest -m fast: no broker, no grid, no Docker, no browser; tests/tiers.py)
#                       on two pytest-xdist workers (WORKERS=2): the everyday check, minutes
#   make test           install (including Debian's mosquitto), set up Docker without a
#                       registry (make docker-images), then ruff + the type check + every test
#                       (what CI runs)
#   make typecheck      mypy privgrid (pyproject.toml's [tool.mypy]; stubs/ has phe's and msgpack's)
#   make docker-images  as root: Debian's docker.io, docker-compose and debootstrap, a running
#                       dockerd, and the offline base and broker images (scripts/docker_offline.py)
# PRIVGRID_SKIP_DOCKER=1 make test skips the Docker set-up and the Docker tests.
VENV ?= .venv
PYTHON ?= python3
SCENARIO ?= configs/paper.toml
ARGS ?=
WORKERS ?= 2

.PHONY: run check test setup setup-test lint typecheck mypy docker-images
setup:
	VENV=$(VENV) scripts/setup.sh

setup-test:
	VENV=$(VENV) scripts/setup.sh --system-packages

docker-images:
	$(PYTHON) scripts/docker_offline.py

run: setup
	$(VENV)/bin/privgrid run $(SCENARIO) $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	@$(MAKE) --no-print-directory mypy

# Without set-up: the step that make check and make test share.
mypy:
	@if grep -q '^\[tool\.mypy\]' pyproject.toml; then \
	  echo "$(VENV)/bin/python -m mypy privgrid"; $(VENV)/bin/python -m mypy privgrid; \
	else \
	  echo "make typecheck: no [tool.mypy] section in pyproject.toml yet: skipped"; \
	fi

check: setup
	$(VENV)/bin/ruff check .
	@$(MAKE) --no-print-directory mypy
	$(VENV)/bin/pytest -m fast -n $(WORKERS) $(ARGS)

test: setup-test
	$(VENV)/bin/ruff check .
	@$(MAKE) --no-print-directory mypy
	@if [ "$${PRIVGRID_SKIP_DOCKER:-0}" = 1 ]; then \
	  echo "make test: PRIVGRID_SKIP_DOCKER=1: no Docker set-up, docker tests skipped"; \
	else \
	  $(MAKE) --no-print-directory docker-images PYTHON=$(VENV)/bin/python; \
	fi
	$(VENV)/bin/pytest $(ARGS)
