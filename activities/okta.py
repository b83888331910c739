"""`strategy: okta_group`: the requester is added to, and removed from, an Okta group.

Through the official `okta` SDK, configured as that SDK is, from the worker's environment:
OKTA_CLIENT_ORGURL (https://your-org.okta.com) and OKTA_CLIENT_TOKEN (an API token of an admin
that may manage the groups' memberships: a Group Membership Admin of those groups is enough).

Which Okta user a requester is: the one active user whose `profile.email` or `profile.login` is
the requester's email (two is an error, never a guess). The target's `group` is the group's name
(`profile.name`) or its id (00g...); only groups of type OKTA_GROUP can have their members changed
(a group pushed from an app or a directory is managed there). Membership the person already had
is standing access: Keycard never removes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.strategy_adapter import sdk_activities
from keycard.sdk.strategy import Grant, Refused, Resolved, Strategy

ORG_URL_ENV = "OKTA_CLIENT_ORGURL"  # the okta SDK's own names for them
TOKEN_ENV = "OKTA_CLIENT_TOKEN"  # noqa: S105 (the variable's name, not a token)
RETRYABLE = frozenset({408, 429})


class OktaGroupStrategy(Strategy):
    def __init__(self, environ: Mapping[str, str] | None = None, client: Any = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._client = client

    def _okta(self) -> Any:
        if self._client is None:
            org_url, token = self._environ.get(ORG_URL_ENV), self._environ.get(TOKEN_ENV)
            if not org_url or not token:
                raise ApplicationError(  # retried: setting them and restarting lets it go on
                    f"okta_group needs {ORG_URL_ENV} and {TOKEN_ENV} in the worker's environment",
                    type="OktaNotConfigured",
                )
            from okta.client import Client  # only workers with Okta flows pay for the import

            # The SDK refuses an org that is not https unless its own switch
            # OKTA_TESTING_TESTINGDISABLEHTTPSCHECK is set (a local stand-in, in tests).
            client = Client({"orgUrl": org_url, "token": token})
            if _authorization(client) == f"SSWS{token}":
                # okta 3.4 joins the scheme and the token without the space Okta's API requires
                # ("SSWS <token>"); give it one, for as long as it does.
                client = Client({"orgUrl": org_url, "token": f" {token}"})
            self._client = client
        return self._client

    async def resolve(self, person: str, target: str, settings: dict[str, str]) -> Resolved:
        user_id = await self._user(person)
        group = await self._group(settings.get("group") or target)
        return Resolved(principal_id=user_id, resource_id=group)

    async def exists(self, grant: Grant) -> bool:
        groups = await self._call(
            "list the user's groups", self._okta().list_user_groups, grant.principal_id
        )
        return any(getattr(g, "id", None) == grant.resource_id for g in groups or [])

    async def grant(self, grant: Grant) -> None:
        await self._call(
            "add the user to the group",
            self._okta().assign_user_to_group,
            grant.resource_id,
            grant.principal_id,
        )

    async def revoke(self, grant: Grant) -> None:
        await self._call(
            "remove the user from the group",
            self._okta().unassign_user_from_group,
            grant.resource_id,
            grant.principal_id,
            missing_ok=True,  # not a member, or gone: the access is not there
        )

    async def check(self, targets: dict[str, dict[str, str]]) -> list[str]:
        problems = []
        for name, settings in targets.items():
            try:
                await self._group(settings.get("group") or name)
            except (Refused, ApplicationError) as err:
                problems.append(f"target {name}: {err}")
        return problems

    async def _user(self, email: str) -> str:
        query = f'profile.email eq "{_quoted(email)}" or profile.login eq "{_quoted(email)}"'
        users = await self._call("find the user", self._okta().list_users, search=query)
        active = [u for u in users or [] if str(getattr(u, "status", "")).endswith("ACTIVE")]
        ids = sorted({u.id for u in active})
        if not ids:
            raise Refused(f"no active Okta user has the email or login {email}")
        if len(ids) > 1:
            raise Refused(f"several Okta users have the email or login {email}: {', '.join(ids)}")
        return ids[0]

    async def _group(self, name: str) -> str:
        if name.startswith("00g"):  # an id
            group = await self._call("find the group", self._okta().get_group, name)
            groups = [group] if group is not None else []
        else:
            query = f'profile.name eq "{_quoted(name)}"'
            groups = await self._call("find the group", self._okta().list_groups, search=query)
            groups = [g for g in groups or [] if _profile_name(g) == name]
        if not groups:
            raise Refused(f"there is no Okta group named {name}")
        if len(groups) > 1:
            raise Refused(f"several Okta groups are named {name}; name it by id (00g...)")
        [group] = groups
        kind = str(getattr(group, "type", "OKTA_GROUP"))
        if not kind.endswith("OKTA_GROUP"):
            raise Refused(
                f"the Okta group {name} is of type {kind.rsplit('.', 1)[-1]}: its members are "
                "managed by the app or directory it comes from, not in Okta"
            )
        return str(group.id)

    async def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        missing_ok = kwargs.pop("missing_ok", False)
        try:
            answer = await method(*args, **kwargs)
        except Exception as err:  # a connection that failed: retried
            raise ApplicationError(
                f"Okta could not be reached to {what}: {err!r}", type="OktaUnavailable"
            ) from err
        data, error = answer[0], answer[-1]
        if error is None:
            return data
        status = getattr(error, "status", None)
        message = str(getattr(error, "message", error)).strip()
        if status == 404:
            if missing_ok:
                return None
            raise Refused(f"Okta could not {what}: {message}")
        if status in RETRYABLE or status is None or status >= 500:
            raise ApplicationError(f"Okta could not {what}: {message}", type="OktaUnavailable")
        if status in (401, 403):
            raise ApplicationError(
                f"Okta refused to {what} ({message}): check OKTA_CLIENT_TOKEN and its admin role",
                type="AccessDenied",
                non_retryable=what != "remove the user from the group",
            )
        raise Refused(f"Okta could not {what}: {message}")


def _authorization(client: Any) -> str | None:
    """The Authorization header the SDK will send, where it says."""
    try:
        return client.configuration.auth_settings()["oauth2"]["value"]
    except (AttributeError, KeyError, TypeError):
        return None


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _profile_name(group: Any) -> str | None:
    profile = getattr(group, "profile", None)
    profile = getattr(profile, "actual_instance", profile)  # a oneOf of profile kinds in okta 3
    return getattr(profile, "name", None)


def for_flow(flow: Any, context: Any) -> Strategy:
    """The strategy of one okta_group flow, for `keycard doctor`."""
    return OktaGroupStrategy(getattr(context, "environ", None))


def okta_group_activities(context: Any) -> list[Callable[..., Any]]:
    strategy = OktaGroupStrategy(getattr(context, "environ", None))
    return sdk_activities("okta_group", lambda spec: strategy)
