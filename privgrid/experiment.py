"""``privgrid experiment collusion``: regenerate the leakage table of protocol.md §9.3.

Runs the scenario's attack (real processes on a real broker, via the launcher) under each
privacy variant and writes ``DIR/collusion.md`` (the table), ``DIR/collusion.json`` (every
number) and ``DIR/collusion.png`` (errors per variant). Variants:

- ``plain``: sealed shares, no pair checks, trades sealed to the LM;
- ``paper-2pc``: the published design — Paillier 2PC with decryption proofs, no pair checks,
  trades under the LM's Paillier key;
- ``hardened``: Paillier 2PC + pair checks (I4) + masked aggregation (I5);
- ``hardened-free``: the same, colluders inject prices with free shares (I4 must abort it);
- ``hardened-short-range``: the colluding buyers registered only [−10, 0] each, so together
  they cannot absorb the target's Pmax (the estimate is then only a lower bound);
- ``i6-low`` / ``i6-high``: hardened, and the target perturbs its own objective (I6) at
  (σ_b, r, w) = (1, 0.1, 4) and (3, 0.3, 8), over several seeds (fresh noise per session);
  the median errors and the welfare loss are reported.
Each attacked run uses ``compare_honest`` for the outcome columns.
"""

from __future__ import annotations

import json
import statistics
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from privgrid.launcher import LaunchOptions, launch
from privgrid.results import dumps

