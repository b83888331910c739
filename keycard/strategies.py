"""The strategy registry: every kind of target Keycard can grant, in one place.

A strategy is what a flow's `strategy:` names. Each has a settings model for its targets (and,
for some, flow-level settings), and an implementation the worker imports: one class with four
operations, each registered as a Temporal activity named `<strategy>.<operation>`:

`<strategy>.resolve`  ResolveInput -> ResolvedAssignment   names to ids; unknown user/target fails
`<strategy>.exists`   ResolvedAssignment -> bool            is the access there right now?
`<strategy>.grant`    ResolvedAssignment -> None            create it; returns once it is done
`<strategy>.revoke`   ResolvedAssignment -> None            remove it; returns once it is done

The config schema (keycard/config.py), the worker's activities (worker.py), `keycard doctor` and
`keycard dev` are all derived from STRATEGIES. This module imports no cloud SDK: workflows and the
config use it, and only the worker imports an `implementation`.

Built in: the three AWS strategies, `http` (a company's own endpoint, signed) and `okta_group`;
`custom` runs a class of the team's own (`module:` in the flow, keycard.sdk.Strategy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from keycard.durations import Duration
from keycard.schema import ENV_REF_PATTERN, PERMISSION_SET_ARN, EnvRef, Name, _Strict

Operation = Literal["resolve", "exists", "grant", "revoke"]
OPERATIONS: tuple[Operation, ...] = ("resolve", "exists", "grant", "revoke")

# ApplicationError types that mean "retrying cannot help": the request fails with the message.
NON_RETRYABLE_ERRORS = (
    "NoSuchUser",
    "NoSuchPermissionSet",
    "NoSuchGroup",
    "NoSuchAccount",
    "NoSuchInstance",
    "AccessDenied",
    "InvalidTarget",
    "Refused",
)


def activity_name(strategy: str, operation: Operation) -> str:
    return f"{strategy}.{operation}"


# --- targets: what a flow grants, one model per strategy ------------------------------------


class TargetBase(_Strict):
    name: Name
    label: str = Field(default="", description="shown to people; defaults to the name")

    @property
    def display(self) -> str:
        return self.label or self.name

    def spec_settings(self) -> dict[str, str]:
        """What identifies this target to its strategy, as strings (shown on the request too)."""
        return {}


_TargetBase = TargetBase  # the name config.py used


class AwsSsoTarget(TargetBase):
    """An Identity Center permission set assigned to the requester in one AWS account."""

    account_id: str = Field(description="the 12-digit AWS account id")
    permission_set: str = Field(description="permission set name (e.g. PowerUserAccess) or ARN")

    @field_validator("account_id", mode="before")
    @classmethod
    def _account_id(cls, value: Any) -> str:
        text = str(value).strip()
        if not re.fullmatch(r"\d{12}", text):
            if isinstance(value, int) and not isinstance(value, bool):
                # YAML read it as a number: 011111111111 is octal, leading zeros are lost.
                raise ValueError(
                    "must be 12 digits in quotes: YAML reads an unquoted number as a number "
                    f'(here {value}), so write it as a string, e.g. account_id: "011111111111"'
                )
            raise ValueError("must be 12 digits")
        return text

    @field_validator("permission_set")
    @classmethod
    def _permission_set(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("arn:") and not PERMISSION_SET_ARN.match(value):
            raise ValueError(
                "is not a permission set ARN "
                "(arn:aws:sso:::permissionSet/ssoins-<id>/ps-<id>); or give the name instead"
            )
        if not value:
            raise ValueError("must name a permission set")
        return value

    def spec_settings(self) -> dict[str, str]:
        return {"account_id": self.account_id, "permission_set": self.permission_set}


class GroupTarget(TargetBase):
    """Membership of a group: an Identity Center group, an IAM group or an Okta group, by name."""

    group: str = Field(min_length=1, description="the group's name (IAM: group name)")

    def spec_settings(self) -> dict[str, str]:
        return {"group": self.group}


SETTING_VALUE = Field(max_length=1000)


class SettingsTarget(TargetBase):
    """A target of a strategy that is not Keycard's own (http, custom): whatever settings the
    endpoint or class needs to know which access this is, as strings."""

    settings: dict[Name, str] = Field(
        default_factory=dict,
        description="handed to the strategy as they are, e.g. {database: billing, role: admin}",
    )

    @field_validator("settings")
    @classmethod
    def _plain(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if "${" in text:
                raise ValueError(
                    f"settings.{key}: target settings are shown on every request and kept in its "
                    "history, so they cannot hold secrets; put secrets in the flow's http headers "
                    "or in the strategy's own environment"
                )
            if len(text) > 1000:
                raise ValueError(f"settings.{key}: longer than 1000 characters")
        return value

    def spec_settings(self) -> dict[str, str]:
        return dict(self.settings)


# --- flow-level settings of some strategies -------------------------------------------------


class HttpOptions(_Strict):
    """`http:` of a flow with `strategy: http`: Keycard calls this endpoint to resolve, check,
    grant and revoke, and signs every call so the endpoint can tell Keycard sent it."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="the endpoint; each call POSTs {operation, person, target, ...} as JSON",
    )
    secret: EnvRef = Field(
        description="the HMAC-SHA256 key the body is signed with (X-Keycard-Signature), as an "
        "environment reference, e.g. ${ACCESS_API_SECRET}"
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="extra headers, e.g. Authorization: Bearer ${ACCESS_API_TOKEN}; ${VAR} "
        "references are read from the worker's environment at each call",
    )
    timeout: Duration = Field(default=timedelta(seconds=10), description="per call")

    @field_validator("headers")
    @classmethod
    def _references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            for ref in re.findall(r"\$\{[^}]*\}?", text):
                if not ENV_REF_PATTERN.match(ref):
                    raise ValueError(
                        f"headers.{name}: {ref} is not an environment reference such as ${{TOKEN}}"
                    )
        return value


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyInfo:
    """One kind of target: how flows name it, what its targets say, who implements it."""

    name: str
    summary: str
    target: type[TargetBase]
    implementation: str  # "module:factory": the worker calls it for the strategy's activities
    flow_fields: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    aws: bool = False  # checked by doctor's AWS checks; seeded by `keycard dev`'s demo AWS
    ends_sessions: bool = False  # `end_sessions` can cut the sessions its access allowed


