"""A local, fake AWS for `keycard dev`: a moto server seeded with a demo Identity Center and IAM.

Nothing here talks to real AWS: every client is pointed at the moto endpoint with dummy
credentials, whatever the environment says. The worker reaches the same server through the usual
AWS settings; `demo_environment` gives the variables to set. (A little over the usual length: the
seeding and what `keycard demo-access` reads back describe the same demo, so they stay together.)
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from keycard import session_policy
from keycard.config import (
    AwsIamGroupFlow,
    AwsSsoFlow,
    AwsSsoGroupFlow,
    KeycardConfig,
    SessionsPolicy,
)
from keycard.models import AssignmentSpec
from keycard.strategies import STRATEGIES

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

DEMO_USERS = {
    "alice@example.com": ("Alice", "Example"),
    "bob@example.com": ("Bob", "Example"),
    "carol@example.com": ("Carol", "Example"),
}
# moto accepts any key; fixed dummy values make sure no real credentials are ever sent anywhere.
DEMO_CREDENTIALS = {"aws_access_key_id": "keycard-demo", "aws_secret_access_key": "keycard-demo"}


class DemoSummary(BaseModel):
    """What `seed_demo` set up, for `keycard dev` to print."""

    endpoint_url: str
    region: str
    instance_arn: str
    identity_store_id: str
    users: dict[str, str] = Field(description="email -> Identity Center user id")
    permission_sets: dict[str, str] = Field(description="name -> ARN")
    groups: dict[str, str] = Field(default_factory=dict, description="Identity Center groups")
    iam_groups: list[str] = Field(default_factory=list)
    iam_users: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"Demo AWS (moto) at {self.endpoint_url}, region {self.region}",
            f"  Identity Center instance {self.instance_arn} (store {self.identity_store_id})",
            f"  users: {', '.join(self.users)}",
        ]
        if self.permission_sets:
            lines.append(f"  permission sets: {', '.join(self.permission_sets)}")
        if self.groups:
            lines.append(f"  Identity Center groups: {', '.join(self.groups)}")
        if self.iam_groups:
            lines.append(f"  IAM groups: {', '.join(self.iam_groups)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines


# moto draws ids from one random generator; seeded alike, the same calls make the same ids.
DEMO_SEED = 4312


def start_moto_server(
    port: int = 0, recording: Path | None = None
) -> tuple[ThreadedMotoServer, str]:
    """Start moto on 127.0.0.1 (port 0: any free port). Returns the server and its endpoint URL.

    With `recording` (a file), the demo AWS outlives a restart: every call it takes is appended
    there (moto's recorder), and a new server first replays the file with the same random seed,
    so the Identity Center instance, users and permission sets get their old ids back, and the
    assignments and session policies that running requests hold are there again.

    moto is in the `dev` extra only: a production install never carries it."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise RuntimeError(
            "the demo AWS needs moto, which comes with the dev extra "
            "(`pip install 'keycard[dev]'`, which `make dev` does); "
            "or point Keycard at real AWS with the usual AWS settings"
        ) from None
    # werkzeug logs every request at INFO; in `keycard dev` that would bury the useful output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, actual_port = server.get_host_and_port()
    endpoint = f"http://{host}:{actual_port}"
    # moto keeps its state per process, not per server: a new server starts from nothing (a new
    # Identity Center instance, no policies or assignments left by an earlier one).
    httpx.post(f"{endpoint}/moto-api/reset").raise_for_status()
    if recording is not None:
        _replay_and_record(endpoint, recording)
    return server, endpoint


def _replay_and_record(endpoint: str, recording: Path) -> None:
    from moto.moto_api import recorder

    httpx.post(f"{endpoint}/moto-api/seed", params={"a": DEMO_SEED}).raise_for_status()
    recorder.stop_recording()
    # The recorder's file is set from MOTO_RECORDER_FILEPATH when moto is imported; this
    # process may have imported it long before, so point the recorder at ours directly.
    recorder._location = str(recording)
    recording.touch(mode=0o600, exist_ok=True)
    if recording.stat().st_size:
        recorder.replay_recording(target_host=endpoint)
    recorder.start_recording()


def stop_recording() -> None:
    """Stop appending to the recording (before a server that records stops)."""
    from moto.moto_api import recorder

    recorder.stop_recording()


