"""``python -m privgrid.compose exec``: runs one participant's role in its container.

Each participant service starts ``exec lm|mo|agent …``, which reads the broker password from
the mounted secrets file into the broker URL (so no password shows in ``docker inspect``) and
runs ``privgrid …`` as a child process, supervised:

- the other participants finish a little earlier than the MO (it still commits and writes
  the results), so after its child ends ``exec`` keeps the container up — until Compose stops
  it or ``PRIVGRID_LINGER`` seconds pass — and the MO's exit is what ends an
  ``--abort-on-container-exit`` run;
- on a stop request the MO gets ``PRIVGRID_STOP_GRACE`` seconds to finish by itself (e.g. to
  report a participant that died) before the request is passed on.

Apart from the setup step because it runs once per participant, for the whole run, and is
about processes and signals, not files.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import click

from privgrid.compose.common import (
    DEFAULT_LINGER,
    DEFAULT_STOP_GRACE,
    ENV_LINGER,
    ENV_PASSWORD_FILE,
    ENV_STOP_GRACE,
    ENV_URL,
    ComposeError,
    say,
)
from privgrid.scenario import LM_ID, MO_ID


def broker_url_with_password(env: Mapping[str, str]) -> str:
    """``PRIVGRID_BROKER_URL`` with the password from ``PRIVGRID_BROKER_PASSWORD_FILE``."""
    url = env.get(ENV_URL, "")
    password_file = env.get(ENV_PASSWORD_FILE)
    if not password_file:
        return url
    try:
        password = Path(password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ComposeError(f"cannot read the broker password ({exc})") from exc
    parts = urlsplit(url)
    if not parts.username or not parts.hostname:
        raise ComposeError(f"{ENV_URL}={url!r} must be mqtt://user@host:port")
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return max(0.0, float(env.get(name, "") or default))
    except ValueError:
        return default


def run_role(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    linger: float,
    stop_grace: float,
    who: str,
    command: Sequence[str] | None = None,
) -> int:
    """Run ``privgrid ARGV`` as a child; return its status (128+N if killed by signal N).

    A stop request (SIGTERM/SIGINT) is passed on after ``stop_grace`` seconds if the child
    has not ended by then (the MO uses this to finish a report). After the child ends, wait
    up to ``linger`` seconds for a stop request (the others use this so that the MO, not
    them, ends an ``--abort-on-container-exit`` run).
    """
    stop: dict[str, float | None] = {"at": None}

    def on_signal(signum: int, frame: object) -> None:
        if stop["at"] is None:
            stop["at"] = time.monotonic()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cmd = [*(command or [sys.executable, "-m", "privgrid.cli"]), *argv]
    child = subprocess.Popen(cmd, env=dict(env))
    forwarded = False
    while child.poll() is None:
        asked = stop["at"]
        if asked is not None and not forwarded and time.monotonic() - asked >= stop_grace:
            child.send_signal(signal.SIGTERM)
            forwarded = True
        time.sleep(0.1)
    code = child.returncode if child.returncode >= 0 else 128 - child.returncode
    if stop["at"] is None and linger > 0:
        say(
            who,
            "INFO",
            f"finished with status {code}; staying up until the run ends "
            f"(at most {linger:g} s, {ENV_LINGER})",
        )
        deadline = time.monotonic() + linger
        while stop["at"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
    return code


def report_argv(argv: Sequence[str]) -> list[str] | None:
    """``report RUN_DIR --scenario FILE`` for a role command with ``--out`` and
    ``--scenario`` (the MO's), else None."""
    options = dict(itertools.pairwise(argv))
    if "--out" not in options or "--scenario" not in options:
        return None
    return ["report", options["--out"], "--scenario", options["--scenario"]]


def run_report(argv: Sequence[str], env: Mapping[str, str], who: str) -> int:
    """``privgrid report`` on the run folder of the role that just ended (the evaluator runs
    apart from the MO's process, docs/wire.md); its failure is logged, not the run's."""
    report = report_argv(argv)
    if report is None:
        say(who, "ERROR", "--report needs a role command with --out and --scenario")
        return 2
    status = subprocess.call([sys.executable, "-m", "privgrid.cli", *report], env=dict(env))
    if status != 0:
        say(who, "ERROR", f"privgrid report exited with status {status}")
    return status


@click.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option(
    "--report",
    is_flag=True,
    help="After the role ends, run `privgrid report` on its run folder (the MO's --out).",
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def exec_command(report: bool, argv: tuple[str, ...]) -> None:
    """Run `privgrid ARGV` with the broker password read from its file; see run_role."""
    env = dict(os.environ)
    who = _participant_of(argv)
    try:
        env[ENV_URL] = broker_url_with_password(env)
    except ComposeError as exc:
        say(who, "ERROR", str(exc))
        sys.exit(2)
    is_mo = bool(argv) and argv[0] == "mo"
    code = run_role(
        argv,
        env,
        linger=0.0 if is_mo else _seconds(env, ENV_LINGER, DEFAULT_LINGER),
        stop_grace=_seconds(env, ENV_STOP_GRACE, DEFAULT_STOP_GRACE) if is_mo else 0.0,
        who=who,
    )
    if report:
        run_report(argv, env, who)
    sys.exit(code)


def _participant_of(argv: Sequence[str]) -> str:
    if argv and argv[0] == "lm":
        return LM_ID
    if argv and argv[0] == "mo":
        return MO_ID
    if argv and argv[0] == "dashboard":
        return "dashboard"
    for flag, value in itertools.pairwise(argv):
        if flag == "--id":
            return value
    return "-"
