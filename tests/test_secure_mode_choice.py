"""The privacy mode is chosen once, at start-up, behind one interface (issue 4).

``privgrid.privacy.make_mode`` builds the mode ``privacy.mode`` names; role code (the agent, the
LM, the MO) asks the mode object and never branches on the mode's name. Here: the worker
threads for the heavy crypto steps (``privacy.crypto_threads``), which only secure mode has,
and a scan of the role packages for a branch on the name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from privgrid.market.setup import played_cost
from privgrid.privacy import PaillierMode, PrivacyMode, make_mode
from privgrid.roles.agent.node import AgentNode
from tests.test_perf_wiring import TEST_KEYS, log, scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("privacy", "kind", "threads"),
    [
        ({"mode": "plain", "crypto_threads": 2}, PrivacyMode, 0),  # nothing heavy to hand out
        ({**TEST_KEYS, "crypto_threads": 2}, PaillierMode, 2),
        (TEST_KEYS, PaillierMode, 0),
    ],
    ids=["plain", "paillier-2-threads", "paillier-default"],
)
def test_the_agent_takes_its_worker_threads_from_its_privacy_mode(privacy, kind, threads):
    s = scenario(**privacy)
    mode = make_mode(s, "B1", "mode-test", log("B1"))
    assert type(mode) is kind
    node = AgentNode("B1", s, played_cost(s, "B1"), mode, log("B1"))
    assert mode.crypto_threads == node.crypto_threads == threads


def test_role_code_never_branches_on_the_mode_name():
    """No ``privacy.mode == …`` or ``isinstance(…, PaillierMode)`` in the role packages."""
    branch = re.compile(r"\.mode\s*(==|!=|\bin\b|\bnot in\b)|isinstance\([^)]*Mode\b")
    sources = [
        p for d in ("agents", "line_manager", "market_operator") for p in (ROOT / d).rglob("*.py")
    ]
    assert len(sources) >= 6
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if branch.search(line)
    ]
    assert not found, found
