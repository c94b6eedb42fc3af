"""How far a negotiation is from its stopping test, and when it will get there (pure).

The negotiation converges linearly: each residual, divided by its threshold (ε_P for r_P and
r_L, ε_λ for r_d and r_C), shrinks by a roughly constant factor per round, so the log of the
largest such ratio falls along a line that reaches 0 (every residual at its threshold) at the
stopping round. :func:`estimate_total_rounds` fits that line over the recent rounds; the MO's
progress log line and the launcher's progress bar use it instead of ``market.max_rounds``
(5000 by default, when runs stop after a few hundred rounds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

#: Rounds needed before an estimate is made (the first rounds are not yet on the line).
MIN_ROUNDS = 10
#: The fit uses the last half of the rounds seen, at least MIN_ROUNDS and at most this many.
MAX_WINDOW = 200
#: A ratio of 0 (a residual of exactly 0) counts as this, so its log is finite.
_FLOOR = 1e-300


def distance(residuals: Mapping[str, float], epsilon_p: float, epsilon_lambda: float) -> float:
    """The largest residual as a multiple of its threshold: ≤ 1 exactly when the stopping
    test passes (:func:`privgrid.market.stopping.converged`). Keys ``r_P r_L r_d r_C``."""
    return max(
        residuals["r_P"] / epsilon_p,
        residuals["r_L"] / epsilon_p,
        residuals["r_d"] / epsilon_lambda,
        residuals["r_C"] / epsilon_lambda,
    )


def estimate_total_rounds(
    points: Sequence[tuple[int, float]], max_rounds: int, min_rounds: int = MIN_ROUNDS
) -> int | None:
    """The round at which the run is expected to stop, or None when it cannot be told yet.

    Args:
        points: ``(round, distance)`` per completed round, in order (:func:`distance`).
        max_rounds: the round limit; the estimate never exceeds it.
        min_rounds: rounds needed before estimating.

    Returns:
        Between the last round seen and ``max_rounds``; the last round itself when the last
        distance is already ≤ 1. None with fewer than ``min_rounds`` points, or when the
        residuals are not falling over the window (no trend to extrapolate).
    """
    if not points:
        return None
    last_round, last = points[-1]
    if last <= 1.0:
        return min(last_round, max_rounds)
    if len(points) < min_rounds:
        return None
    size = min(MAX_WINDOW, max(min_rounds, len(points) // 2))
    window = points[-size:]
    xs = [float(r) for r, _ in window]
    ys = [math.log(max(d, _FLOOR)) for _, d in window]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    if slope >= 0:
        return None
    # From the fitted line at the last round (not the last point: residuals oscillate) down
    # to log(distance) = 0.
    fitted = mean_y + slope * (last_round - mean_x)
    remaining = max(fitted, 0.0) / -slope
    return min(max_rounds, last_round + max(1, math.ceil(remaining)))


def eta_seconds(rounds_done: int, elapsed: float, total: int | None) -> float | None:
    """Seconds left at the average pace so far, or None when the total is not known."""
    if total is None or rounds_done <= 0:
        return None
    return max(0, total - rounds_done) * elapsed / rounds_done


def progress_text(
    round_: int, residuals: Mapping[str, float], elapsed: float, eta: float | None
) -> str:
    """The MO's progress log line: ``round 120: r_P 3.1e-03 r_L 0 r_d 2.2e-03 r_C 1.0e-04,
    12.3 s, ETA ~8 s`` (``ETA ?`` while it cannot be told)."""
    values = " ".join(f"{k} {_short(residuals[k])}" for k in ("r_P", "r_L", "r_d", "r_C"))
    left = "?" if eta is None else f"~{eta:.0f} s"
    return f"round {round_}: {values}, {elapsed:.1f} s, ETA {left}"


def _short(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


#: The MO logs a progress line at most this often (seconds of the run's clock).
PROGRESS_LOG_SECONDS = 5.0


class ProgressReporter:
    """The MO's view of its own progress: the estimate after each round, and whether a log
    line is due (the first round, then at most every ``every`` seconds of the run)."""

    def __init__(
        self,
        epsilon_p: float,
        epsilon_lambda: float,
        max_rounds: int,
        every: float = PROGRESS_LOG_SECONDS,
    ) -> None:
        self.epsilon_p = epsilon_p
        self.epsilon_lambda = epsilon_lambda
        self.max_rounds = max_rounds
        self.every = every
        self.logged_at: float | None = None

    def estimate(
        self, rows: Sequence[tuple[int, Mapping[str, float], float]]
    ) -> tuple[int | None, float | None]:
        """(estimated total rounds, seconds left) from ``(round, residuals, elapsed)`` rows."""
        if not rows:
            return None, None
        recent = rows[-2 * MAX_WINDOW :]
        points = [(r, distance(res, self.epsilon_p, self.epsilon_lambda)) for r, res, _ in recent]
        total = estimate_total_rounds(points, self.max_rounds)
        last_round, _, elapsed = rows[-1]
        return total, eta_seconds(last_round, elapsed, total)

    def due(self, elapsed: float) -> bool:
        """Whether to log now (and if so, remember that we did)."""
        if self.logged_at is not None and elapsed - self.logged_at < self.every:
            return False
        self.logged_at = elapsed
        return True