STRATEGIES: dict[str, StrategyInfo] = {
    info.name: info
    for info in (
        StrategyInfo(
            name="aws_sso",
            summary="an IAM Identity Center permission set in an AWS account",
            target=AwsSsoTarget,
            implementation="activities.aws:aws_sso_activities",
            aws=True,
            ends_sessions=True,
        ),
        StrategyInfo(
            name="aws_sso_group",
            summary="membership of an IAM Identity Center group",
            target=GroupTarget,
            implementation="activities.aws:aws_sso_group_activities",
            aws=True,
            ends_sessions=True,
        ),
        StrategyInfo(
            name="aws_iam_group",
            summary="membership of an IAM group (IAM users)",
            target=GroupTarget,
            implementation="activities.aws:aws_iam_group_activities",
            aws=True,
        ),
        StrategyInfo(
            name="okta_group",
            summary="membership of an Okta group (OKTA_CLIENT_ORGURL, OKTA_CLIENT_TOKEN)",
            target=GroupTarget,
            implementation="activities.okta:okta_group_activities",
        ),
        StrategyInfo(
            name="http",
            summary="your own endpoint, called with a signed JSON body for each operation",
            target=SettingsTarget,
            implementation="activities.http_strategy:http_activities",
            flow_fields={"http": (HttpOptions, ...)},
        ),
        StrategyInfo(
            name="custom",
            summary="a class of your own (keycard.sdk.Strategy) in the flow's `module`",
            target=SettingsTarget,
            implementation="activities.custom:custom_activities",
            flow_fields={
                "module": (
                    str,
                    Field(
                        min_length=1,
                        description="a Python file with one keycard.sdk.Strategy subclass, "
                        "relative to this config file (check it: keycard strategies check FILE)",
                    ),
                )
            },
        ),
    )
}


def strategy_options(flow: Any) -> dict[str, Any]:
    """A flow's strategy-level settings (its `http:` block, its `module`), as JSON: what a
    non-AWS strategy's activities get besides the target (secrets stay `${VAR}` references)."""
    info = STRATEGIES[flow.strategy]
    return {key: _plain(getattr(flow, key)) for key in info.flow_fields}


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value
