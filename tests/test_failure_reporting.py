"""How a run that goes wrong is reported, tested in-process (issue 14, items 1, 2, 3, 6-9).

The subprocess tests of the real ``privgrid run`` are in tests/test_run_failures.py; these pin
down the pieces it is made of: the results file of a failed run (strict JSON, ``status``,
``error``), its plots, the summary table, the exit-status mapping, the MO after a failure, the
progress estimate and the counters across a restart.
"""

import json
import logging
import math
import os
from pathlib import Path

import pytest
from rich.console import Console

from privgrid import report, runfolder
from privgrid.console import print_summary
from privgrid.crypto.identity import Identity, Roster
from privgrid.launcher import crashed, describe_exit, end_line, final_status
from privgrid.logs import ParticipantLog
from privgrid.market.setup import build_setup
from privgrid.market.stopping import Residuals
from privgrid.membership import PeerState
from privgrid.plots import write_plots
from privgrid.progress import (
    ProgressReporter,
    distance,
    estimate_total_rounds,
    eta_seconds,
    progress_text,
)
from privgrid.results import dumps, finite
from privgrid.roles.market_operator.node import TraceRow
from privgrid.runtime import Node, Participant, Settings
from privgrid.scenario import LM_ID, MO_ID, load_scenario
from privgrid.solve import solve
from privgrid.state import CheckpointStore
from privgrid.wire import kinds
from privgrid.wire.channel import Message, UnknownPeer
from privgrid.wire.kinds import Gone, ViolationReport
from privgrid.wire.session import BrokerUrl
from tests.conftest import load_strict_json
from tests.test_message_faults import Bus, R, node_scenario

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
ERROR = "participant S3 left the run during round 23"


@pytest.fixture(scope="module")
def setup():
    return build_setup(load_scenario(PAPER))


def trace_rows(n: int) -> list[TraceRow]:
    return [
        TraceRow(r, Residuals(2.0 * 0.9**r, 0.5 * 0.9**r, 0.9**r, 0.0), 0.1 * r)
        for r in range(1, n + 1)
    ]


def failed_results(setup) -> dict:
    return report.failure_results(setup, run="r", mode="plain", error=ERROR, trace=trace_rows(22))


# -- item 2: results.json is strict JSON, with status and error -------------------------------
def test_a_failed_runs_results_are_strict_json_with_status_error_and_null_unknowns(setup, tmp_path):
    results = failed_results(setup)
    runfolder.write_results(tmp_path, results)
    written = load_strict_json(tmp_path / "results.json")
    assert written["status"] == "failed" and written["error"] == ERROR
    assert written["converged"] is False and written["rounds"] == 22
    assert written["social_welfare"] is None and written["welfare_gap"] is None
    assert written["timings"]["total_s"] is None
    assert written["timings"]["negotiation_s"] == pytest.approx(2.2)


def test_no_nan_or_infinity_can_be_written():
    value = {"a": float("nan"), "b": [1.0, float("inf")], "c": (float("-inf"),)}
    assert finite(value) == {"a": None, "b": [1.0, None], "c": [None]}
    assert json.loads(dumps(value)) == {"a": None, "b": [1.0, None], "c": [None]}
    import numpy as np

    assert finite({"x": np.float64("nan"), "y": np.array([1.0, np.nan])}) == {
        "x": None,
        "y": [1.0, None],
    }


def test_the_strict_json_check_rejects_nan_and_infinity(tmp_path):
    for token in ("NaN", "Infinity", "-Infinity"):
        path = tmp_path / "results.json"
        path.write_text(f'{{"social_welfare": {token}}}')
        with pytest.raises(ValueError, match="not JSON"):
            load_strict_json(path)
    path.write_text('{"social_welfare": null}')
    assert load_strict_json(path) == {"social_welfare": None}


def test_solve_results_carry_a_status_too(setup):
    assert solve(setup)["status"] == "converged"


