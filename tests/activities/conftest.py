"""moto-backed AWS for the strategy activity tests: no real AWS, no network."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

REGION = "us-east-1"
ACCOUNT = "111111111111"

_AWS_SETTINGS_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials, and none of the developer's own AWS settings."""
    for name in _AWS_SETTINGS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/keycard-tests")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/keycard-tests")


@dataclass
class FakeAws:
    """Clients on moto, plus helpers that set up Identity Center and IAM the way a test needs."""

    session: boto3.Session
    sso_admin: Any
    identitystore: Any
    iam: Any
    instance_arn: str
    identity_store_id: str

    def add_user(self, email: str, user_name: str | None = None) -> str:
        given = email.split("@")[0].capitalize()
        return self.identitystore.create_user(
            IdentityStoreId=self.identity_store_id,
            UserName=user_name or email,
            DisplayName=f"{given} Example",
            Name={"GivenName": given, "FamilyName": "Example"},
            Emails=[{"Value": email, "Primary": True}],
        )["UserId"]

    def add_permission_set(self, name: str) -> str:
        return self.sso_admin.create_permission_set(Name=name, InstanceArn=self.instance_arn)[
            "PermissionSet"
        ]["PermissionSetArn"]

    def add_group(self, name: str) -> str:
        return self.identitystore.create_group(
            IdentityStoreId=self.identity_store_id, DisplayName=name
        )["GroupId"]

    def user_assignments(self, permission_set_arn: str, account_id: str = ACCOUNT) -> list[str]:
        response = self.sso_admin.list_account_assignments(
            InstanceArn=self.instance_arn, AccountId=account_id, PermissionSetArn=permission_set_arn
        )
        return [a["PrincipalId"] for a in response["AccountAssignments"]]


@pytest.fixture
def aws(aws_env: None) -> Iterator[FakeAws]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        sso_admin = session.client("sso-admin")
        instance = sso_admin.list_instances()["Instances"][0]
        yield FakeAws(
            session=session,
            sso_admin=sso_admin,
            identitystore=session.client("identitystore"),
            iam=session.client("iam"),
            instance_arn=instance["InstanceArn"],
            identity_store_id=instance["IdentityStoreId"],
        )


@pytest.fixture(scope="session")
def stub_session() -> boto3.Session:
    """One session for all stubbed clients, so botocore loads each service model once."""
    return boto3.Session(
        region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture
def stubbed(stub_session: boto3.Session) -> Iterator[Callable[[str], tuple[Any, Stubber]]]:
    """Real botocore clients under Stubber: requests and responses are validated, nothing is sent.

    Every queued response must be used: a test that stubs a call the code never makes fails.
    """
    stubbers: list[Stubber] = []

    def make(service: str) -> tuple[Any, Stubber]:
        client = stub_session.client(service)
        stubber = Stubber(client)
        stubber.activate()
        stubbers.append(stubber)
        return client, stubber

    yield make
    for stubber in stubbers:
        stubber.assert_no_pending_responses()
        stubber.deactivate()
