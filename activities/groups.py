"""Group membership for hooks: Slack user groups and IAM Identity Center groups.

Synchronous on purpose: hooks call these from worker threads (see activities/hooks.py).
"""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient


class SlackGroups:
    """`slack.is_user_in_group`: needs the bot scopes usergroups:read and users:read.email."""

    def __init__(self, client: WebClient):
        self._client = client

    def is_user_in_group(self, email: str, slack_user_id: str | None, handle: str) -> bool:
        groups = self._client.usergroups_list(include_users=True).get("usergroups", [])
        group = next((g for g in groups if g.get("handle") == handle), None)
        if group is None:
            raise LookupError(f"there is no Slack user group @{handle}")
        if slack_user_id is None:
            slack_user_id = self._client.users_lookupByEmail(email=email)["user"]["id"]
        return slack_user_id in group.get("users", [])


class IdentityCenterGroups:
    """`aws_sso.is_user_in_group`: needs identitystore:GetUserId, GetGroupId, IsMemberInGroups
    (and sso:ListInstances when keycard.yaml does not name the identity store)."""

    def __init__(
        self,
        identitystore: Any = None,
        sso_admin: Any = None,
        identity_store_id: str | None = None,
        *,
        session: Any = None,
    ):
        self._identitystore = identitystore
        self._sso_admin = sso_admin
        self._store_id = identity_store_id
        self._session = session

    @classmethod
    def from_session(
        cls, session: Any, identity_store_id: str | None = None
    ) -> IdentityCenterGroups:
        """Clients made on first use, so a worker whose hooks never ask AWS needs no region."""
        return cls(identity_store_id=identity_store_id, session=session)

    def _clients(self) -> None:
        if self._identitystore is None:
            self._identitystore = self._session.client("identitystore")
            self._sso_admin = self._session.client("sso-admin")

    def is_user_in_group(self, email: str, group_name: str) -> bool:
        self._clients()
        store = self._identity_store_id()
        try:
            user_id = self._identitystore.get_user_id(
                IdentityStoreId=store,
                AlternateIdentifier={
                    "UniqueAttribute": {"AttributePath": "emails.value", "AttributeValue": email}
                },
            )["UserId"]
        except self._identitystore.exceptions.ResourceNotFoundException:
            return False  # not an Identity Center user, so in no group
        try:
            group_id = self._identitystore.get_group_id(
                IdentityStoreId=store,
                AlternateIdentifier={
                    "UniqueAttribute": {
                        "AttributePath": "displayName",
                        "AttributeValue": group_name,
                    }
                },
            )["GroupId"]
        except self._identitystore.exceptions.ResourceNotFoundException:
            raise LookupError(f"there is no Identity Center group named {group_name}") from None
        results = self._identitystore.is_member_in_groups(
            IdentityStoreId=store, MemberId={"UserId": user_id}, GroupIds=[group_id]
        )["Results"]
        return any(r.get("MembershipExists") for r in results)

    def _identity_store_id(self) -> str:
        if self._store_id is None:
            instances = self._sso_admin.list_instances().get("Instances", [])
            if len(instances) != 1:
                raise LookupError(
                    f"found {len(instances)} Identity Center instances; "
                    "set aws.identity_store_id in keycard.yaml"
                )
            self._store_id = instances[0]["IdentityStoreId"]
        return self._store_id