def demo_environment(endpoint_url: str, region: str) -> dict[str, str]:
    """Environment for a process (the worker) that should use the demo AWS via boto3's settings."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": DEMO_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DEMO_CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def _client(service: str, endpoint_url: str, region: str) -> Any:
    return boto3.session.Session().client(
        service, endpoint_url=endpoint_url, region_name=region, **DEMO_CREDENTIALS
    )


def _demo_emails(config: KeycardConfig) -> list[str]:
    """The demo users plus everyone keycard.yaml names, so every approver can log in too."""
    emails = list(DEMO_USERS)
    named = [email for members in config.approver_groups.values() for email in members]
    for flow in config.flows:
        named += [email for step in flow.steps for email in step.approvers.users]
        named += flow.requesters.users if flow.requesters else []
    emails += sorted(set(named) - set(emails))
    return emails


def _names(email: str) -> tuple[str, str]:
    if email in DEMO_USERS:
        return DEMO_USERS[email]
    return email.split("@", 1)[0].capitalize(), "Example"


def seed_demo(config: KeycardConfig, endpoint_url: str, region: str) -> DemoSummary:
    """Create (once; running it again changes nothing) what the config's flows need."""
    sso_admin = _client("sso-admin", endpoint_url, region)
    identitystore = _client("identitystore", endpoint_url, region)
    iam = _client("iam", endpoint_url, region)

    # moto keeps one Identity Center instance per region and keys identity stores by id, creating
    # a store on first use; the instance's IdentityStoreId is the one the strategies will use.
    instance = sso_admin.list_instances()["Instances"][0]
    instance_arn, store_id = instance["InstanceArn"], instance["IdentityStoreId"]
    notes: list[str] = []

    users = {
        email: _ensure_user(identitystore, store_id, email, *_names(email))
        for email in _demo_emails(config)
    }

    wanted_sets: list[str] = []
    groups: list[str] = []
    iam_groups: list[str] = []
    for flow in config.flows:
        if not STRATEGIES[flow.strategy].aws:
            notes.append(
                f"flow {flow.name} uses strategy {flow.strategy}: the demo has no stand-in for "
                "it, so its requests reach the real system its flow names"
            )
            continue
        for target in flow.targets:
            if isinstance(flow, AwsSsoFlow):
                name = target.permission_set  # type: ignore[union-attr]
                if name.startswith("arn:"):
                    notes.append(
                        f"flow {flow.name} target {target.name} names permission set {name} by "
                        "ARN; the demo cannot create a given ARN, so requests for it will fail"
                    )
                elif name not in wanted_sets:
                    wanted_sets.append(name)
            elif isinstance(flow, AwsSsoGroupFlow):
                groups.append(target.group)  # type: ignore[union-attr]
            elif isinstance(flow, AwsIamGroupFlow):
                iam_groups.append(target.group)  # type: ignore[union-attr]

    existing_sets = _permission_sets(sso_admin, instance_arn)
    permission_sets = {}
    for name in wanted_sets:
        if name not in existing_sets:
            response = sso_admin.create_permission_set(
                Name=name, InstanceArn=instance_arn, Description="Keycard demo"
            )
            existing_sets[name] = response["PermissionSet"]["PermissionSetArn"]
        permission_sets[name] = existing_sets[name]

    # end_sessions_policy: the customer-managed policy each account must hold, referenced by the
    # flow's permission sets (what docs/deployment.md asks of a real deployment).
    for flow in config.flows:
        managed = flow.end_sessions_policy if flow.ends_sessions else None
        if not isinstance(flow, AwsSsoFlow) or managed is None:
            continue
        for target in flow.targets:
            if target.permission_set in permission_sets:
                _ensure_reference(
                    sso_admin, instance_arn, permission_sets[target.permission_set], managed
                )
            _ignore_existing(
                _assumed(
                    "iam", endpoint_url, region, managed.role_arn(target.account_id)
                ).create_policy,
                PolicyName=managed.name,
                Path=managed.path,
                PolicyDocument=json.dumps(
                    {"Version": "2012-10-17", "Statement": [session_policy.PLACEHOLDER]}
                ),
                Description="Keycard demo: end_sessions deny entries",
            )

    group_ids = {
        name: _ensure_group(identitystore, store_id, name) for name in dict.fromkeys(groups)
    }

    iam_users = list(users) if iam_groups else []
    for name in dict.fromkeys(iam_groups):
        _ignore_existing(iam.create_group, GroupName=name)
    for email in iam_users:
        _ignore_existing(iam.create_user, UserName=email, Tags=[{"Key": "email", "Value": email}])

    return DemoSummary(
        endpoint_url=endpoint_url,
        region=region,
        instance_arn=instance_arn,
        identity_store_id=store_id,
        users=users,
        permission_sets=permission_sets,
        groups=group_ids,
        iam_groups=list(dict.fromkeys(iam_groups)),
        iam_users=iam_users,
        notes=notes,
    )


