# One image for every privgrid role (prosumer agents, Line Manager, Market Operator, CLI).
#
#   docker build -t privgrid .
#   docker run --rm privgrid solve configs/paper.toml --json
#
# BASE_IMAGE must be a Debian-like image with python3 (>= 3.11) and the venv module; the default
# is the official Python image. Without a registry, `sudo make docker-images`
# (scripts/docker_offline.py) builds a Debian stand-in and prints PRIVGRID_BASE_IMAGE for here.
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
# A venv works the same on the official image (python in /usr/local) and on Debian's python3
# (where a system-wide pip install is refused by PEP 668).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---------------------------------------------------------------------------------------------
# Only the dependency list (with the dashboard extra: compose files run the live dashboard on
# this image too), not the whole pyproject.toml, feeds the expensive install layer: a
# change to the version, the ruff or pytest settings keeps the cached dependencies.
FROM base AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb')); \
reqs = p['build-system']['requires'] + p['project']['dependencies'] \
+ p['project']['optional-dependencies']['dashboard']; \
open('/tmp/requirements.txt', 'w').write('\n'.join(reqs) + '\n')"

# ---------------------------------------------------------------------------------------------
FROM base AS runtime
# Optional: a private package index (unset means PyPI). Build args are not kept in the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST

RUN python3 -m venv "$VIRTUAL_ENV" \
    && python -m pip install --upgrade pip \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin privgrid

# Dependencies (numpy, scipy, cvxpy, gmpy2, ...): the slow layer, cached until the list changes.
COPY --from=requirements /tmp/requirements.txt /tmp/requirements.txt
RUN python -m pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Matplotlib builds its font cache on first import: seconds of CPU in every container, in the
# middle of a run (enough, with nine containers on two cores, to miss MQTT keepalives). Build
# it once here, in a folder any uid may use (compose files may run the image as another uid).
ENV MPLCONFIGDIR=/opt/matplotlib
RUN mkdir -m 1777 "$MPLCONFIGDIR" \
    && python -c "import matplotlib.font_manager" \
    && chmod -R a+rX "$MPLCONFIGDIR"

# The project itself: a cheap layer rebuilt on every source change. Installed without build
# isolation or dependencies so that this step needs no network.
WORKDIR /app
COPY . /app
RUN python -m pip install --no-deps --no-build-isolation /app \
    && python -m pip check \
    && rm -rf /app/build /app/*.egg-info \
    && mkdir -p /app/runs \
    && chown privgrid:privgrid /app/runs

# Numeric so that runAsNonRoot-style checks can verify it without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["privgrid"]
CMD ["--help"]
