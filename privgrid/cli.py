"""The ``privgrid`` command. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from privgrid.market.central import InfeasibleMarketError
from privgrid.results import dumps
from privgrid.scenario import ScenarioError


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"privgrid: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="privgrid")
def main() -> None:
    """Privacy-preserving peer-to-peer energy trading: negotiation, grid and ledger."""


@main.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON results to this file.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder of a day scenario ([day]) [default: runs/<timestamp>-<scenario>]; for "
    "a single market, a folder to write results.json to.",
)
def solve(scenario: Path, as_json: bool, output: Path | None, out: Path | None) -> None:
    """Negotiate SCENARIO in one process and compare with the centralised optimum.

    Runs every role's update in sequence (no network, no crypto), solves the centralised
    social-welfare QP, checks the Proof-of-Solution (KKT) conditions and prints a summary.
    A day scenario (a [day] section on a SimBench feeder) clears every interval this way,
    warm-started, into a run folder (docs/feeder.md).
    Exit status: 0 when the negotiation converged and the KKT checks passed (for a day:
    every interval, each with its ledger block), 1 otherwise, 2 for invalid input.
    """
    from privgrid.feeder.schema import is_day, read_toml

    try:
        day = is_day(read_toml(scenario))
    except ScenarioError as exc:
        _fail(str(exc))
    if day:
        if output is not None:
            _fail(f"{scenario}: -o/--output: a day writes a run folder; use --out DIR")
        _solve_day(scenario, out, as_json)
        return
    from privgrid.console import print_summary
    from privgrid.solve import prepare
    from privgrid.solve import solve as run_solve

    try:
        _, setup = prepare(scenario)
    except (ScenarioError, InfeasibleMarketError) as exc:
        _fail(str(exc))
    results = run_solve(setup)
    text = dumps(results)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(text + "\n", encoding="utf-8")
    if as_json:
        click.echo(text)
    else:
        print_summary(results)
    sys.exit(0 if results["converged"] and results["kkt"]["passed"] else 1)


def _solve_day(scenario: Path, out: Path | None, as_json: bool) -> None:
    """``privgrid solve DAY.toml``: every interval in process, into a run folder."""
    import time

    from privgrid.feeder.day import prepare_day, run_day
    from privgrid.feeder.report import day_exit_status, interval_line, print_day_summary

    try:
        prepared = prepare_day(scenario)
        if out is None:
            out = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{prepared.day.name}"
        document = run_day(
            prepared, out, progress=None if as_json else lambda r: click.echo(interval_line(r))
        )
    except ScenarioError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(document["summary"], indent=2))
    else:
        print_day_summary(document)
    click.echo(f"run folder: {out}", err=True)
    sys.exit(day_exit_status(document))


@main.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option(
    "--privacy",
    type=click.Choice(["plain", "paillier"]),
    help="Override the scenario's privacy.mode.",
)
@click.option(
    "--broker", help="Use this broker (mqtt://user:pass@host:port) instead of starting one."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder [default: runs/<timestamp>-<scenario>].",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of the per-participant logs.",
)
@click.option(
    "--embedded-broker",
    is_flag=True,
    help="Use the embedded broker even if Mosquitto is installed.",
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append the block to this ledger [default: <run folder>/ledger.sqlite]. Successive "
    "runs on one ledger need the same identity keys (--keys).",
)
@click.option(
    "--keys",
    type=click.Path(file_okay=False, path_type=Path),
    help="Identity keys to use (created if missing) [default: new keys in the run folder].",
)
@click.option(
    "--agents-per-process",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Host K agents per OS process (each keeps its own keys, identity, MQTT client and "
    "logs/<id>.log); for 100+ agents on one machine.",
)
@click.option(
    "--restarts",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help='With [timeouts] on_missing = "wait": restart a crashed participant (agent, LM or '
    "MO: killed by a signal or an uncaught error) from its checkpoint, at most this many "
    "times each. Each restart is logged with the exit status and the command.",
)
@click.option(
    "--dashboard",
    metavar="[HOST:]PORT",
    help="Serve a live web page of the run (residuals, grid, participants) on this address "
    "(host default 127.0.0.1: this machine only) while it runs; docs/dashboard.md.",
)
@click.option(
    "--dashboard-broker",
    metavar="URL",
    help="With --broker and --dashboard: the dashboard's own read-only account on that broker "
    "(mqtt://USER:PASSWORD@HOST:PORT).",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Talk to the broker over TLS only: make a run CA and certificates in <keys>/tls and "
    "start Mosquitto with a TLS listener that takes each account from its client "
    "certificate (no password on the wire). Needs Mosquitto.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print results.json instead of tables (one JSON object, also when the run fails).",
)
def run(
    scenario: Path,
    privacy: str | None,
    broker: str | None,
    out: Path | None,
    log_format: str,
    embedded_broker: bool,
    ledger: Path | None,
    keys: Path | None,
    agents_per_process: int,
    restarts: int,
    dashboard: str | None,
    dashboard_broker: str | None,
    tls: bool,
    as_json: bool,
) -> None:
    """Run a whole grid for SCENARIO: broker, LM, MO and every agent as separate processes.

    Starts Mosquitto on a free loopback port (or an embedded broker if Mosquitto is not
    installed), shows progress, and writes runs/<timestamp>-<scenario>/ with results.json,
    trace.csv (appended round by round), logs/<participant>.log and plots/.

    A day scenario ([day], docs/feeder.md "Over the wire") clears its intervals one after
    another over the wire, every participant one process for the whole day (keys, genesis
    and one session once; one market session and one ledger block per interval, rounds
    continuing, warm-started), into the run folder of `privgrid solve DAY`
    (intervals/NNNN/results.json, day.json with "status" and "error", day.csv, the ledger,
    plots/) plus plan.json and logs/. Its exit status: 0 every interval converged with its
    block, 1 some did not, 2, 3 and 130 as below. --json prints day.json's status, error and
    summary.

    \b
    Exit status:
      0    converged, and the block committed to the ledger
      1    not converged (the round limit came first)
      2    invalid input (scenario, keys, ledger, checkpoint)
      3    a participant failed: crashed, timed out, violated the protocol, refused the block
      130  interrupted (Ctrl-C)

    Anything but 0 ends with one line on stderr giving the reason, after any tables; every
    run leaves results.json with "status" and "error".
    """
    from privgrid.broker.local import TLS_NEEDS_MOSQUITTO, mosquitto_binary
    from privgrid.console import print_summary
    from privgrid.dashboard.watch import DashboardError
    from privgrid.launcher import LaunchOptions, end_line, launch

    if tls and broker:
        _fail(
            "--tls starts its own Mosquitto; for a TLS broker of your own give "
            "--broker mqtts://HOST:PORT and the certificates in <keys>/tls (docs/deploy.md)"
        )
    if tls and (embedded_broker or mosquitto_binary() is None):
        _fail(TLS_NEEDS_MOSQUITTO)
    from privgrid.feeder.schema import is_day, read_toml

    try:
        day = scenario.suffix == ".toml" and is_day(read_toml(scenario))
    except ScenarioError:
        day = False  # the ordinary loader says what is wrong with the file
    options = LaunchOptions(
        scenario,
        privacy,
        broker,
        out,
        log_format,
        "embedded" if embedded_broker else "auto",
        ledger=ledger,
        keys=keys,
        agents_per_process=agents_per_process,
        restarts=restarts,
        dashboard=dashboard,
        dashboard_broker=dashboard_broker,
        tls=tls,
    )
    if day:
        _run_day(options, as_json)
    try:
        code, folder, results = launch(options)
    except (ScenarioError, InfeasibleMarketError, DashboardError) as exc:
        if as_json:  # stdout stays one JSON object
            click.echo(dumps({"status": "invalid_input", "error": str(exc)}))
        _fail(str(exc))
    if as_json:
        click.echo(dumps(results))
    else:
        print_summary(results)
        attack = folder / "attack.json"
        if attack.exists():
            from privgrid.console import print_attack_summary

            print_attack_summary(json.loads(attack.read_text()))
    sys.stdout.flush()
    click.echo(f"run folder: {folder}", err=True)
    last = end_line(code, results)
    if last is not None:
        click.echo(last, err=True)
    sys.exit(code)


def _run_day(options: object, as_json: bool) -> None:
    """``privgrid run DAY.toml``: a day over the wire (:mod:`privgrid.feeder.launch`)."""
    from privgrid.dashboard.watch import DashboardError
    from privgrid.feeder.launch import launch_day
    from privgrid.feeder.report import print_day_summary

    try:
        outcome = launch_day(options)  # type: ignore[arg-type]
    except (ScenarioError, InfeasibleMarketError, DashboardError) as exc:
        if as_json:  # stdout stays one JSON object
            click.echo(dumps({"status": "invalid_input", "error": str(exc)}))
        _fail(str(exc))
    document = outcome.document
    if as_json:  # day.json's ending and summary (the rows are in the run folder)
        keys = ("status", "error", "summary")
        click.echo(dumps({"exit": outcome.code, **{k: document.get(k) for k in keys}}))
    elif document.get("summary") is not None:
        print_day_summary(document)
    sys.stdout.flush()
    click.echo(f"run folder: {outcome.folder}", err=True)
    if outcome.reason is not None:
        click.echo(f"privgrid: day not cleared: {outcome.reason} (exit {outcome.code})", err=True)
    sys.exit(outcome.code)


@main.command(name="report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--scenario",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's scenario [default: RUN_DIR/scenario.toml, else the file the MO read].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def report_command(run_dir: Path, scenario: Path | None, as_json: bool) -> None:
    """Write a run's results from the MO's record: results.json, trace.csv, plots/.

    Reads RUN_DIR/protocol.json, which the MO writes at its end (protocol data only), and the
    scenario, whose private costs only this evaluator reads: the welfare, the centralised
    optimum and a replay of the negotiation (the trace's welfare column). `privgrid run`
    does this by itself once every process has exited; run it by hand after a Market
    Operator started alone.

    Exit status: 0 results written, 2 no record or no scenario, or invalid ones.
    """
    from privgrid.console import print_summary
    from privgrid.protocol_record import RecordError
    from privgrid.report import report_run

    try:
        results = report_run(
            run_dir, scenario, lambda text: click.echo(f"privgrid: warning: {text}", err=True)
        )
    except (RecordError, ScenarioError) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(dumps(results))
    else:
        print_summary(results)
    click.echo(f"wrote {run_dir / 'results.json'} ({results['status']})", err=True)


@main.group()
def keys() -> None:
    """Identity keys, the pinned roster and TLS certificates."""


@keys.command("init")
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("secrets"),
    show_default=True,
    help="Folder for roster.json and <id>.key files.",
)
@click.option("--force", is_flag=True, help="Make new keys even where valid ones exist.")
@click.option(
    "--tls",
    is_flag=True,
    help="Also make OUT/tls/: a run CA, the broker's certificate and one client certificate "
    "per participant and for monitor (for mqtts:// brokers; docs/deploy.md).",
)
@click.option(
    "--broker-name",
    "broker_names",
    multiple=True,
    metavar="NAME",
    help="A host name or IP address clients use to reach the broker, written into its "
    "certificate (repeatable) [default: localhost and 127.0.0.1].",
)
@click.option(
    "--tls-days",
    type=click.IntRange(min=1),
    default=365,
    show_default=True,
    help="Validity of the certificates, in days.",
)
def keys_init(
    scenario: Path,
    out: Path,
    force: bool,
    tls: bool,
    broker_names: tuple[str, ...],
    tls_days: int,
) -> None:
    """Write OUT/roster.json and one private key per participant (mode 0600).

    With --tls also OUT/tls/: ca.pem (every host needs it), ca.key (keep it here), broker.pem
    and broker.key (the broker host), and <id>.pem and <id>.key for every participant and
    monitor (each host only its own). Valid keys and certificates are kept unless --force.
    """
    from privgrid.crypto.tls import DEFAULT_BROKER_NAMES, TlsError
    from privgrid.keys import init_keys, init_run_tls
    from privgrid.scenario import load_scenario

    if broker_names and not tls:
        _fail("--broker-name needs --tls")
    try:
        loaded = load_scenario(scenario)
        roster = init_keys(loaded, out, force=force)
        made = (
            init_run_tls(
                loaded,
                out,
                broker_names=broker_names or DEFAULT_BROKER_NAMES,
                days=tls_days,
                force=force,
            )
            if tls
            else None
        )
    except (ScenarioError, TlsError) as exc:
        _fail(str(exc))
    click.echo(f"wrote {out / 'roster.json'} and {len(roster)} private keys to {out}/")
    if made is not None:
        names = ", ".join(broker_names or DEFAULT_BROKER_NAMES)
        click.echo(
            f"TLS in {made.folder}/: {'new' if made.new_ca else 'kept the'} run CA, "
            f"{len(made.made)} certificates made, {len(made.kept)} kept; the broker's names: "
            f"{names}"
        )


@main.group()
def experiment() -> None:
    """Reproducible experiments over many runs."""


@experiment.command("collusion")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for collusion.md, collusion.json, collusion.png and every run.",
)
@click.option(
    "--key-bits",
    type=int,
    default=1024,
    show_default=True,
    help="Paillier key size of the secure variants (1024: test keys, for speed).",
)
@click.option(
    "--seeds",
    type=int,
    default=5,
    show_default=True,
    help="Sessions (fresh I6 noise) per objective-perturbation level.",
)
@click.option("--only", multiple=True, help="Run only these variants (repeatable).")
def experiment_collusion(
    scenario: Path, out: Path, key_bits: int, seeds: int, only: tuple[str, ...]
) -> None:
    """Run SCENARIO's [attack] under plain, paper-2PC, hardened and I6 variants.

    Writes OUT/collusion.md: per variant, the relative errors of the coalition's estimates of
    the target's Pmax, Pmin, a and b, rounds honest → attacked, welfare change, and how many
    pair checks fired (protocol.md §9.3). Every run stays in OUT/<variant>/seed<i>/run.
    """
    from privgrid.experiment import run_experiment

    try:
        rows = run_experiment(scenario, out, key_bits=key_bits, seeds=seeds, only=only)
    except (ScenarioError, ValueError) as exc:
        _fail(str(exc))
    click.echo((out / "collusion.md").read_text())
    click.echo(
        f"wrote {out / 'collusion.md'}, collusion.json and collusion.png ({len(rows)} variants)",
        err=True,
    )


@experiment.command("perturbation")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for perturbation.md, perturbation.json and perturbation.png.",
)
@click.option(
    "--draws",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Sessions (fresh I6 noise) per level; session i uses scenario seed + i.",
)
def experiment_perturbation(scenario: Path, out: Path, draws: int) -> None:
    """I6 objective perturbation over many sessions, in one process.

    For each I6 level of `privgrid experiment collusion`, draws the target's perturbation
    DRAWS times and computes what that experiment reports per session — the coalition's
    estimate errors (its own coordinator and estimators, against the target's settled
    response) and the welfare loss against the optimum (the honest in-process negotiation) —
    then the median, interquartile range and 5–95 % range. Sessions 0–4 are the five sessions
    of the wire experiment. Writes OUT/perturbation.md, .json (every session) and .png.
    """
    from privgrid.experiment import run_perturbation

    try:
        run_perturbation(scenario, out, draws=draws)
    except (ScenarioError, ValueError) as exc:
        _fail(str(exc))
    click.echo((out / "perturbation.md").read_text())
    click.echo(f"wrote {out / 'perturbation.md'}, perturbation.json and perturbation.png", err=True)


def _add_role_commands() -> None:
    from privgrid.broker.command import broker_group
    from privgrid.compose.command import compose_command
    from privgrid.compose.swarm import swarm_group
    from privgrid.dashboard.command import dashboard_command
    from privgrid.ledger.cli import ledger
    from privgrid.roles.agent.process import main as agent_main
    from privgrid.roles.line_manager.process import main as lm_main
    from privgrid.roles.market_operator.process import main as mo_main

    main.add_command(agent_main, "agent")
    main.add_command(lm_main, "lm")
    main.add_command(mo_main, "mo")
    main.add_command(ledger, "ledger")
    main.add_command(compose_command, "compose")
    main.add_command(dashboard_command, "dashboard")
    main.add_command(broker_group, "broker")
    main.add_command(swarm_group, "swarm")


_add_role_commands()

if __name__ == "__main__":
    main()
