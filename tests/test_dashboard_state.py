"""The dashboard's model, in process: what it makes of envelopes and of a run folder.

Real signed envelopes (real Ed25519 keys) go through the watcher's own decoding; real run
folder files (as the MO and ``privgrid solve`` write them) through the folder reader. No
broker, no server, no browser here: those are tests/test_dashboard_server.py and
tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import msgpack
import pytest

from privgrid.crypto.identity import Identity
from privgrid.dashboard.files import ForbiddenPathError, RunFolder, public_scenario
from privgrid.dashboard.network import network_view, normalise, run_network
from privgrid.dashboard.state import (
    CONNECTED,
    FINISHED,
    MISSING,
    UNKNOWN,
    WAITING,
    RunState,
    cleared_lines,
    interval_from_results,
)
from privgrid.dashboard.watch import Watcher, subscriptions
from privgrid.grid.cases import load_network
from privgrid.launcher import effective_scenario
from privgrid.scenario import load_scenario
from privgrid.wire import topics
from privgrid.wire.envelope import seal_envelope
from privgrid.wire.session import BrokerUrl

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
STATIC = ROOT / "privgrid" / "dashboard" / "static"
RUN = "r1"
IDS = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture(scope="module")
def identities() -> dict[str, Identity]:
    return {pid: Identity.generate() for pid in IDS}


def paper_public() -> dict:
    scenario = load_scenario(PAPER)
    return public_scenario(effective_scenario(scenario, "plain"))


def make_state(watching: bool = True) -> RunState:
    state = RunState(RUN, watching=watching)
    state.set_scenario(paper_public())
    return state


class Feed:
    """Signs envelopes as the participants would and feeds them to a real Watcher."""

    def __init__(self, identities: dict[str, Identity], state: RunState, signed_by=None) -> None:
        keys = {pid: ident.public_key for pid, ident in identities.items()}
        self.identities = identities
        self.signed_by = signed_by or {}
        self.pushes = 0
        self.watcher = Watcher(
            BrokerUrl.parse("mqtt://dashboard:pw@127.0.0.1:1"),
            RUN,
            state,
            keys,
            Clock(),
            self._pushed,
            None,  # type: ignore[arg-type]  # the log is not used by feed()
        )

    def _pushed(self) -> None:
        self.pushes += 1

    def send(self, kind: str, sender: str, recipient: str = "*", round_: int = 0, body=None):
        signer = self.identities[self.signed_by.get(sender, sender)]
        raw = seal_envelope(
            signer,
            kind=kind,
            run=RUN,
            round=round_,
            sender=sender,
            recipient=recipient,
            body=msgpack.packb(body or {}, use_bin_type=True) if kind in PUBLIC else b"\x00" * 40,
        )
        if kind == "key":
            topic = topics.keys(RUN, sender)
        elif recipient == "*":
            topic = topics.broadcast(RUN, sender, kind)
        else:
            topic = topics.direct(RUN, recipient, sender, kind)
        self.watcher.feed(topic, raw)


PUBLIC = {"key", "gone", "stop", "closed", "round"}


def by_id(state: RunState) -> dict[str, dict]:
    return {p["id"]: p for p in state.public()["participants"]}


# -- the broker's view ---------------------------------------------------------------------
def test_subscriptions_are_keys_broadcasts_and_what_goes_to_the_mo_only():
    assert subscriptions(RUN) == [
        f"privgrid/{RUN}/keys/#",
        f"privgrid/{RUN}/bcast/+/+",
        f"privgrid/{RUN}/to/MO/#",
    ]


def test_announcements_rounds_and_reports_make_participants_connected_and_seen(identities):
    state = make_state()
    feed = Feed(identities, state)
    assert {p["state"] for p in by_id(state).values()} == {WAITING}
    for pid in IDS:
        feed.send("key", pid, body={"x25519": b"k" * 32, "created": 1.0})
    feed.send("round", "MO", round_=1)
    for agent in IDS[:7]:
        feed.send("residuals", agent, "MO", round_=1)
    feed.send("lm_residuals", "LM", "MO", round_=1)
    feed.send("round", "MO", round_=2)
    view = by_id(state)
    assert {p["state"] for p in view.values()} == {CONNECTED}
    assert view["S1"]["last_round"] == 1 and view["LM"]["last_round"] == 1
    assert view["MO"]["last_round"] == 2
    public = state.public()
    assert public["round"] == 2 and public["phase"] == "running"
    assert feed.pushes == len(IDS) + 1 + 8 + 1  # every message is pushed on


def test_a_last_will_marks_a_participant_missing_and_a_restart_brings_it_back(identities):
    state = make_state()
    feed = Feed(identities, state)
    for pid in IDS:
        feed.send("key", pid, body={"created": 1.0})
    feed.send("round", "MO", round_=7)
    feed.send("gone", "S3")  # incarnation 0 died
    s3 = by_id(state)["S3"]
    assert s3["state"] == MISSING and s3["gone_round"] == 7
    assert any("S3 left the run during round 7" in e[2] for e in state.public()["events"])
    feed.send("key", "S3", body={"incarnation": 1, "completed": 6})  # restarted
    s3 = by_id(state)["S3"]
    assert (s3["state"], s3["incarnation"], s3["gone_round"]) == (CONNECTED, 1, None)
    feed.send("gone", "S3")  # a late copy of incarnation 0's will: stale, ignored
    assert by_id(state)["S3"]["state"] == CONNECTED
    feed.send("key", "S3", body={})  # an older retained announcement: ignored
    assert by_id(state)["S3"]["incarnation"] == 1
    feed.watcher.feed(topics.keys(RUN, "S3"), b"")  # clearing its retained key: no rejection
    assert by_id(state)["S3"]["rejected"] == 0


def test_a_violation_report_counts_for_its_sender_without_opening_it(identities):
    state = make_state()
    feed = Feed(identities, state)
    feed.send("violation", "B2", "MO", round_=4)
    feed.send("violation", "B2", "MO", round_=4)
    assert by_id(state)["B2"]["violations_reported"] == 2
    assert by_id(state)["S1"]["violations_reported"] == 0


def test_a_forged_or_mislabelled_message_is_rejected_and_changes_nothing_else(identities):
    state = make_state()
    feed = Feed(identities, state, signed_by={"S2": "B1"})  # B1 signs as S2
    feed.send("residuals", "S2", "MO", round_=3)
    s2 = by_id(state)["S2"]
    assert s2["rejected"] == 1 and s2["last_round"] is None and s2["state"] == WAITING
    assert "bad signature" in state.public()["events"][-1][2]
    # A topic that names another sender than the (valid) envelope.
    good = Feed(identities, state)
    raw = seal_envelope(
        identities["S1"],
        kind="residuals",
        run=RUN,
        round=3,
        sender="S1",
        recipient="MO",
        body=b"x",
    )
    good.watcher.feed(topics.direct(RUN, "MO", "S4", "residuals"), raw)
    assert by_id(state)["S4"]["rejected"] == 1 and by_id(state)["S1"]["last_round"] is None
    good.watcher.feed(topics.direct("other-run", "MO", "S1", "residuals"), raw)  # not ours
    assert by_id(state)["S1"]["messages"] == 0


def test_stop_and_closed_end_the_run_and_later_departures_are_not_missing(identities):
    state = make_state()
    feed = Feed(identities, state)
    for pid in IDS:
        feed.send("key", pid, body={})
    feed.send("round", "MO", round_=195)
    feed.send("stop", "MO", round_=195, body={"converged": True, "reason": "converged"})
    assert state.public()["phase"] == "stopping" and state.stop == {
        "converged": True,
        "reason": "converged",
    }
    feed.send("closed", "MO", round_=195, body={"committed": True, "reason": "block 1"})
    feed.send("gone", "B1")
    assert state.public()["phase"] == "closed"
    assert {p["state"] for p in by_id(state).values()} == {FINISHED}


# -- the run folder -----------------------------------------------------------------------
def test_the_page_never_gets_an_agents_costs_or_power_range():
    state = make_state()
    text = json.dumps(state.public())
    scenario = tomllib.loads(PAPER.read_text())
    for agent in scenario["agents"]:
        for key in ("a", "b", "pmin", "pmax"):
            assert f'"{key}"' not in text
            assert agent["id"] in text
    assert '"a": 0.04' not in text and "0.046" not in text


def write_trace(path: Path, rows: list[list[float]], mode: str = "a") -> None:
    with path.open(mode) as handle:
        if mode == "w":
            handle.write("round,r_P,r_L,r_d,r_C,elapsed_s,welfare\n")
        for r in rows:
            handle.write(",".join(str(x) for x in r) + ",\n")


def test_trace_is_followed_row_by_row_and_restarted_when_rewritten(tmp_path):
    (tmp_path / "scenario.toml").write_text(PAPER.read_text())
    state = RunState(RUN)
    folder = RunFolder(tmp_path, state, Clock())
    folder.poll()
    assert state.scenario == "paper" and state.trace == []
    write_trace(tmp_path / "trace.csv", [[1, 1.0, 2.0, 3.0, 0.0, 0.1]], "w")
    folder.poll()
    assert [r[0] for r in state.trace] == [1.0]
    with (tmp_path / "trace.csv").open("a") as handle:  # half a line: not yet
        handle.write("2,0.5,1.0,")
    folder.poll()
    assert len(state.trace) == 1
    with (tmp_path / "trace.csv").open("a") as handle:
        handle.write("1.5,inf,0.2,\n")
    folder.poll()
    assert state.trace[-1] == [2.0, 0.5, 1.0, 1.5, None, 0.2]  # inf is no number for JSON
    epoch = state.trace_epoch
    replacement = tmp_path / "new.csv"
    write_trace(replacement, [[1, 1.0, 2.0, 3.0, 0.0, 0.1], [2, 0.5, 1.0, 1.5, 0.0, 0.2]], "w")
    replacement.replace(tmp_path / "trace.csv")  # the MO's final rewrite (one rename)
    folder.poll()
    assert state.trace_epoch == epoch + 1 and [r[0] for r in state.trace] == [1.0, 2.0]
    assert state.round == 2 and state.phase == "running"


def test_results_logs_and_restarts_come_from_the_run_folder(tmp_path):
    (tmp_path / "scenario.toml").write_text(PAPER.read_text())
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "S3.log").write_text(
        "2026-01-01T00:00:00.000Z S3 r=3 INFO  connected\n"
        "2026-01-01T00:00:01.000Z S3 r=4 WARNING dropped share from B1 for round 3\n"
        "2026-01-01T00:00:02.000Z S3 r=5 ERROR boom | detail\n"
    )
    (tmp_path / "logs" / "B1.log").write_text(
        json.dumps({"ts": "x", "participant": "B1", "round": 2, "level": "ERROR", "msg": "bad"})
        + "\n"
    )
    results = {
        "status": "failed",
        "error": "participant S3 left the run during round 5",
        "rounds": 5,
        "lines": [
            {"id": "2-3", "flow": 3.0, "limit": 3.0, "price_up": 2.2, "price_down": 0.0},
            {"id": "4-5", "flow": -2.0, "limit": 3.5, "price_up": 0.0, "price_down": 0.0},
            {"id": "1-2", "flow": 9.0, "limit": None, "price_up": 0.0, "price_down": 0.0},
        ],
        "trades": [{"seller": "S1", "buyer": "B1", "power": 1.5, "price": 2.0, "charge": 0.1}],
        "violations": [{"reporter": "B2", "offender": "S4", "reason": "x", "round": 3}],
        "participants": {"S3": {"restarts": 2.0}},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    state = RunState(RUN, watching=False)
    RunFolder(tmp_path, state, Clock()).poll()
    view = by_id(state)
    assert view["S3"]["state"] == UNKNOWN  # no broker: nobody's connection is known
    assert (view["S3"]["warnings"], view["S3"]["errors"]) == (1, 1)
    assert view["S3"]["last_problem"] == "boom | detail"
    assert (view["B1"]["errors"], view["B1"]["last_problem"]) == (1, "bad")
    assert view["S3"]["incarnation"] == 2 and view["S4"]["accused"] == 1
    lines = {ln["id"]: ln for ln in state.public()["lines"]}
    assert lines["2-3"]["congested"] and lines["2-3"]["loading"] == 1.0
    assert not lines["4-5"]["congested"] and not lines["1-2"]["congested"]
    assert state.public()["results"]["status"] == "failed"
    assert state.public()["trades"][0]["buyer"] == "B1"


def test_the_folders_of_secrets_are_refused(tmp_path):
    folder = RunFolder(tmp_path, RunState(RUN), Clock())
    for forbidden in ("secrets/broker.json", "state/r1/S1.ckpt", "broker/passwd", "keys/x.key"):
        with pytest.raises(ForbiddenPathError):
            folder.path(forbidden)


def test_cleared_lines_are_congested_by_their_price_or_a_flow_at_the_limit():
    lines = cleared_lines(
        [
            {"id": "a", "flow": 1.0, "limit": 3.0, "price_up": 0.5, "price_down": 0.0},
            {"id": "b", "flow": -3.0, "limit": 3.0, "price_up": 0.0, "price_down": 0.0},
            {"id": "c", "flow": 1.0, "limit": 3.0, "price_up": 0.0, "price_down": 0.0},
        ]
    )
    assert [ln["congested"] for ln in lines] == [True, True, False]


# -- a day --------------------------------------------------------------------------------
def test_a_days_intervals_appear_one_by_one_as_their_results_are_written(tmp_path):
    """The files of ``privgrid solve DAY --out DIR`` (a real run of the in-process reference,
    copied interval by interval into the folder the dashboard follows)."""
    results = json.loads(
        subprocess.run(
            [sys.executable, "-m", "privgrid.cli", "solve", str(PAPER), "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
            timeout=300,
        ).stdout
    )
    for label in ("0001", "0002", "0003"):
        (tmp_path / "intervals" / label).mkdir(parents=True)
        (tmp_path / "intervals" / label / "scenario.toml").write_text(PAPER.read_text())
    state = RunState(RUN, watching=False)
    folder = RunFolder(tmp_path, state, Clock())
    folder.poll()
    assert state.kind == "day" and state.intervals_total == 3 and state.intervals == {}
    (tmp_path / "intervals" / "0001" / "results.json").write_text(json.dumps(results))
    folder.poll()
    public = state.public()
    assert [i["label"] for i in public["intervals"]] == ["0001"]
    first = public["intervals"][0]
    assert first["rounds"] == results["rounds"] and first["converged"]
    assert sorted(first["congested"]) == ["2-3", "4-5"]
    total = sum(t["power"] for t in results["trades"])
    assert first["volume_kw"] == pytest.approx(total)
    assert min(t["price"] for t in results["trades"]) <= first["price"]
    assert first["price"] <= max(t["price"] for t in results["trades"])
    assert {ln["id"] for ln in public["lines"] if ln["congested"]} == {"2-3", "4-5"}
    assert state.epsilon_p == 1e-4
    (tmp_path / "intervals" / "0002" / "results.json").write_text(json.dumps(results))
    folder.poll()
    assert len(state.public()["intervals"]) == 2
    day = {"scenario": "d", "per_interval": [{"index": 1, "start": "2016-06-01T00:00"}]}
    (tmp_path / "day.json").write_text(json.dumps(day))
    folder.poll()
    assert state.public()["intervals"][0]["start"] == "2016-06-01T00:00"


def test_interval_without_trades_has_no_price():
    row = interval_from_results(4, "0004", {"converged": True, "rounds": 3, "trades": []})
    assert (row.price, row.volume_kw, row.congested) == (None, 0.0, [])


# -- the drawing --------------------------------------------------------------------------
def test_ieee_cases_get_the_same_layout_every_time_inside_the_unit_square():
    network = load_network("ieee14")
    first, second = network_view(network), network_view(network)
    assert first == second and first["source"] == "layout"
    assert len(first["buses"]) == 14 and len(first["lines"]) == 20
    assert all(0 <= b["x"] <= 1 and 0 <= b["y"] <= 1 for b in first["buses"])
    view = run_network(paper_public(), ROOT)
    limits = {ln["id"]: ln["limit"] for ln in view["lines"] if ln["limit"] is not None}
    assert limits == {"2-3": 3.0, "4-5": 3.5}
    assert {a["id"]: a["bus"] for a in view["agents"]}["B3"] == 9


def test_feeder_coordinates_are_kept_north_up():
    points = normalise({1: (10.0, 50.0), 2: (10.0, 51.0), 3: (11.0, 50.0)})
    assert points[2][1] < points[1][1]  # further north = higher on the screen
    assert points[3][0] > points[1][0]


# -- the page -----------------------------------------------------------------------------
def test_the_page_loads_nothing_from_another_host():
    html = (STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("static/") or s == "data:," for s in sources)
    for path in sources:
        if path.startswith("static/"):
            assert (STATIC.parent / path).is_file(), path
    script = (STATIC / "dashboard.js").read_text()
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in script and "innerHTML" not in script


def test_the_bundled_chart_library_is_the_one_its_readme_names():
    readme = (STATIC / "vendor" / "README.md").read_text()
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"):
        digest = hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in readme, name
    assert "v1.6.32" in (STATIC / "vendor" / "uPlot.iife.min.js").read_text()[:100]
    assert "MIT License" in (STATIC / "vendor" / "uPlot.LICENSE").read_text()
