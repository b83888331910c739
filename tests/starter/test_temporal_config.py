"""Temporal Cloud or any cluster through Temporal's own environment configuration, nothing else.

These are the settings docs/deployment.md walks through; each must reach the client's connect
config exactly as written there.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.envconfig import ClientConfig
from temporalio.service import TLSConfig

from starter.client import connect_temporal
from starter.dev_state import dev_temporal_address

CLOUD_ADDRESS = "keycard.a1b2c.tmprl.cloud:7233"
CLOUD_NAMESPACE = "keycard.a1b2c"


def connect_config(env: dict[str, str]):
    # Nothing from the machine running the tests: only what the test gives.
    return ClientConfig.load_client_connect_config(override_env_vars=env)


def test_cloud_with_an_api_key():
    config = connect_config(
        {
            "TEMPORAL_ADDRESS": CLOUD_ADDRESS,
            "TEMPORAL_NAMESPACE": CLOUD_NAMESPACE,
            "TEMPORAL_API_KEY": "eyJhbGciOi.example",
        }
    )
    assert config["target_host"] == CLOUD_ADDRESS
    assert config["namespace"] == CLOUD_NAMESPACE
    assert config["api_key"] == "eyJhbGciOi.example"
    assert config["tls"] is True  # an API key implies TLS, as Temporal Cloud requires


def test_cloud_with_mtls_certificates(tmp_path: Path):
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nexample\n")
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nexample\n")
    config = connect_config(
        {
            "TEMPORAL_ADDRESS": CLOUD_ADDRESS,
            "TEMPORAL_NAMESPACE": CLOUD_NAMESPACE,
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(cert),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(key),
        }
    )
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == cert.read_bytes()
    assert tls.client_private_key == key.read_bytes()
    assert "api_key" not in config


def test_profile_file_with_environment_overrides(tmp_path: Path):
    profiles = tmp_path / "temporal.toml"
    profiles.write_text(
        f"""
[profile.prod]
address = "{CLOUD_ADDRESS}"
namespace = "{CLOUD_NAMESPACE}"
api_key = "from-the-file"
"""
    )
    env = {"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "prod"}
    config = connect_config(env)
    assert (config["target_host"], config["namespace"], config["api_key"]) == (
        CLOUD_ADDRESS,
        CLOUD_NAMESPACE,
        "from-the-file",
    )
    # A secret injected by the platform wins over the file, so the file can be committed.
    assert connect_config({**env, "TEMPORAL_API_KEY": "rotated"})["api_key"] == "rotated"


async def test_keycard_connects_where_the_environment_says(dev_env):
    namespace = f"keycard-{uuid.uuid4().hex[:8]}"
    await dev_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    address = dev_env.client.service_client.config.target_host

    client = await connect_temporal(
        env={"TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": namespace}
    )

    assert client.service_client.config.target_host == address
    assert client.namespace == namespace
    assert await client.service_client.check_health()


async def test_keycard_connects_through_a_profile(dev_env, tmp_path: Path):
    address = dev_env.client.service_client.config.target_host
    profiles = tmp_path / "temporal.toml"
    profiles.write_text(f'[profile.staging]\naddress = "{address}"\nnamespace = "default"\n')

    client = await connect_temporal(
        env={"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "staging"}
    )

    assert client.service_client.config.target_host == address
    assert client.namespace == "default"


async def test_commands_beside_keycard_dev_use_its_address(dev_env, tmp_path: Path, monkeypatch):
    """`keycard dev --port N` records its address; commands run from that directory use it
    instead of acting on whatever else listens on localhost:7233."""
    import json

    for name in (
        "TEMPORAL_ADDRESS",
        "TEMPORAL_PROFILE",
        "TEMPORAL_CONFIG_FILE",
        "KEYCARD_STATE_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no temporal.toml of the machine's
    monkeypatch.chdir(tmp_path)
    address = dev_env.client.service_client.config.target_host
    (tmp_path / ".keycard").mkdir()
    (tmp_path / ".keycard" / "dev.json").write_text(json.dumps({"temporal_address": address}))
    client = await connect_temporal()
    assert client.service_client.config.target_host == address
    await client.count_workflows()  # and it is that server

    # A setting of the operator's own still wins.
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    assert dev_temporal_address() == address
    config = ClientConfig.load_client_connect_config()
    assert config["target_host"] == "127.0.0.1:1"
