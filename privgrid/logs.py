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


def setup(
    participant: str,
    fmt: str = "text",
    file: Path | None = None,
    level: int = logging.INFO,
    adversarial: bool = False,
) -> ParticipantLog:
    """Configure the root logger for this process and return the participant's adapter."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    log = ParticipantLog(logging.getLogger("privgrid"), participant, adversarial)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_Stamp(log))
        root.addHandler(handler)
    for noisy in ("aiomqtt", "paho", "amqtt", "transitions", "asyncio", "pandapower"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log
