"""``privgrid compose`` without Docker: the generated file, the setup step, the exec wrapper.

The checked-in compose files must be what the generator makes today (the first tests fail
with the command that regenerates them). The setup step and the wrapper run here as plain
functions and subprocesses; tests/docker/test_grid_compose.py runs them in containers.
"""

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w
import yaml
from click.testing import CliRunner

from privgrid.broker.config import DASHBOARD, MONITOR, BrokerUsers
from privgrid.cli import main
from privgrid.compose import common, document
from privgrid.compose.setup import Owner, SetupResult, setup_grid
from privgrid.compose.supervisor import broker_url_with_password, report_argv
from privgrid.crypto.identity import Identity, Roster
from privgrid.scenario import load_scenario

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
COLLUSION = ROOT / "configs" / "collusion.toml"
PARTICIPANTS = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]
IS_ROOT = os.geteuid() == 0


def regenerate_hint(scenario: Path, output: Path) -> str:
    return (
        f"{output.name} is out of date: run `privgrid compose "
        f"{scenario.relative_to(ROOT)} -o {output.name}` and commit the result"
    )


# -- the checked-in files ------------------------------------------------------------------


def test_checked_in_compose_yaml_is_up_to_date():
    output = ROOT / "compose.yaml"
    assert output.exists(), regenerate_hint(PAPER, output)
    assert output.read_text() == document.generate(PAPER, output), regenerate_hint(PAPER, output)


def test_checked_in_collusion_compose_file_is_up_to_date():
    if not COLLUSION.exists():
        pytest.skip("configs/collusion.toml does not exist (yet)")
    output = ROOT / "compose.collusion.yaml"
    assert output.exists(), regenerate_hint(COLLUSION, output)
    assert output.read_text() == document.generate(COLLUSION, output), regenerate_hint(
        COLLUSION, output
    )


def test_check_flag_reports_an_out_of_date_file(tmp_path):
    output = tmp_path / "compose.yaml"
    runner = CliRunner()
    written = runner.invoke(main, ["compose", str(PAPER), "-o", str(output)])
    assert written.exit_code == 0, written.output
    assert runner.invoke(main, ["compose", str(PAPER), "-o", str(output), "--check"]).exit_code == 0
    output.write_text(output.read_text().replace("agent-s1", "agent-x1"))
    stale = runner.invoke(main, ["compose", str(PAPER), "-o", str(output), "--check"])
    assert stale.exit_code == 1 and "out of date" in stale.output


