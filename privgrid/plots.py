"""The run folder's plots: the residuals round by round, and the cleared trades.

A run that did not converge says so in every title (``FAILED: <error>``, ``INTERRUPTED``,
``NOT CONVERGED``), and a stale plot of an earlier run is never left beside new results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privgrid.results import CONVERGED, FAILED, INTERRUPTED, NOT_CONVERGED
from privgrid.roles.market_operator.node import TraceRow


def status_title(results: Mapping[str, Any]) -> str:
    """What a plot's title says about how the run ended ("" for a converged run)."""
    status = results.get("status", CONVERGED)
    if status == FAILED:
        error = str(results.get("error") or "")
        return "FAILED: " + (error if len(error) <= 70 else error[:69] + "…")
    if status == INTERRUPTED:
        return "INTERRUPTED"
    if status == NOT_CONVERGED:
        return "NOT CONVERGED"
    return ""


def has_cleared_trades(results: Mapping[str, Any]) -> bool:
    """Whether any trade is non-zero (a failed run's last state may be all zeros)."""
    return any(abs(t["power"] or 0.0) > 1e-9 for t in results["trades"])


def write_plots(
    folder: Path,
    results: Mapping[str, Any],
    trace: Sequence[TraceRow],
    epsilon_p: float,
    epsilon_lambda: float,
) -> dict[str, str]:
    """Draw ``convergence.png`` (if there is a trace) and ``trades.png`` (if any trade is not
    zero) into ``folder``, after removing the ones a previous run left there. A run that did
    not converge says so in each title. Returns file name → title of what was written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("convergence.png", "trades.png"):  # a previous run's plots never stay
        (folder / name).unlink(missing_ok=True)
    verdict = status_title(results)
    suffix = f"\n{verdict}" if verdict else ""
    if trace:
        fig, ax = plt.subplots(figsize=(7, 4))
        rounds = [r.round for r in trace]
        for name, label in (
            ("reciprocity", "r_P (kW)"),
            ("line", "r_L (kW)"),
            ("dual", "r_d ($/kW)"),
            ("consensus", "r_C ($/kW)"),
        ):
            values = [max(getattr(r.residuals, name), 1e-12) for r in trace]
            ax.semilogy(rounds, values, label=label)
        ax.axhline(epsilon_p, color="grey", linestyle="--", linewidth=0.8, label="ε_P")
        if epsilon_lambda != epsilon_p:
            ax.axhline(epsilon_lambda, color="grey", linestyle=":", linewidth=0.8, label="ε_λ")
        ax.set_xlabel("round")
        ax.set_ylabel("residual")
        ax.set_title(
            f"Convergence: {results['scenario']} ({results['mode']}){suffix}",
            color="firebrick" if verdict else "black",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "convergence.png", dpi=120)
        written["convergence.png"] = ax.get_title()
        plt.close(fig)
    trades = sorted(results["trades"], key=lambda t: (t["seller"], t["buyer"]))
    if has_cleared_trades(results):
        height = max(3.0, 0.25 * len(trades))
        fig, ax = plt.subplots(figsize=(7, min(height, 40)))
        labels = [f"{t['seller']}→{t['buyer']}" for t in trades]
        ax.barh(labels, [t["power"] for t in trades], color="tab:blue")
        for y, t in enumerate(trades):
            ax.annotate(
                f"{t['price']:.3f} $/kW",
                (t["power"], y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.set_xlim(0, 1.3 * max([t["power"] for t in trades] + [1e-9]))
        ax.invert_yaxis()
        ax.set_xlabel("power (kW), annotated with the price")
        ax.set_title(
            f"{'Cleared trades' if not verdict else 'Trades at the stop, not cleared'}: "
            f"{results['scenario']}{suffix}",
            color="firebrick" if verdict else "black",
        )
        fig.tight_layout()
        fig.savefig(folder / "trades.png", dpi=120)
        written["trades.png"] = ax.get_title()
        plt.close(fig)
    return written