# -- item 3: plots of a failed run ---------------------------------------------------------------
def test_a_failed_runs_plots_say_so_and_no_all_zero_trades_plot_is_left(setup, tmp_path):
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "trades.png").write_bytes(b"a previous run's plot")
    titles = write_plots(plots, failed_results(setup), trace_rows(22), 1e-4, 1e-4)
    assert list(titles) == ["convergence.png"]
    assert f"FAILED: {ERROR}" in titles["convergence.png"]
    assert not (plots / "trades.png").exists()  # stale, and this run has no trades to show


def test_a_converged_runs_plots_have_plain_titles_and_a_not_converged_one_says_so(setup, tmp_path):
    results = solve(setup)
    titles = write_plots(tmp_path, results, trace_rows(5), 1e-4, 1e-4)
    assert titles == {
        "convergence.png": "Convergence: paper (in-process)",
        "trades.png": "Cleared trades: paper",
    }
    titles = write_plots(
        tmp_path, {**results, "status": "not_converged"}, trace_rows(5), 1e-4, 1e-4
    )
    assert all(title.endswith("NOT CONVERGED") for title in titles.values())
    assert titles["trades.png"].startswith("Trades at the stop, not cleared")


# -- items 1 and 8: the summary ----------------------------------------------------------------
def summary_text(results) -> str:
    console = Console(record=True, width=200)
    print_summary(results, console)
    return console.export_text()


def test_a_failed_runs_summary_shows_unknowns_as_a_dash_and_no_tables_of_zeros(setup):
    results = failed_results(setup)
    results["timings"]["crypto_s"] = None
    text = summary_text(results)
    assert "FAILED" in text and "Trades" not in text and "Line flows" not in text
    assert "social welfare $" in text and "–" in text
    assert "not judged" in text and "KKT A" not in text


def test_the_summary_labels_wall_times_and_sums_over_participants(setup):
    results = solve(setup)
    results["timings"].update(crypto_s=1310.0, wait_s=1161.0, total_s=282.0)
    results["participants"] = {p: {} for p in ["S1", "S2", "S3", "S4", "B1", "B2", "B3"]}
    results["participants"].update({LM_ID: {}, MO_ID: {}})
    text = summary_text(results)
    assert "time total (wall)" in text and "time negotiation (wall)" in text
    assert "time crypto (sum over 9 participants)" in text
    assert "time waiting (sum over 9 participants)" in text
    assert "Trades" in text and "converged" in text


# -- item 1: exit statuses --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mo_status", "status", "interrupted", "code"),
    [
        (0, "converged", False, 0),
        (1, "not_converged", False, 1),
        (2, "failed", False, 2),
        (3, "failed", False, 3),
        (-9, "failed", False, 3),  # a signal death: not 247
        (1, "failed", False, 3),  # an MO that crashed with a traceback
        (0, None, False, 3),  # no results: never "converged"
        (130, "interrupted", False, 3),  # the MO stopped by someone else's signal
        (130, "interrupted", True, 130),
        (None, None, True, 130),
        (None, None, False, 3),  # the broker never started
    ],
)
def test_every_ending_of_privgrid_run_maps_onto_a_documented_exit_status(
    mo_status, status, interrupted, code
):
    assert final_status(mo_status, status, interrupted) == code


def test_a_crash_is_a_signal_or_an_uncaught_error_and_a_reported_failure_is_not():
    assert crashed(-9, "S1") and crashed(-11, MO_ID) and crashed(1, "S1") and crashed(247, "LM")
    assert not any(crashed(s, "S1") for s in (0, 2, 3, 130))
    assert not crashed(1, MO_ID)  # the MO's "not converged"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"


def test_the_last_line_gives_the_reason_of_anything_but_success():
    failed = {"status": "failed", "error": ERROR, "reason": "participant left"}
    assert end_line(3, failed) == f"privgrid: run failed: {ERROR} (exit 3)"
    assert end_line(1, {"status": "not_converged", "error": None, "reason": "round limit 5"}) == (
        "privgrid: run not converged: round limit 5 (exit 1)"
    )
    assert end_line(130, {"status": "interrupted", "error": "stopped"}).startswith(
        "privgrid: run interrupted: stopped"
    )
    assert end_line(0, {"status": "converged", "error": None}) is None