KEYS_1024 = {"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True}
I6_LEVELS = {
    "i6-low": {"sigma_b": 1.0, "r": 0.1, "w": 4.0},
    "i6-high": {"sigma_b": 3.0, "r": 0.3, "w": 8.0},
}


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    edit: Callable[[dict[str, Any]], None]
    seeds: int = 1


def _privacy(**values: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data.setdefault("privacy", {}).update(values)

    return edit


def _chain(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        for e in edits:
            e(data)

    return edit


def _attack(**values: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["attack"].update(values)

    return edit


def _colluder_range(low: float) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        for agent in data["agents"]:
            if agent["id"] in data["attack"]["colluders"]:
                agent["pmin"] = max(agent["pmin"], low)

    return edit


def _noise(level: Mapping[str, float]) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        for agent in data["agents"]:
            if agent["id"] == data["attack"]["target"]:
                agent["privacy_noise"] = dict(level)

    return edit


def variants(key_privacy: Mapping[str, Any], seeds: int) -> list[Variant]:
    secure = dict(key_privacy)
    hardened = _privacy(**secure, pair_checks=True, lm_leg="masked")
    plain_hardened = _privacy(mode="plain", pair_checks=True, lm_leg="masked")
    return [
        Variant(
            "plain",
            "plain (sealed shares)",
            _privacy(mode="plain", pair_checks=False, lm_leg="sealed"),
        ),
        Variant(
            "paper-2pc",
            "paper 2PC (Paillier + ZKP, LM decrypts trades)",
            _privacy(**secure, pair_checks=False, lm_leg="paillier"),
        ),
        Variant(
            "hardened", "hardened: 2PC + pair checks + masked LM, compliant colluders", hardened
        ),
        Variant(
            "hardened-free",
            "hardened, colluders send free shares",
            _chain(hardened, _attack(shares="free")),
        ),
        Variant(
            "hardened-short-range",
            "hardened, colluders' range [−10, 0] (coalition < Pmax)",
            _chain(hardened, _colluder_range(-10.0)),
        ),
        *(
            Variant(
                name,
                f"I6 (σ_b, r, w) = ({v['sigma_b']:g}, {v['r']:g}, {v['w']:g}), median of {seeds}",
                _chain(plain_hardened, _noise(v)),
                seeds,
            )
            for name, v in I6_LEVELS.items()
        ),
    ]


def run_variant(base: dict[str, Any], variant: Variant, folder: Path) -> list[dict[str, Any]]:
    outcomes = []
    for seed in range(variant.seeds):
        data = json.loads(json.dumps(base))
        variant.edit(data)
        data["attack"]["compare_honest"] = True
        data["scenario"]["seed"] = int(data["scenario"].get("seed", 0)) + seed
        data["scenario"]["name"] = f"{data['scenario']['name']}-{variant.name}"
        where = folder / variant.name / f"seed{seed}"
        where.mkdir(parents=True, exist_ok=True)
        scenario_file = where / "scenario.toml"
        scenario_file.write_text(tomli_w.dumps(data))
        code, run_folder, results = launch(
            LaunchOptions(scenario_file, out=where / "run", quiet=True)
        )
        attack_path = run_folder / "attack.json"
        attack = json.loads(attack_path.read_text()) if attack_path.exists() else None
        outcomes.append({"seed": seed, "exit": code, "results": results, "attack": attack})
    return outcomes


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(variant: Variant, outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    attacks = [o["attack"] for o in outcomes if o["attack"]]
    errors = {
        k: _median([a["errors"][k] for a in attacks])
        for k in ("pmax", "pmin", "a", "b", "passive_a", "passive_b")
    }
    first = attacks[0] if attacks else {}
    results = [o["results"] for o in outcomes if o["results"]]
    aborted = [o for o in outcomes if o["exit"] == 3]
    return {
        "variant": variant.name,
        "label": variant.label,
        "runs": len(outcomes),
        "exit": [o["exit"] for o in outcomes],
        "errors": errors,
        "rounds_honest": first.get("honest", {}).get("rounds"),
        "rounds_attacked": _median([r["rounds"] for r in results]),
        "welfare_change": _median([a.get("outcome", {}).get("welfare_change") for a in attacks]),
        "welfare_loss_i6": _median(
            [a.get("honest", {}).get("welfare_loss_vs_optimum") for a in attacks]
        ),
        "checks_fired": sum(a["detection"]["pair_check_failures"] for a in attacks),
        "first_detection": first.get("detection", {}).get("first_round"),
        "aborted": bool(aborted),
        "abort_round": _abort_round(aborted),
        "abort_reported": any(o["attack"] for o in aborted),
    }


def _abort_round(aborted: Sequence[Mapping[str, Any]]) -> int | None:
    """The first round with a violation among the aborted runs, or None when none says.

    The run's own violations (results.json) count as well as attack.json's first pair-check
    failure: they hold every reason (a refused proof aborts too), and they survive a run whose
    attack report is missing. A run that died before writing results.json has neither, and
    then there is no round to report — "round None" would be untrue.
    """
    rounds = [
        v["round"]
        for o in aborted
        for v in (o["results"] or {}).get("violations", [])
        if v.get("round") is not None
    ]
    rounds += [
        o["attack"]["detection"]["first_round"]
        for o in aborted
        if o["attack"] and o["attack"]["detection"].get("first_round") is not None
    ]
    return min(rounds, default=None)


def _aborted_text(row: Mapping[str, Any]) -> str:
    """The rounds cell of an aborted variant: only what the runs' files actually say."""
    if row["abort_round"] is not None:
        return f"aborted in round {row['abort_round']}"
    if not row["abort_reported"]:
        return "aborted before the attack reported"
    return "aborted, no violation recorded"


def _cell(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.2g}"  # None or NaN: nothing to show


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "| variant | Pmax err | Pmin err | a err | b err | passive a / b err | "
        "rounds honest → attacked | welfare change (attack) | welfare loss vs optimum "
        "(honest run) | checks fired |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        e = r["errors"]
        honest = "–" if r["rounds_honest"] is None else str(r["rounds_honest"])
        rounds = f"{honest} → {r['rounds_attacked']:.0f}" if r["rounds_attacked"] else "–"
        if r["aborted"]:
            rounds = _aborted_text(r)
        checks = f"{r['checks_fired']}" + (
            f", first in round {r['first_detection']}" if r["first_detection"] is not None else ""
        )
        lines.append(
            f"| {r['label']} | {_cell(e['pmax'])} | {_cell(e['pmin'])} | {_cell(e['a'])} | "
            f"{_cell(e['b'])} | {_cell(e['passive_a'])} / {_cell(e['passive_b'])} | {rounds} | "
            f"{_cell(r['welfare_change'])} | {_cell(r['welfare_loss_i6'])} | {checks} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = ("pmax", "pmin", "a", "b")
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(keys)
    floor = 1e-16  # an exact estimate still gets a visible bar on the log axis
    for j, key in enumerate(keys):
        values = [
            np.nan if r["errors"][key] is None else max(r["errors"][key], floor) for r in rows
        ]
        ax.bar(np.arange(len(rows)) + j * width, values, width, label=key)
    ax.set_yscale("log")
    for i, r in enumerate(rows):  # no estimate at all (the run aborted): say so, draw nothing
        if all(r["errors"][key] is None for key in keys):
            ax.text(
                i + 0.3,
                0.5,
                "aborted:\nno estimate",
                ha="center",
                fontsize=8,
                transform=ax.get_xaxis_transform(),
            )
    ax.set_xticks(np.arange(len(rows)) + 0.3, [r["variant"] for r in rows], rotation=20)
    ax.set_ylabel("relative error of the estimate")
    ax.set_title("What colluding neighbours learn about the target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: Every variant's name, for ``--only`` (the names do not depend on keys or seeds).
VARIANT_NAMES = tuple(v.name for v in variants(KEYS_1024, 1))


def check_only(only: Sequence[str]) -> None:
    """Refuse unknown variant names before any run starts (an empty table helps nobody)."""
    unknown = [name for name in only if name not in VARIANT_NAMES]
    if unknown:
        raise ValueError(
            f"--only: unknown variant {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(VARIANT_NAMES)}"
        )


def run_experiment(
    scenario: Path, out: Path, *, key_bits: int = 1024, seeds: int = 5, only: Sequence[str] = ()
) -> list[dict[str, Any]]:
    check_only(only)
    base = tomllib.loads(scenario.read_text())
    if "attack" not in base:
        raise ValueError(f"{scenario}: the scenario has no [attack] table")
    key_privacy = dict(KEYS_1024) if key_bits < 2048 else {"mode": "paillier", "key_bits": key_bits}
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in variants(key_privacy, seeds):
        if only and variant.name not in only:
            continue
        rows.append(summarise(variant, run_variant(base, variant, out)))
    (out / "collusion.json").write_text(dumps(rows) + "\n")
    (out / "collusion.md").write_text(
        f"# Collusion experiment: {scenario.name}\n\nPaillier keys: {key_bits} bits. "
        "Generated by `privgrid experiment collusion`.\n\n" + table(rows)
    )
    plot(rows, out / "collusion.png")
    return rows


# --- I6 over many sessions, in one process (``privgrid experiment perturbation``) -------------
#: Sessions per I6 level of ``privgrid experiment collusion`` (its ``--seeds`` default): the
#: perturbation experiment shows what the first this many of its draws give as well.
WIRE_SESSIONS = 5
#: The rows of perturbation.md per level: (summary column, label).
PERTURBATION_ROWS = (
    ("b_error", "b error (coalition's estimate)"),
    ("a_error", "a error (coalition's estimate)"),
    ("pmax_error", "Pmax error (coalition's estimate)"),
    ("pmin_error", "Pmin error (coalition's estimate)"),
    ("played_b_error", "b̃ error (the played b, every session)"),
    ("welfare_loss", "welfare loss vs optimum"),
)


def i6_scenarios(scenario: Path) -> dict[str, Any]:
    """Each I6 variant's scenario, edited exactly as ``privgrid experiment collusion`` edits it
    (plain mode, pair checks, masked LM leg, the target's noise)."""
    from privgrid.scenario import parse_scenario

    base = tomllib.loads(scenario.read_text())
    if "attack" not in base:
        raise ValueError(f"{scenario}: the scenario has no [attack] table")
    out = {}
    for variant in variants(KEYS_1024, 1):
        if variant.name in I6_LEVELS:
            data = json.loads(json.dumps(base))
            variant.edit(data)
            out[variant.name] = parse_scenario(data, scenario)
    return out


def _level_label(noise: Mapping[str, float]) -> str:
    return f"({noise['sigma_b']:g}, {noise['r']:g}, {noise['w']:g})"


def perturbation_table(levels: Sequence[Mapping[str, Any]], first: int) -> str:
    """perturbation.md's table: per level and quantity, the spread over every session, the
    median of the first ``first`` sessions (what a ``first``-session wire run reports) and the
    5–95 % range of such medians over disjoint groups of ``first`` sessions."""
    lines = [
        "| I6 (σ_b, r, w) | quantity | sessions with a value | median | IQR (25–75 %) | "
        f"5–95 % | median of sessions 0–{first - 1} (the wire experiment's) | "
        f"median of {first} sessions: 5–95 % |",
        "|" + "---|" * 8,
    ]
    for level in levels:
        for key, label in PERTURBATION_ROWS:
            stats = level["summary"][key]
            every, few, groups = stats["all"], stats["first"], stats["medians_of_first"]
            if every is None:
                cells = ["0", "–", "–", "–", "–", "–"]
            else:
                cells = [
                    f"{every['n']} of {level['sessions_run']}",
                    _cell(every["median"]),
                    f"{_cell(every['q25'])} – {_cell(every['q75'])}",
                    f"{_cell(every['p5'])} – {_cell(every['p95'])}",
                    "–" if few is None else _cell(few["median"]),
                    "–" if groups is None else f"{_cell(groups['p5'])} – {_cell(groups['p95'])}",
                ]
            row = [_level_label(level["noise"]), label, *cells]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_perturbation(levels: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Histograms (log x) of the b error and the welfare loss per level, medians marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        ("b", "relative error of the coalition's b estimate (sessions with one)"),
        ("welfare_loss", "welfare loss vs the optimum (relative)"),
    )
    for ax, (key, xlabel) in zip(axes, panels, strict=True):
        samples = []  # per level: the values that exist (a loss may be ≤ 0 at the 1e-6 level)
        for level in levels:
            values = [
                s["welfare_loss"] if key == "welfare_loss" else s["errors"][key]
                for s in level["sessions"]
            ]
            samples.append(np.array([v for v in values if v is not None], dtype=float))
        positive = np.concatenate([v[v > 0] for v in samples]) if samples else np.array([])
        if positive.size == 0:
            continue
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 40)
        for level, sample, color in zip(levels, samples, ("tab:blue", "tab:red"), strict=False):
            label = f"(σ_b, r, w) = {_level_label(level['noise'])}"
            shown = sample[sample > 0]  # a log axis
            ax.hist(shown, bins=bins, histtype="step", lw=1.5, color=color, label=label)
            ax.axvline(float(np.median(sample)), color=color, ls="--", lw=1)  # as in the table
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("sessions")
        ax.legend(fontsize=8)
    fig.suptitle(f"I6 over {levels[0]['sessions_run']} sessions per level (dashed: median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_perturbation(scenario: Path, out: Path, *, draws: int = 1000) -> list[dict[str, Any]]:
    """``draws`` sessions per I6 level, in one process; writes ``perturbation.json`` (every
    session and every statistic), ``perturbation.md`` (the table) and ``perturbation.png``.

    Raises:
        ValueError: no ``[attack]`` in the scenario, or ``draws`` < 1.
        ScenarioError: the scenario is invalid.
    """
    from privgrid.attack.perturbation import sessions, summary

    if draws < 1:
        raise ValueError(f"--draws must be at least 1 (got {draws})")
    levels = []
    for name, edited in i6_scenarios(scenario).items():
        drawn = sessions(edited, draws)
        target = edited.agent(edited.attack.target)
        levels.append(
            {
                "variant": name,
                "noise": dict(I6_LEVELS[name]),
                "target": target.id,
                "truth": {"a": target.a, "b": target.b, "pmin": target.pmin, "pmax": target.pmax},
                "first_seed": edited.scenario.seed,
                "sessions_run": len(drawn),
                "no_estimate": sum(s.errors["b"] is None for s in drawn),
                "not_converged": sum(not s.converged for s in drawn),
                "summary": summary(drawn, WIRE_SESSIONS),
                "sessions": [s.as_dict() for s in drawn],
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "perturbation.json").write_text(json.dumps(levels, indent=1) + "\n")
    notes = "".join(
        f"- {_level_label(level['noise'])}: {level['no_estimate']} of {level['sessions_run']} "
        "sessions without an estimate of (a, b); "
        f"{level['not_converged']} honest negotiations did not converge.\n"
        for level in levels
    )
    (out / "perturbation.md").write_text(
        f"# Objective perturbation (I6): {scenario.name}, {draws} sessions per level\n\n"
        "Generated by `privgrid experiment perturbation` (in one process; session i uses "
        f"scenario seed {levels[0]['first_seed']} + i, so sessions 0–{WIRE_SESSIONS - 1} are "
        "those of `privgrid experiment collusion`). Errors are relative to the target's true "
        "data.\n\n" + perturbation_table(levels, WIRE_SESSIONS) + "\n" + notes
    )
    plot_perturbation(levels, out / "perturbation.png")
    return levels