def _assumed(service: str, endpoint_url: str, region: str, role_arn: str) -> Any:
    """A demo client acting as `role_arn` (moto honours the role's account)."""
    credentials = _client("sts", endpoint_url, region).assume_role(
        RoleArn=role_arn, RoleSessionName="keycard-demo"
    )["Credentials"]
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def _ensure_reference(
    sso_admin: Any, instance_arn: str, permission_set_arn: str, managed: SessionsPolicy
) -> None:
    arns = {"InstanceArn": instance_arn, "PermissionSetArn": permission_set_arn}
    listed = sso_admin.list_customer_managed_policy_references_in_permission_set(**arns)
    held = {
        (ref["Name"], ref.get("Path", "/")) for ref in listed["CustomerManagedPolicyReferences"]
    }
    if (managed.name, managed.path) not in held:
        sso_admin.attach_customer_managed_policy_reference_to_permission_set(
            **arns, CustomerManagedPolicyReference={"Name": managed.name, "Path": managed.path}
        )


def _ensure_user(identitystore: Any, store_id: str, email: str, given: str, family: str) -> str:
    try:
        return identitystore.get_user_id(
            IdentityStoreId=store_id,
            AlternateIdentifier={
                "UniqueAttribute": {"AttributePath": "emails.value", "AttributeValue": email}
            },
        )["UserId"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    return identitystore.create_user(
        IdentityStoreId=store_id,
        UserName=email,
        DisplayName=f"{given} {family}",
        Name={"GivenName": given, "FamilyName": family},
        Emails=[{"Value": email, "Type": "work", "Primary": True}],
    )["UserId"]


def _ensure_group(identitystore: Any, store_id: str, name: str) -> str:
    try:
        return identitystore.get_group_id(
            IdentityStoreId=store_id,
            AlternateIdentifier={
                "UniqueAttribute": {"AttributePath": "displayName", "AttributeValue": name}
            },
        )["GroupId"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    return identitystore.create_group(
        IdentityStoreId=store_id, DisplayName=name, Description="Keycard demo"
    )["GroupId"]


def _permission_sets(sso_admin: Any, instance_arn: str) -> dict[str, str]:
    found = {}
    for page in sso_admin.get_paginator("list_permission_sets").paginate(InstanceArn=instance_arn):
        for arn in page["PermissionSets"]:
            described = sso_admin.describe_permission_set(
                InstanceArn=instance_arn, PermissionSetArn=arn
            )
            found[described["PermissionSet"]["Name"]] = arn
    return found


def _ignore_existing(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as error:
        if error.response["Error"]["Code"] != "EntityAlreadyExists":
            raise


def inline_policy(endpoint_url: str, region: str, permission_set: str) -> str | None:
    """The demo permission set's inline policy (where end_sessions writes its deny entries)."""
    sso_admin = _client("sso-admin", endpoint_url, region)
    instance_arn = sso_admin.list_instances()["Instances"][0]["InstanceArn"]
    arn = _permission_sets(sso_admin, instance_arn)[permission_set]
    response = sso_admin.get_inline_policy_for_permission_set(
        InstanceArn=instance_arn, PermissionSetArn=arn
    )
    return response.get("InlinePolicy") or None


def session_denials_for(
    endpoint_url: str, region: str, email: str, config: KeycardConfig | None = None
) -> list[tuple[str, str, datetime]]:
    """(permission set, account, denied before) for every end_sessions deny entry of `email` in
    the demo permission sets' inline policies (and the customer-managed policies `config`'s flows
    name): their sessions issued before that time are cut."""
    try:
        user_id = user_id_of(endpoint_url, region, email)
    except ClientError:
        return []
    sso_admin = _client("sso-admin", endpoint_url, region)
    instance_arn = sso_admin.list_instances()["Instances"][0]["InstanceArn"]
    found = []
    for name, arn in sorted(_permission_sets(sso_admin, instance_arn).items()):
        policy = sso_admin.get_inline_policy_for_permission_set(
            InstanceArn=instance_arn, PermissionSetArn=arn
        ).get("InlinePolicy")
        for (user, account), before in session_policy.entries(policy or None).items():
            if user == user_id:
                found.append((name, account, before))
    managed = {
        (target.account_id, flow.end_sessions_policy)
        for flow in (config.flows if config else [])
        if isinstance(flow, AwsSsoFlow) and flow.ends_sessions and flow.end_sessions_policy
        for target in flow.targets
    }
    for account, chosen in sorted(managed, key=lambda item: (item[0], item[1].name)):
        iam = _assumed("iam", endpoint_url, region, chosen.role_arn(account))
        arn = chosen.policy_arn(account)
        try:
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
        except ClientError:
            continue
        for key, before in session_policy.entries(json.dumps(document["Document"])).items():
            if key[0] == user_id:
                found.append((key[2] if len(key) > 2 else arn, key[1], before))
    return found


def user_id_of(endpoint_url: str, region: str, email: str) -> str:
    """A demo person's Identity Center user id."""
    sso_admin = _client("sso-admin", endpoint_url, region)
    identitystore = _client("identitystore", endpoint_url, region)
    store_id = sso_admin.list_instances()["Instances"][0]["IdentityStoreId"]
    return identitystore.get_user_id(
        IdentityStoreId=store_id,
        AlternateIdentifier={
            "UniqueAttribute": {"AttributePath": "emails.value", "AttributeValue": email}
        },
    )["UserId"]


def assignments_for(endpoint_url: str, region: str, email: str) -> list[AssignmentSpec]:
    """Everything `email` holds in the demo AWS right now, as the specs a flow would grant.

    Direct account assignments (with the permission set's name), Identity Center group
    memberships and IAM group memberships; for the dev printout and end-to-end tests.
    """
    sso_admin = _client("sso-admin", endpoint_url, region)
    identitystore = _client("identitystore", endpoint_url, region)
    iam = _client("iam", endpoint_url, region)
    instance = sso_admin.list_instances()["Instances"][0]
    instance_arn, store_id = instance["InstanceArn"], instance["IdentityStoreId"]
    held: list[AssignmentSpec] = []

    try:
        user_id = identitystore.get_user_id(
            IdentityStoreId=store_id,
            AlternateIdentifier={
                "UniqueAttribute": {"AttributePath": "emails.value", "AttributeValue": email}
            },
        )["UserId"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        user_id = None
    if user_id:
        names = {arn: name for name, arn in _permission_sets(sso_admin, instance_arn).items()}
        pages = sso_admin.get_paginator("list_account_assignments_for_principal").paginate(
            InstanceArn=instance_arn, PrincipalId=user_id, PrincipalType="USER"
        )
        for page in pages:
            for item in page["AccountAssignments"]:
                held.append(
                    AssignmentSpec(
                        strategy="aws_sso",
                        principal_email=email,
                        account_id=item["AccountId"],
                        permission_set=names.get(
                            item["PermissionSetArn"], item["PermissionSetArn"]
                        ),
                    )
                )
        pages = identitystore.get_paginator("list_group_memberships_for_member").paginate(
            IdentityStoreId=store_id, MemberId={"UserId": user_id}
        )
        for page in pages:
            for membership in page["GroupMemberships"]:
                group = identitystore.describe_group(
                    IdentityStoreId=store_id, GroupId=membership["GroupId"]
                )
                held.append(
                    AssignmentSpec(
                        strategy="aws_sso_group", principal_email=email, group=group["DisplayName"]
                    )
                )

    try:
        for page in iam.get_paginator("list_groups_for_user").paginate(UserName=email):
            held.extend(
                AssignmentSpec(
                    strategy="aws_iam_group", principal_email=email, group=g["GroupName"]
                )
                for g in page["Groups"]
            )
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchEntity":
            raise
    return held
