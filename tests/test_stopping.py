"""The round's residuals: one aggregation for the MO and the in-process negotiation."""

from __future__ import annotations

import math

from privgrid.market.stopping import AgentReport, Residuals, converged, round_residuals


def test_the_round_takes_the_largest_report_of_each_residual():
    reports = [AgentReport(0.1, 0.02), AgentReport(0.3, 0.01), AgentReport(0.2, 0.05)]
    assert round_residuals(reports, line=0.4, reciprocity=0.7) == Residuals(0.7, 0.4, 0.3, 0.05)


def test_with_the_masked_leg_the_agents_report_reciprocity():
    reports = [AgentReport(0.1, 0.0, 0.25), AgentReport(0.1, 0.0, 0.5)]
    assert round_residuals(reports, line=0.0, reciprocity=None).reciprocity == 0.5


def test_a_missing_reciprocity_report_never_lets_the_run_stop():
    reports = [AgentReport(0.0, 0.0, 0.0), AgentReport(0.0, 0.0, None)]
    residuals = round_residuals(reports, line=0.0, reciprocity=None)
    assert residuals.reciprocity == math.inf and not converged(residuals, 1.0, 1.0)
