"""The in-process bus itself (tests/bus.py): a run on it is the product's protocol — every
message a signed envelope through each participant's real channel — and ends where the
in-process negotiation ends, bit for bit."""

from __future__ import annotations

from privgrid.crypto.identity import Roster
from privgrid.keys import participants
from privgrid.market.setup import build_setup
from privgrid.scenario import MO_ID
from privgrid.solve import solve
from privgrid.wire.envelope import open_envelope
from tests.rounds import ROUNDS


def test_a_run_on_the_bus_is_the_in_process_negotiation_bit_for_bit_through_the_channel(
    bus_factory,
):
    grid = bus_factory(privacy={"mode": "plain"})
    assert grid.run() == 0, grid.log(MO_ID)[-3000:]
    assert all(grid.codes[pid] == 0 for pid in participants(grid.scenario))
    results = grid.results()
    reference = solve(build_setup(grid.scenario))
    assert results["rounds"] == reference["rounds"] == ROUNDS["paper"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):
            assert ours[key] == theirs[key], (key, ours, theirs)
    assert results["ledger"]["committed"] and results["kkt"]["passed"]
    # Every payload the broker saw is an envelope signed by its sender (the cleared
    # announcements at the end are empty), and every channel counted its traffic.
    keys = Roster.load(grid.folder / "secrets" / "roster.json")
    published = [p for _, p in grid.broker.published if p]
    assert len(published) > 1000
    public = {pid: keys.public_key(pid) for pid in keys}
    assert all(open_envelope(payload, public) for payload in published)
    for pid in participants(grid.scenario):
        stats = results["participants"][pid]
        assert stats["sent"] > 0 and stats["received"] > 0 and stats["rejected"] == 0, pid
    assert "Traceback" not in "".join(grid.log(p) for p in participants(grid.scenario))