# -- item 2: the MO after a failure keeps every violation and the final reports --------------------
def test_the_mo_keeps_every_violation_reported_after_the_first_and_collects_the_finals():
    """S1 reports B1, B2 and B3 in one round (as with colluders sending free shares): the
    first ends the run, the other two are still recorded, and the MO ends once every
    participant's final report (traffic counters, last state) is in."""
    bus = Bus(node_scenario())

    injected = []

    def inject(message: Message) -> bool:
        if injected or (message.kind, message.round, message.recipient) != ("residuals", R, MO_ID):
            return False
        injected.append(True)
        for offender in ("B1", "B2", "B3"):
            body = ViolationReport(offender=offender, reason="pair check", evidence=(b"x",))
            bus.deliver(Message(R, "S1", MO_ID, body, offender.encode()))
        return False  # the residuals too: the MO, stopped, ignores them

    bus.run(inject)
    outcome = bus.mo.outcome
    assert [v["offender"] for v in outcome.violations] == ["B1", "B2", "B3"]
    assert outcome.error.startswith("protocol violation by B1")
    assert set(outcome.finals) == set(bus.agents) and outcome.lm_final is not None
    assert bus.mo.phase == "done" and bus.mo.exit_code == 3


def test_the_mo_does_not_wait_for_the_final_report_of_a_participant_that_left():
    bus = Bus(node_scenario())

    left = []

    def inject(message: Message) -> bool:
        if not left and (message.kind, message.round, message.recipient) == ("residuals", R, MO_ID):
            left.append(True)
            will = Message(0, "S3", kinds.EVERYONE, Gone(), b"will")
            bus.post(MO_ID, bus.mo.handle(will, 1.0))
            return False
        return message.sender == "S3" and message.kind == "final"  # dead: it never comes

    bus.run(inject)
    outcome = bus.mo.outcome
    assert outcome.error == f"participant S3 left the run during round {R}"
    assert set(outcome.finals) == set(bus.agents) - {"S3"}
    assert bus.mo.phase == "done" and bus.mo.exit_code == 3


def test_a_violation_report_is_a_repeatable_kind():
    assert kinds.KINDS["violation"].repeatable
    assert not any(spec.repeatable for name, spec in kinds.KINDS.items() if name != "violation")


# -- item 7: progress ----------------------------------------------------------------------------
def decaying(rate: float, start: float, rounds: int) -> list[tuple[int, float]]:
    return [(r, start * rate**r) for r in range(1, rounds + 1)]


def test_the_stopping_round_is_estimated_from_the_residuals_decay():
    # distance 1e4 · 0.95^r reaches 1 at r = log(1e4) / -log(0.95) ≈ 179.6
    points = decaying(0.95, 1e4, 80)
    assert estimate_total_rounds(points, 5000) == 180
    noisy = [(r, d * (1.5 if r % 2 else 0.7)) for r, d in points]  # oscillating residuals
    assert abs(estimate_total_rounds(noisy, 5000) - 180) <= 9  # 5 %
    assert estimate_total_rounds(points, 100) == 100  # never beyond the round limit


def test_no_estimate_before_a_trend_shows_or_when_the_residuals_do_not_fall():
    assert estimate_total_rounds(decaying(0.95, 1e4, 5), 5000) is None
    assert estimate_total_rounds([(r, 50.0) for r in range(1, 40)], 5000) is None
    assert estimate_total_rounds(decaying(1.02, 10, 40), 5000) is None
    assert estimate_total_rounds([(7, 0.5)], 5000) == 7  # already below the thresholds
    assert estimate_total_rounds([], 5000) is None


def test_distance_is_one_exactly_at_the_stopping_thresholds():
    at = {"r_P": 1e-4, "r_L": 0.0, "r_d": 1e-3, "r_C": 5e-4}
    assert distance(at, 1e-4, 1e-3) == 1.0
    assert distance({**at, "r_L": 2e-4}, 1e-4, 1e-3) == 2.0


