"""How a strategy's activities are named, so workflows can call them without importing boto3.

Each strategy (aws_sso, aws_sso_group, aws_iam_group) registers four activities:
`<strategy>.resolve`  ResolveInput -> ResolvedAssignment   names to ids; unknown user/set/group fails
`<strategy>.exists`   ResolvedAssignment -> bool            is the access there right now?
`<strategy>.grant`    ResolvedAssignment -> None            create it; returns once the cloud says done
`<strategy>.revoke`   ResolvedAssignment -> None            remove it; returns once the cloud says done
"""

from typing import Literal

Operation = Literal["resolve", "exists", "grant", "revoke"]

# ApplicationError types that mean "retrying cannot help": the request fails with the message.
NON_RETRYABLE_ERRORS = (
    "NoSuchUser",
    "NoSuchPermissionSet",
    "NoSuchGroup",
    "NoSuchAccount",
    "NoSuchInstance",
    "AccessDenied",
    "InvalidTarget",
)


def activity_name(strategy: str, operation: Operation) -> str:
    return f"{strategy}.{operation}"
