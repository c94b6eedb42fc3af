"""Logging for every process: one line per event, participant id and round on every line.

Text (default) is for people: ``2026-11-21T06:15:00.123Z S1 r=12 INFO  sent share to B1``.
JSON (``--log-format json``) is one object per line with the same fields plus any extras.
A colluding agent's lines carry ``adversarial`` (text: ``[ADV]``), so they stand out.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

FORMATS = ("text", "json")


class ParticipantLog(logging.LoggerAdapter):
    """Adds ``participant``, ``round`` and flags to every record; the round is updated live."""

    def __init__(self, logger: logging.Logger, participant: str, adversarial: bool = False) -> None:
        super().__init__(logger, {})
        self.participant = participant
        self.round = 0
        self.adversarial = adversarial

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(kwargs.pop("extra", None) or {})
        extra.setdefault("participant", self.participant)
        extra.setdefault("round", self.round)
        extra.setdefault("adversarial", self.adversarial)
        kwargs["extra"] = extra
        return msg, kwargs


class _Stamp(logging.Filter):
    """Give every record — ours or a library's — the participant and the current round."""

    def __init__(self, log: ParticipantLog) -> None:
        super().__init__()
        self.log = log

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "participant"):
            record.participant = self.log.participant
            record.round = self.log.round
            record.adversarial = self.log.adversarial
        return True


def _utc(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        who = getattr(record, "participant", "-")
        rnd = getattr(record, "round", "-")
        adv = " [ADV]" if getattr(record, "adversarial", False) else ""
        message = record.getMessage().replace("\n", " | ")  # one line per event, always
        line = f"{_utc(record)} {who} r={rnd}{adv} {record.levelname:<5} {message}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _utc(record),
            "participant": getattr(record, "participant", None),
            "round": getattr(record, "round", None),
            "level": record.levelname,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _handlers(fmt: str, file: Path | None) -> list[logging.Handler]:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    return handlers


def _install(handlers: list[logging.Handler], level: int) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    for noisy in ("aiomqtt", "paho", "amqtt", "transitions", "asyncio", "pandapower"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup(
    participant: str,
    fmt: str = "text",
    file: Path | None = None,
    level: int = logging.INFO,
    adversarial: bool = False,
) -> ParticipantLog:
    """Configure the root logger for this process and return the participant's adapter."""
    handlers = _handlers(fmt, file)
    log = ParticipantLog(logging.getLogger("privgrid"), participant, adversarial)
    for handler in handlers:
        handler.addFilter(_Stamp(log))
    _install(handlers, level)
    return log


class _OnlyParticipant(logging.Filter):
    """Pass only one participant's records (its own file in a process that hosts several)."""

    def __init__(self, participant: str) -> None:
        super().__init__()
        self.participant = participant

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "participant", None) == self.participant


def setup_group(
    participants: list[str],
    fmt: str = "text",
    log_dir: Path | None = None,
    level: int = logging.INFO,
) -> dict[str, ParticipantLog]:
    """Logging for a process that hosts several agents (``--agents-per-process``).

    Every line still names its agent; stderr gets them all, and with ``log_dir`` each agent
    also gets its own ``<log_dir>/<id>.log`` (so ``tail -f logs/S1.log`` works as with one
    process per agent). Library records that name no agent are stamped with the group's label.
    """
    handlers = _handlers(fmt, None)
    label = ParticipantLog(logging.getLogger("privgrid"), "+".join(participants)[:40])
    handlers[0].addFilter(_Stamp(label))
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        for participant in participants:
            handler = logging.FileHandler(log_dir / f"{participant}.log", encoding="utf-8")
            handler.setFormatter(handlers[0].formatter)
            handler.addFilter(_OnlyParticipant(participant))
            handlers.append(handler)
    _install(handlers, level)
    # One adapter (and logger) per agent: each stamps its own id and round.
    return {p: ParticipantLog(logging.getLogger(f"privgrid.{p}"), p) for p in participants}
