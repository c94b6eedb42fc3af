"""The wire day's evaluator given an interval record it cannot read (privgrid/feeder/wire.py):
the day fails there with a reason naming the file, the field and why — in day.json and in
``privgrid run``'s one-line reason and exit status — instead of quietly ending the day's
evaluation. A prepared run folder and a hand-written record; no grid, no processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privgrid.feeder.launch import evaluated_ending
from privgrid.feeder.wire import evaluate_day, record_status
from privgrid.protocol_record import VERSION
from privgrid.runfolder import PROTOCOL_FILE
from privgrid.runtime import EXIT_FAILURE
from tests.conftest import load_strict_json
from tests.day_bus import night_run_folder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prepared_day(tmp_path_factory):
    """A run folder as ``privgrid run`` prepares it: one night interval of day-rural1."""
    return night_run_folder(tmp_path_factory.mktemp("evaluate"))


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (json.dumps({"version": VERSION, "run": "night", "mode": 7}), "mode is not a string"),
        ('{"version": 1, "run": ', "not JSON"),
    ],
    ids=["wrong-field", "not-json"],
)
def test_a_malformed_interval_record_fails_the_day_naming_file_field_and_reason(
    prepared_day, record, words
):
    prepared, folder, intervals = prepared_day
    path = intervals[0].folder / PROTOCOL_FILE
    path.write_text(record)
    try:
        evaluation = evaluate_day(prepared, folder, intervals, 0.0, plots=False)
        assert path.read_text() == record  # left as it is, for whoever looks into it
    finally:
        path.unlink()  # the session's check that every JSON file is strict would refuse it
    assert evaluation.document is None  # no interval before it: no rows
    error = evaluation.error
    assert error is not None and "\n" not in error
    assert error.startswith("interval 1 could not be evaluated: ")
    assert str(path) in error and words in error
    assert not (intervals[0].folder / "results.json").exists()  # nothing judged from it

    code, reason = evaluated_ending(evaluation, lambda: "the MO ended without results")
    assert (code, reason) == (EXIT_FAILURE, error)  # privgrid run: exit 3 and this reason
    record_status(folder, evaluation.document, code, reason)
    day = load_strict_json(folder / "day.json")
    assert day["status"] == "failed" and day["error"] == error
    assert day["per_interval"] == []