def test_eta_and_the_progress_line():
    assert eta_seconds(100, 10.0, 150) == pytest.approx(5.0)
    assert eta_seconds(100, 10.0, None) is None
    residuals = {"r_P": 3.1e-3, "r_L": 0.0, "r_d": 2.2e-3, "r_C": 1.0e-4}
    assert progress_text(120, residuals, 12.34, 8.2) == (
        "round 120: r_P 3.1e-03 r_L 0 r_d 2.2e-03 r_C 1.0e-04, 12.3 s, ETA ~8 s"
    )
    assert progress_text(3, residuals, 0.3, None).endswith("ETA ?")


def test_the_mo_logs_progress_at_most_every_few_seconds():
    reporter = ProgressReporter(1e-4, 1e-4, 5000, every=5.0)
    logged = [t for t in (0.1, 1.0, 4.9, 5.2, 6.0, 10.1, 10.3, 15.3) if reporter.due(t)]
    assert logged == [0.1, 5.2, 10.3, 15.3]
    rows = [
        (r, {"r_P": d, "r_L": 0.0, "r_d": 0.0, "r_C": 0.0}, 0.1 * r)
        for r, d in decaying(0.95, 1.0, 40)
    ]
    total, eta = reporter.estimate(rows)
    assert total == math.ceil(math.log(1e4) / -math.log(0.95)) and eta == pytest.approx(
        (total - 40) * 0.1
    )


def test_the_live_trace_is_appended_round_by_round_and_read_back(tmp_path):
    path = tmp_path / "trace.csv"
    live = runfolder.TraceFile(path)
    rows = trace_rows(3)
    live.sync(rows[:2])
    assert len(path.read_text().splitlines()) == 3  # header + 2
    live.sync(rows)
    assert [r.round for r in runfolder.read_trace(path)] == [1, 2, 3]
    assert runfolder.read_trace(tmp_path / "absent.csv") == []


# -- item 9: counters across incarnations, expected drops at INFO ---------------------------------
class _Quiet(Node):
    def peers(self) -> set[str]:
        return {"B1"}

    def start(self, now: float) -> list:
        return []

    def handle(self, message: Message, now: float) -> list:
        return []

    def snapshot(self) -> dict:
        return {}

    def restore(self, state) -> None:
        pass


def participant(tmp_path: Path, identity: Identity) -> Participant:
    roster = Roster({"S1": identity.public_b64, "B1": Identity.generate().public_b64})
    log = ParticipantLog(logging.getLogger("test.participant.S1"), "S1")
    store = CheckpointStore(tmp_path, "r", "S1", identity)
    settings = Settings("r", BrokerUrl.parse("mqtt://S1:pw@127.0.0.1:1"))
    roles = {"S1": kinds.AGENT, "B1": kinds.AGENT}
    return Participant(_Quiet("S1", log), settings, identity, roster, roles, store)


def test_traffic_counters_add_up_across_a_restart(tmp_path):
    identity = Identity.generate()
    first = participant(tmp_path, identity)
    first.channel.stats["sent"] = 1218
    first.channel.stats["received"] = 40
    first.save_checkpoint()
    second = participant(tmp_path, identity)
    second._resume()
    second.channel.stats["sent"] = 343
    stats = second.stats()
    assert stats["sent"] == 1561 and stats["received"] == 40
    assert stats["restarts"] == 1 and stats["pid"] == os.getpid()
    assert stats["wait_s"] <= stats["wall_s"]


def test_a_queued_message_dropped_after_a_restart_is_logged_at_info(tmp_path, caplog):
    identity = Identity.generate()
    caplog.set_level(logging.INFO)
    fresh = participant(tmp_path, identity)
    fresh._unknown_peer(UnknownPeer("no key announcement from B1 yet", "B1"), "t/B1/share")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert fresh.channel.stats["rejected"] == 1
    caplog.clear()
    restarted = participant(tmp_path, identity)
    restarted.membership.resume(1, {"B1": PeerState(0, b"x" * 32, None)})
    restarted._unknown_peer(UnknownPeer("no key announcement from B1 yet", "B1"), "t/B1/share")
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "queued for us before our restart" in caplog.records[0].getMessage()
    assert restarted.channel.stats["rejected"] == 0
