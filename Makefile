# The commands of the README. Each does every set-up step itself on a fresh machine.
#   make run            install, then run a whole grid on configs/paper.toml
#   make test           install (including Debian's mosquitto), set up Docker without a
#                       registry (make docker-images), then ruff + the test suite
#   make docker-images  as root: Debian's docker.io, docker-compose and debootstrap, a running
#                       dockerd, and the offline base and broker images (scripts/docker_offline.py)
# PRIVGRID_SKIP_DOCKER=1 make test skips the Docker set-up and the Docker tests.
VENV ?= .venv
PYTHON ?= python3
SCENARIO ?= configs/paper.toml
ARGS ?=

.PHONY: run test setup setup-test lint docker-images
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

test: setup-test
	$(VENV)/bin/ruff check .
	@if [ "$${PRIVGRID_SKIP_DOCKER:-0}" = 1 ]; then \
	  echo "make test: PRIVGRID_SKIP_DOCKER=1: no Docker set-up, docker tests skipped"; \
	else \
	  $(MAKE) --no-print-directory docker-images PYTHON=$(VENV)/bin/python; \
	fi
	$(VENV)/bin/pytest $(ARGS)
