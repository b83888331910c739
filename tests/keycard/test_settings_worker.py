"""The worker's deployment settings: health port and shutdown grace, from the environment."""

from datetime import timedelta

import pytest

from keycard.settings import Settings


def test_defaults_serve_no_health_endpoint_and_drain_for_30s():
    settings = Settings.from_env({})
    assert settings.worker_health_port is None
    assert settings.worker_shutdown_grace == timedelta(seconds=30)


def test_values_from_the_environment():
    settings = Settings.from_env(
        {
            "KEYCARD_WORKER_HEALTH_PORT": "8081",
            "KEYCARD_WORKER_HEALTH_HOST": "127.0.0.1",
            "KEYCARD_WORKER_SHUTDOWN_GRACE": "2m",
        }
    )
    assert (settings.worker_health_port, settings.worker_health_host) == (8081, "127.0.0.1")
    assert settings.worker_shutdown_grace == timedelta(minutes=2)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KEYCARD_WORKER_HEALTH_PORT", "http", "must be a port number, not 'http'"),
        ("KEYCARD_WORKER_HEALTH_PORT", "70000", "must be a port number, not '70000'"),
        ("KEYCARD_WORKER_SHUTDOWN_GRACE", "30", "KEYCARD_WORKER_SHUTDOWN_GRACE: '30' is not a"),
    ],
)
def test_a_bad_value_names_the_variable(name, value, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({name: value})


def test_the_health_endpoint_listens_on_loopback_unless_told():
    assert Settings.from_env({}).worker_health_host == "127.0.0.1"
    assert Settings().worker_health_host == "127.0.0.1"


def test_the_workflow_cache_is_sized_deliberately():
    assert Settings.from_env({}).worker_max_cached_workflows == 4000
    sized = Settings.from_env({"KEYCARD_WORKER_MAX_CACHED_WORKFLOWS": "10000"})
    assert sized.worker_max_cached_workflows == 10000
    for bad in ("lots", "0", "-5"):
        with pytest.raises(ValueError, match="KEYCARD_WORKER_MAX_CACHED_WORKFLOWS must be"):
            Settings.from_env({"KEYCARD_WORKER_MAX_CACHED_WORKFLOWS": bad})
