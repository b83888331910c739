"""PagerDutyDirectory against the fake PagerDuty REST API, through the real `pagerduty` client."""

from __future__ import annotations

import socket

import pagerduty
import pytest

from activities.pagerduty import PagerDutyDirectory, rest_client
from tests.fake_pagerduty import API_KEY, running_fake_pagerduty, self_signed_certificate


@pytest.fixture(scope="module")
def certificate():
    return self_signed_certificate()


@pytest.fixture
def fake(certificate):
    with running_fake_pagerduty(certificate) as fake:
        fake.add_user("PALICE", "alice@example.com")
        fake.add_user("PBOB", "bob@example.com")
        fake.add_user("PBOBBY", "bobby@example.com")
        yield fake


def directory(fake, api_key: str = API_KEY) -> PagerDutyDirectory:
    return PagerDutyDirectory(rest_client(api_key, fake.url, verify=fake.client_tls))


def test_on_call_means_any_current_on_call_of_that_user(fake):
    fake.put_on_call("PBOBBY", "PSCHED1")
    pd = directory(fake)
    assert not pd.is_on_call("bob@example.com", [], [])  # "bob" also matches bobby: exact email
    fake.put_on_call("PBOB", "PSCHED1")
    assert pd.is_on_call("bob@example.com", [], [])
    assert pd.is_on_call("BOB@example.com", [], [])
    assert any("user_ids%5B%5D=PBOB" in r or "user_ids[]=PBOB" in r for r in fake.requests)


def test_on_call_can_be_limited_to_schedules_and_escalation_policies(fake):
    fake.put_on_call("PALICE", "PSCHED2", escalation_policy_id="PEP9")
    pd = directory(fake)
    assert not pd.is_on_call("alice@example.com", ["PSCHED1"], [])
    assert pd.is_on_call("alice@example.com", ["PSCHED1", "PSCHED2"], [])
    assert pd.is_on_call("alice@example.com", [], ["PEP9"])
    assert not pd.is_on_call("alice@example.com", [], ["PEP1"])


def test_someone_pagerduty_does_not_know_is_not_on_call(fake):
    assert not directory(fake).is_on_call("zed@example.com", [], [])


def test_users_on_call_names_people_by_email(fake):
    fake.put_on_call("PALICE", "PSCHED1")
    fake.put_on_call("PBOB", "PSCHED2")
    fake.put_on_call("PBOB", "PSCHED1", level=2)
    pd = directory(fake)
    assert [p.email for p in pd.users_on_call(["PSCHED1"], [])] == [
        "alice@example.com",
        "bob@example.com",
    ]
    assert [p.name for p in pd.users_on_call(["PSCHED2"], [])] == ["Bob"]


def test_has_incident_looks_at_open_incidents_of_the_service(fake):
    pd = directory(fake)
    assert not pd.has_incident(["PSVC1"], ["triggered", "acknowledged"])
    fake.open_incident("PSVC2")
    fake.open_incident("PSVC1", status="resolved")
    assert not pd.has_incident(["PSVC1"], ["triggered", "acknowledged"])
    fake.open_incident("PSVC1", status="acknowledged")
    assert pd.has_incident(["PSVC1"], ["triggered", "acknowledged"])
    assert pd.has_incident([], ["triggered"])


def test_a_wrong_key_and_an_outage_raise_rather_than_answer(fake):
    with pytest.raises(pagerduty.Error, match="401"):
        directory(fake, api_key="wrong").is_on_call("alice@example.com", [], [])
    fake.fail_with = 503
    with pytest.raises(pagerduty.Error, match="503"):
        directory(fake).is_on_call("alice@example.com", [], [])


def test_unreachable_pagerduty_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    pd = PagerDutyDirectory(rest_client(API_KEY, f"https://127.0.0.1:{port}"))
    with pytest.raises(pagerduty.Error, match="network"):
        pd.is_on_call("alice@example.com", [], [])


def test_from_env_reads_the_key_and_the_base_url(fake):
    assert PagerDutyDirectory.from_env({}) is None
    env = {"PAGERDUTY_API_KEY": API_KEY, "PAGERDUTY_API_URL": fake.url}
    fake.put_on_call("PALICE")
    pd = PagerDutyDirectory.from_env(env, verify=fake.client_tls)
    assert pd is not None and pd.is_on_call("alice@example.com", [], [])
    with pytest.raises(ValueError, match="must be an https:// URL"):
        PagerDutyDirectory.from_env({**env, "PAGERDUTY_API_URL": "http://127.0.0.1:1"})


def test_doctor_proves_the_key_works_and_names_what_is_wrong(fake):
    from starter.doctor.report import Report
    from starter.doctor.services import check_pagerduty

    env = {"PAGERDUTY_API_KEY": API_KEY, "PAGERDUTY_API_URL": fake.url}
    cases = [
        (env, "OK", "the API key works"),
        ({**env, "PAGERDUTY_API_KEY": "wrong"}, "FAIL", "check PAGERDUTY_API_KEY"),
        ({**env, "PAGERDUTY_API_URL": "http://x"}, "FAIL", "must be an https:// URL"),
        ({}, "OK", "not configured"),
    ]
    for environ, level, words in cases:
        report = Report()
        check_pagerduty(report, environ, None, verify=fake.client_tls)
        [finding] = report.findings
        assert (finding.level.value, words in finding.message) == (level, True), finding
