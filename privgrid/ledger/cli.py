"""``privgrid ledger show|verify``: read a ledger file. Thin shells over the package.

Exit status of ``verify``: 0 every check passed; 1 a block is bad (the message names the first
bad height and why); 2 the path is missing, unreadable or not a privgrid ledger.
Both open the file read-only and create no file beside it, so they work on a read-only file,
folder or mount and for a user who does not own the file (privgrid/ledger/reading.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from privgrid.ledger.errors import BlockError, LedgerError, VoteError
from privgrid.ledger.store import Ledger
from privgrid.ledger.verify import verify_ledger
from privgrid.ledger.view import describe, print_block


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"privgrid ledger: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def ledger() -> None:
    """Inspect and verify a market ledger (ledger.sqlite)."""


def _entries(book: Ledger) -> list[dict[str, Any]]:
    """Every block as a view dict; a block that does not decode is shown as an error entry."""
    out = []
    for height in range(book.height + 1):
        try:
            out.append(describe(book.block(height), book.votes(height)))
        except (BlockError, VoteError, LedgerError) as exc:
            out.append({"height": height, "error": exc.reason})
    return out


@ledger.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def show(path: Path, as_json: bool) -> None:
    """Print every block of the ledger at PATH: trades, lines and settlement.

    Shows what is stored without checking it; run `privgrid ledger verify PATH` for that.
    """
    try:
        entries, ledger_id = Ledger.read(path, lambda book: (_entries(book), book.id))
    except LedgerError as exc:
        _fail(exc.reason)
    if as_json:
        click.echo(
            json.dumps({"ledger_id": ledger_id, "path": str(path), "blocks": entries}, indent=2)
        )
        return
    console = Console()
    console.print(f"ledger {path}  id {ledger_id}  ({len(entries)} blocks, not verified)")
    for info in entries:
        if "error" in info:
            console.print(f"[red]block {info['height']}: unreadable: {info['error']}[/red]")
        else:
            print_block(console, info)


@ledger.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--ledger-id", help="Hex genesis hash the ledger must have (pins its roster).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(path: Path, ledger_id: str | None, as_json: bool) -> None:
    """Re-check every hash, link, vote and signature of the ledger at PATH.

    Exit status: 0 all good, 1 naming the first bad block, 2 not a readable ledger.
    """
    try:
        report = verify_ledger(path, ledger_id=ledger_id)
    except LedgerError as exc:
        _fail(exc.reason)
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
    else:
        click.echo(f"{path}: {report.summary()}")
    sys.exit(0 if report.ok else 1)