def test_invalid_scenario_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(PAPER.read_text().replace("a = 0.04", "a = -1.0", 1))
    result = CliRunner().invoke(main, ["compose", str(bad), "-o", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "must be > 0" in result.output
    assert not (tmp_path / "c.yaml").exists()


# -- what the file says ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_doc() -> dict:
    text = document.generate(PAPER, ROOT / "compose.yaml")
    assert text == document.generate(PAPER, ROOT / "compose.yaml"), "not deterministic"
    return yaml.safe_load(text)


def test_services_broker_lm_mo_and_one_per_agent(paper_doc):
    assert paper_doc["version"] == "3.8"  # Debian's docker-compose 1.29 needs it
    services = paper_doc["services"]
    assert list(services) == [
        "setup",
        "broker",
        "lm",
        "mo",
        *(f"agent-{a.lower()}" for a in PARTICIPANTS[:7]),
        "dashboard",
    ]
    assert paper_doc["networks"] == {"grid": {"internal": True}, "dashboard": {}}


def test_dashboard_service_is_read_only_on_loopback_with_its_own_account(paper_doc):
    """Published on the host's loopback only (a variable may change it), its own broker
    account (password from its file), the run folder and its secrets read-only: the roster
    and its password, nobody else's."""
    service = paper_doc["services"]["dashboard"]
    assert service["ports"] == ["${PRIVGRID_DASHBOARD:-127.0.0.1:8050}:8050"]
    assert service["networks"] == ["grid", "dashboard"]  # grid is internal: cannot publish
    assert service["user"] == "${PRIVGRID_UID:-10001}:${PRIVGRID_GID:-10001}"
    assert service["environment"]["PRIVGRID_BROKER_URL"] == "mqtt://dashboard@broker:1883"
    assert service["volumes"] == [
        "./secrets/paper/dashboard:/run/secrets/privgrid:ro",
        "./runs/${PRIVGRID_RUN:-paper}:/app/runs/${PRIVGRID_RUN:-paper}:ro",
    ]
    assert service["command"][:2] == ["dashboard", "runs/${PRIVGRID_RUN:-paper}"]
    assert service["command"][-2:] == ["--roster", "/run/secrets/privgrid/roster.json"]
    assert service["depends_on"] == {"broker": {"condition": "service_healthy"}}


def test_broker_service(paper_doc):
    broker = paper_doc["services"]["broker"]
    assert broker["image"] == "${PRIVGRID_MOSQUITTO_IMAGE:-eclipse-mosquitto:2}"
    assert broker["user"] == "${PRIVGRID_BROKER_UID:-1883}:${PRIVGRID_BROKER_GID:-1883}"
    assert broker["depends_on"] == {"setup": {"condition": "service_healthy"}}
    assert "./secrets/paper/broker:/mosquitto/config:ro" in broker["volumes"]
    assert "broker-data:/mosquitto/data" in broker["volumes"]  # persistence
    assert broker["healthcheck"]["test"] == ["CMD", "sh", "/mosquitto/config/healthcheck.sh"]


def test_setup_service_has_no_network_and_builds_the_image(paper_doc):
    setup = paper_doc["services"]["setup"]
    assert setup["network_mode"] == "none"
    assert setup["build"]["context"] == "."
    assert setup["build"]["args"] == {"BASE_IMAGE": "${PRIVGRID_BASE_IMAGE:-python:3.12-slim}"}
    assert setup["environment"]["PRIVGRID_RUN"] == "${PRIVGRID_RUN:-paper}"
    assert setup["healthcheck"]["test"][-1] == common.READY_FILE


@pytest.mark.parametrize("participant", PARTICIPANTS)
def test_each_participant_gets_only_its_own_secrets(paper_doc, participant):
    service = paper_doc["services"][document.service_name(participant)]
    env = service["environment"]
    assert service["image"] == "${PRIVGRID_IMAGE:-privgrid:latest}"
    assert "build" not in service  # built once, by setup
    assert service["user"] == "${PRIVGRID_UID:-10001}:${PRIVGRID_GID:-10001}"
    assert service["depends_on"] == {"broker": {"condition": "service_healthy"}}
    assert env["PRIVGRID_BROKER_URL"] == f"mqtt://{participant}@broker:1883"  # no password
    assert env["PRIVGRID_BROKER_PASSWORD_FILE"] == "/run/secrets/privgrid/broker.password"
    assert env["PRIVGRID_RUN"] == "${PRIVGRID_RUN:-paper}"
    secrets = [v for v in service["volumes"] if "secrets" in v]
    assert secrets == [f"./secrets/paper/{participant}:/run/secrets/privgrid:ro"]
    runs = [v for v in service["volumes"] if v.startswith("./runs")]
    assert runs == (
        ["./runs/${PRIVGRID_RUN:-paper}:/app/runs/${PRIVGRID_RUN:-paper}"]
        if participant == "MO"
        else []
    )
    assert service["labels"]["org.privgrid.participant"] == participant


def test_role_commands(paper_doc):
    services = paper_doc["services"]
    scenario = "/privgrid/scenario/paper.toml"
    assert services["agent-s1"]["command"] == ["agent", "--id", "S1", "--scenario", scenario]
    assert services["lm"]["command"] == ["lm", "--scenario", scenario]
    assert services["mo"]["command"] == [
        "mo",
        "--scenario",
        scenario,
        "--out",
        "runs/${PRIVGRID_RUN:-paper}",
    ]
    for service in services.values():
        if service.get("entrypoint", [None])[-1] == "exec":
            assert service["entrypoint"] == ["python", "-m", "privgrid.compose", "exec"]
    # The MO's container reports the run from its record once the MO has ended.
    assert services["mo"]["entrypoint"] == ["python", "-m", "privgrid.compose", "exec", "--report"]
    assert report_argv(services["mo"]["command"]) == [
        "report",
        "runs/${PRIVGRID_RUN:-paper}",
        "--scenario",
        scenario,
    ]
    assert report_argv(services["lm"]["command"]) is None


def test_no_secret_in_the_compose_file(tmp_path):
    """The file names secrets only by path: not one generated password or key appears."""
    result = _setup(tmp_path)
    text = document.generate(PAPER, ROOT / "compose.yaml")
    users = BrokerUsers.load(result.project / "broker.json")
    for password in users.passwords.values():
        assert password not in text
    for pid in PARTICIPANTS:
        key = (result.project / pid / f"{pid}.key").read_text()
        assert key.splitlines()[1] not in text


def _attack_scenario(tmp_path: Path) -> Path:
    """paper.toml with B1 and B2 colluding against S1 (they both trade with it)."""
    data = tomllib.loads(PAPER.read_text())
    data["scenario"]["name"] = "paper-attack"
    data["attack"] = {"target": "S1", "colluders": ["B1", "B2"]}
    path = tmp_path / "configs" / "attack.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path


def test_colluders_write_their_estimates_to_the_run_folder(tmp_path):
    scenario = _attack_scenario(tmp_path)
    doc = yaml.safe_load(document.generate(scenario, tmp_path / "compose.attack.yaml"))
    services = doc["services"]
    for colluder in ("agent-b1", "agent-b2"):
        assert services[colluder]["command"][-2:] == [
            "--report",
            "runs/${PRIVGRID_RUN:-paper-attack}",
        ]
        assert services[colluder]["labels"]["org.privgrid.colluder"] == "true"
        assert any(v.startswith("./runs/") for v in services[colluder]["volumes"])
    for honest in ("agent-s1", "agent-b3", "lm"):
        assert "--report" not in services[honest]["command"]
        assert not any(v.startswith("./runs/") for v in services[honest]["volumes"])
        assert "org.privgrid.colluder" not in services[honest]["labels"]


def test_paths_are_relative_to_the_compose_file(tmp_path):
    scenario = tmp_path / "configs" / "paper.toml"
    scenario.parent.mkdir()
    scenario.write_text(PAPER.read_text())
    text = document.generate(scenario, tmp_path / "compose.yaml")
    doc = yaml.safe_load(text)
    assert "./configs:/privgrid/scenario:ro" in doc["services"]["agent-s1"]["volumes"]
    assert "privgrid compose configs/paper.toml -o compose.yaml" in text
    # The repository is elsewhere: the build context is its absolute path.
    assert doc["services"]["setup"]["build"]["context"] == str(ROOT)


def test_service_names_must_not_collide(tmp_path):
    data = tomllib.loads(PAPER.read_text())
    data["agents"][1]["id"] = "s1"  # S1 and s1 would both be agent-s1
    path = tmp_path / "clash.toml"
    path.write_text(tomli_w.dumps(data))
    with pytest.raises(common.ComposeError, match="agent-s1"):
        document.generate(path, tmp_path / "compose.yaml")


# -- setup ------------------------------------------------------------------------------------


def _setup(tmp_path: Path, run: str = "paper", scenario: Path = PAPER) -> SetupResult:
    data = tmp_path / "broker-data"
    data.mkdir(exist_ok=True)
    name = load_scenario(scenario).name
    return setup_grid(
        scenario,
        name,
        run,
        secrets_root=tmp_path / "secrets",
        runs_root=tmp_path / "runs",
        broker_data=data,
        owner=Owner(10001, 10001),
        broker_owner=Owner(1883, 1883),
    )


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_setup_writes_one_private_folder_per_participant(tmp_path):
    result = _setup(tmp_path)
    project = tmp_path / "secrets" / "paper"
    roster = Roster.load(project / "keys" / "roster.json")
    users = BrokerUsers.load(project / "broker.json")
    assert set(users.passwords) == {*PARTICIPANTS, MONITOR, DASHBOARD}
    dashboard = project / DASHBOARD  # the public roster and its own password, nothing else
    assert sorted(p.name for p in dashboard.iterdir()) == ["broker.password", "roster.json"]
    assert (dashboard / "broker.password").read_text() == users.passwords[DASHBOARD]
    assert Roster.load(dashboard / "roster.json") == roster
    assert _mode(dashboard / "broker.password") == 0o600
    for pid in PARTICIPANTS:
        folder = project / pid
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["roster.json", f"{pid}.key", "broker.password"]
        )
        assert _mode(folder) == 0o700
        assert _mode(folder / f"{pid}.key") == 0o600
        assert _mode(folder / "broker.password") == 0o600
        identity = Identity.load(folder / f"{pid}.key", require_private_mode=True)
        roster.check_identity(pid, identity)
        assert (folder / "broker.password").read_text() == users.passwords[pid]
        assert Roster.load(folder / "roster.json") == roster
        if IS_ROOT:
            assert (folder.stat().st_uid, (folder / f"{pid}.key").stat().st_uid) == (10001, 10001)
    assert result.run_folder == tmp_path / "runs" / "paper" and result.run_folder.is_dir()
    if IS_ROOT:
        assert result.run_folder.stat().st_uid == 10001


def test_setup_writes_the_broker_configuration(tmp_path):
    _setup(tmp_path, run="demo-1")
    broker = tmp_path / "secrets" / "paper" / "broker"
    assert sorted(p.name for p in broker.iterdir()) == [
        "acl",
        "healthcheck.sh",
        "monitor.password",
        "mosquitto.conf",
        "passwd",
    ]
    for path in [broker, *broker.iterdir()]:
        assert _mode(path) & 0o077 == 0, path
        if IS_ROOT:
            assert path.stat().st_uid == 1883, path
    conf = (broker / "mosquitto.conf").read_text()
    assert "listener 1883 0.0.0.0" in conf
    assert "allow_anonymous false" in conf
    assert "password_file /mosquitto/config/passwd" in conf
    assert "acl_file /mosquitto/config/acl" in conf
    assert "persistence true" in conf and "persistence_location /mosquitto/data/" in conf
    passwd = (broker / "passwd").read_text().splitlines()
    assert sorted(line.split(":")[0] for line in passwd) == sorted(
        [*PARTICIPANTS, MONITOR, DASHBOARD]
    )
    assert all(line.split(":")[1].startswith("$7$") for line in passwd)
    acl = (broker / "acl").read_text()
    # Scoped to the run id the compose file pins; S1 writes only as S1, reads only its inbox.
    assert "user S1\ntopic read privgrid/demo-1/to/S1/#\n" in acl
    assert "topic write privgrid/demo-1/to/+/S1/+" in acl
    assert "privgrid/paper/" not in acl
    assert "collusion" not in acl
    script = (broker / "healthcheck.sh").read_text()
    assert "-u monitor" in script and "privgrid/demo-1/health" in script


def test_colluders_alone_get_the_coalition_topic(tmp_path):
    result = _setup(tmp_path, run="x", scenario=_attack_scenario(tmp_path))
    acl = (result.project / "broker" / "acl").read_text()
    blocks = {b.split("\n")[0]: b for b in acl.split("\n\n") if b.startswith("user ")}
    for user in ("B1", "B2"):
        assert "topic write privgrid/x/collusion/coalition" in blocks[f"user {user}"]
    for user in ("S1", "B3", "LM", "MO"):
        assert "collusion" not in blocks[f"user {user}"]
    assert result.colluders == ["B1", "B2"]


def test_setup_again_keeps_keys_and_passwords_and_clears_the_broker_state(tmp_path):
    first = _setup(tmp_path)
    project = first.project
    keys = {pid: (project / pid / f"{pid}.key").read_bytes() for pid in PARTICIPANTS}
    passwords = BrokerUsers.load(project / "broker.json").passwords
    stale = tmp_path / "broker-data" / "mosquitto.db"
    stale.write_bytes(b"old sessions")
    second = _setup(tmp_path, run="again")
    assert second.reused_passwords and not first.reused_passwords
    assert {pid: (project / pid / f"{pid}.key").read_bytes() for pid in PARTICIPANTS} == keys
    assert BrokerUsers.load(project / "broker.json").passwords == passwords
    assert not stale.exists()
    assert "privgrid/again/" in (project / "broker" / "acl").read_text()


@pytest.mark.skipif(not IS_ROOT, reason="changing owners needs root")
def test_setup_gives_an_earlier_run_folder_to_the_new_uid(tmp_path):
    _setup(tmp_path)
    ledger = tmp_path / "runs" / "paper" / "ledger.sqlite"
    ledger.write_bytes(b"")
    os.chown(ledger, 4242, 4242)
    _setup(tmp_path)
    assert ledger.stat().st_uid == 10001


def test_setup_refuses_a_bad_run_id_or_another_scenario(tmp_path):
    with pytest.raises(common.ComposeError, match="PRIVGRID_RUN"):
        _setup(tmp_path, run="../etc")
    with pytest.raises(common.ComposeError, match="regenerate"):
        setup_grid(
            PAPER,
            "collusion",
            "paper",
            secrets_root=tmp_path / "s",
            runs_root=tmp_path / "r",
            broker_data=None,
            owner=Owner(10001, 10001),
            broker_owner=Owner(1883, 1883),
        )


def _setup_command(tmp_path: Path, ready: Path, *extra: str, **env: str):
    """``python -m privgrid.compose setup --once`` for the paper scenario, as compose runs it."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "privgrid.compose", "setup", "--scenario", str(PAPER)),
            *("--name", "paper", "--secrets", str(tmp_path / "secrets")),
            *("--runs", str(tmp_path / "runs"), "--ready", str(ready), "--once", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_setup_command_marks_ready_and_exits_with_once(tmp_path):
    ready = tmp_path / "ready"
    proc = _setup_command(
        tmp_path, ready, "--broker-data", str(tmp_path / "none"), PRIVGRID_RUN="r1"
    )
    assert proc.returncode == 0, proc.stderr
    assert ready.read_text() == "r1\n"
    assert "run r1" in proc.stderr and "9 participants" in proc.stderr
    bad = _setup_command(tmp_path, tmp_path / "ready2", PRIVGRID_UID="x")
    assert bad.returncode == 2 and "PRIVGRID_UID='x' must be a number" in bad.stderr
    assert not (tmp_path / "ready2").exists()


# -- exec ----------------------------------------------------------------------------------------


def test_broker_url_gets_the_password_from_its_file(tmp_path):
    secret = tmp_path / "broker.password"
    secret.write_text("p@ss/w:rd\n")
    env = {common.ENV_URL: "mqtt://S1@broker:1883", common.ENV_PASSWORD_FILE: str(secret)}
    url = broker_url_with_password(env)
    assert url == "mqtt://S1:p%40ss%2Fw%3Ard@broker:1883"
    from privgrid.wire.session import BrokerUrl

    parsed = BrokerUrl.parse(url)
    assert (parsed.username, parsed.password, parsed.host, parsed.port) == (
        "S1",
        "p@ss/w:rd",
        "broker",
        1883,
    )
    with pytest.raises(common.ComposeError, match="cannot read"):
        broker_url_with_password({**env, common.ENV_PASSWORD_FILE: str(tmp_path / "x")})
    assert broker_url_with_password({common.ENV_URL: "mqtt://h:1"}) == "mqtt://h:1"


#: Runs run_role in its own process (it installs signal handlers), with a fake role command.
_RUNNER = """
import sys
from privgrid.compose.supervisor import run_role
linger, grace, child = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
code = run_role([], {}, linger=linger, stop_grace=grace, who="T",
                command=[sys.executable, "-c", child])
print("code", code, flush=True)
sys.exit(code)
"""


def _wrapper(linger: float, grace: float, child: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(linger), str(grace), child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_finished_participant_stays_up_until_stopped():
    wrapper = _wrapper(60, 0, "import sys; sys.exit(0)")
    assert wrapper.stderr is not None
    said = ""  # the wrapper's note that its child ended is the event waited for
    while "staying up" not in said and (line := wrapper.stderr.readline()):
        said += line
    assert "finished with status 0; staying up" in said
    assert wrapper.poll() is None, "it should linger after its process ended"
    started = time.monotonic()
    wrapper.send_signal(signal.SIGTERM)
    wrapper.communicate(timeout=10)
    assert wrapper.returncode == 0 and time.monotonic() - started < 5


def test_linger_ends_by_itself_and_keeps_the_exit_status():
    wrapper = _wrapper(0.5, 0, "import sys; sys.exit(3)")
    wrapper.communicate(timeout=20)
    assert wrapper.returncode == 3


def _child_started(marker: Path, timeout: float = 60) -> None:
    """Wait until the wrapped child runs (the wrapper's signal handlers are in place by then;
    a fixed sleep was too short on a loaded machine, where imports take seconds)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert time.monotonic() < deadline, "the wrapped child never started"
        time.sleep(0.05)


def _touching(marker: Path, then: str) -> str:
    return f"import pathlib; pathlib.Path({str(marker)!r}).touch(); {then}"


def test_the_mo_may_finish_its_report_before_it_is_stopped(tmp_path):
    # The child ignores nothing: it simply needs 2 s; grace 20 s lets it end by itself.
    marker = tmp_path / "started"
    wrapper = _wrapper(0, 20, _touching(marker, "import time, sys; time.sleep(2); sys.exit(5)"))
    _child_started(marker)
    wrapper.send_signal(signal.SIGTERM)
    out, _ = wrapper.communicate(timeout=20)
    assert wrapper.returncode == 5 and "code 5" in out


def test_a_stop_is_passed_on_after_the_grace(tmp_path):
    marker = tmp_path / "started"
    wrapper = _wrapper(60, 0.5, _touching(marker, "import time; time.sleep(60)"))
    _child_started(marker)
    started = time.monotonic()
    wrapper.send_signal(signal.SIGTERM)
    out, _ = wrapper.communicate(timeout=20)
    assert wrapper.returncode == 128 + signal.SIGTERM and "code 143" in out
    assert time.monotonic() - started < 10  # no linger after a stop request


def test_exec_refuses_a_missing_password_file(tmp_path):
    env = {
        **os.environ,
        common.ENV_URL: "mqtt://S1@broker:1883",
        common.ENV_PASSWORD_FILE: str(tmp_path / "missing"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "privgrid.compose", "exec", "agent", "--id", "S1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "cannot read the broker password" in proc.stderr
    assert " S1 " in proc.stderr


def test_docs_give_the_commands():
    """docs/docker.md shows what the generated file and the setup step do."""
    text = (ROOT / "docs" / "docker.md").read_text()
    for needle in (
        "docker compose up --build --abort-on-container-exit --exit-code-from mo",
        "docker compose logs -f agent-s1",
        "runs/paper/results.json",
        "secrets/paper/S1",
        "PRIVGRID_UID",
        "privgrid compose configs/collusion.toml -o compose.collusion.yaml",
    ):
        assert needle in text, needle
