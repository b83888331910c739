"""How AWS failures become Temporal errors: the one place that decides what is worth retrying.

Every boto3 call made by a strategy activity goes through `call_aws` (or `paginate`), which runs
the blocking call in a thread and turns whatever AWS (or the network) says into an
`ApplicationError`:

- throttling, "operation in progress" conflicts, 5xx, connection trouble, expired or missing
  credentials: retryable. The workflow's retry policy backs off and tries again.
- access denied, invalid input, an exhausted quota, a resource that does not exist: non-retryable,
  with a type from `keycard.strategies.NON_RETRYABLE_ERRORS` and a message a person can act on.
  Call sites that know *what* was missing (a user, a permission set, a group) pass `if_not_found`
  so the message names it.
- any other AWS error code: retryable, typed with the AWS code, so the retry policy's cap decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from temporalio.exceptions import ApplicationError

from keycard.models import AssignmentSpec, ResolvedAssignment

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "Throttling",
        "RequestLimitExceeded",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
# In sso-admin and identitystore a ConflictException means another change to the same thing is in
# progress. Call sites that can also get it for "already exists" re-check before treating it so.
CONFLICT_CODES = frozenset(
    {"ConflictException", "ConcurrentModification", "ConcurrentModificationException"}
)
UNAVAILABLE_CODES = frozenset(
    {
        "InternalServerException",
        "InternalFailure",
        "InternalError",
        "ServiceFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
EXPIRED_CREDENTIAL_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
    }
)
INVALID_INPUT_CODES = frozenset(
    {"ValidationException", "ValidationError", "InvalidInput", "InvalidParameterException"}
)
QUOTA_CODES = frozenset({"ServiceQuotaExceededException", "LimitExceeded"})
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "NoSuchEntity"})


# The AWS error an ApplicationError was made from. Kept on an attribute rather than as __cause__:
# Temporal sends the cause chain to the workflow, and whoever reads the innermost message must get
# ours ("no Identity Center user has the email ..."), not botocore's ("USER not found."). AWS's own
# words stay in the message or the details.
_AWS_ERROR = "keycard_aws_error"


def _from_aws(classified: ApplicationError, error: BaseException) -> ApplicationError:
    setattr(classified, _AWS_ERROR, error)
    return classified


def error_code(error: BaseException | None) -> str:
    """The AWS error code behind `error`, looking through an ApplicationError `classify` made."""
    if isinstance(error, ApplicationError):
        error = getattr(error, _AWS_ERROR, None)
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(error: BaseException) -> bool:
    """AWS said the thing does not exist (for a call site that can treat that as an answer)."""
    return error_code(error) in NOT_FOUND_CODES


def is_conflict(error: BaseException) -> bool:
    return error_code(error) in CONFLICT_CODES


def action_name(call: Callable[..., Any], error: ClientError | None = None) -> str:
    """The IAM action a boto3 client method needs, e.g. `sso:CreateAccountAssignment`.

    Named the way an operator writes it in a policy, so an AccessDenied message says what to allow.
    """
    client = getattr(call, "__self__", None)
    service_model = getattr(getattr(client, "meta", None), "service_model", None)
    prefix = getattr(service_model, "signing_name", None) or "aws"
    operation = getattr(error, "operation_name", None)
    if not operation:
        py_to_op = getattr(client, "_PY_TO_OP_NAME", {})
        name = getattr(call, "__name__", "call")
        operation = py_to_op.get(name) or name
    return f"{prefix}:{operation}"


def _details(error: BaseException, action: str) -> dict[str, Any]:
    details: dict[str, Any] = {"action": action}
    if isinstance(error, ClientError):
        metadata = error.response.get("ResponseMetadata", {})
        details["aws_error_code"] = error_code(error)
        details["aws_message"] = error.response.get("Error", {}).get("Message")
        details["aws_request_id"] = metadata.get("RequestId")
    else:
        details["error"] = f"{type(error).__name__}: {error}"
    return details


def _retryable(message: str, type: str, error: BaseException, action: str) -> ApplicationError:
    classified = ApplicationError(message, _details(error, action), type=type, non_retryable=False)
    return _from_aws(classified, error)


def _final(message: str, type: str, error: BaseException, action: str) -> ApplicationError:
    classified = ApplicationError(message, _details(error, action), type=type, non_retryable=True)
    return _from_aws(classified, error)


def classify(error: BaseException, action: str) -> ApplicationError:
    """The ApplicationError an activity should raise for `error`, which `action` raised."""
    if isinstance(error, ClientError):
        code = error_code(error)
        aws_message = error.response.get("Error", {}).get("Message") or code
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in THROTTLING_CODES:
            return _retryable(
                f"AWS is throttling {action} ({code}); Keycard will retry",
                "AwsThrottled",
                error,
                action,
            )
        if code in CONFLICT_CODES:
            return _retryable(
                f"{action} conflicts with another change in progress ({aws_message}); "
                "Keycard will retry",
                "AwsConflict",
                error,
                action,
            )
        if code in UNAVAILABLE_CODES or status >= 500:
            return _retryable(
                f"AWS had an internal error in {action} ({code}: {aws_message}); "
                "Keycard will retry",
                "AwsUnavailable",
                error,
                action,
            )
        if code in EXPIRED_CREDENTIAL_CODES:
            return _retryable(
                f"the AWS credentials expired during {action}; Keycard will retry with fresh ones",
                "AwsCredentials",
                error,
                action,
            )
        if code in ACCESS_DENIED_CODES:
            return _final(
                f"Keycard's AWS credentials may not call {action}: {aws_message}. "
                f"Allow {action} in the policy of the role the Keycard worker runs as.",
                "AccessDenied",
                error,
                action,
            )
        if code in INVALID_INPUT_CODES:
            return _final(
                f"AWS rejected {action} as invalid: {aws_message}. "
                "Check the target in keycard.yaml.",
                "InvalidTarget",
                error,
                action,
            )
        if code in QUOTA_CODES:
            return _final(
                f"AWS refused {action} because a quota is used up: {aws_message}",
                "InvalidTarget",
                error,
                action,
            )
        if code in NOT_FOUND_CODES:
            return _final(
                f"AWS could not find what {action} refers to: {aws_message}",
                "InvalidTarget",
                error,
                action,
            )
        return _retryable(
            f"{action} failed: {code}: {aws_message}", code or "AwsError", error, action
        )
    if isinstance(error, ParamValidationError):
        return _final(
            f"Keycard sent {action} an invalid value: {error}. Check the target in keycard.yaml.",
            "InvalidTarget",
            error,
            action,
        )
    if isinstance(
        error,
        NoCredentialsError | PartialCredentialsError | CredentialRetrievalError,
    ):
        # Often a passing failure of the metadata service rather than a missing configuration;
        # revocation must keep trying, so this retries and the message says what to check.
        return _retryable(
            f"no usable AWS credentials for {action} ({error}); set the usual AWS credential "
            "settings (AWS_PROFILE, role, or keys) for the Keycard worker",
            "AwsCredentials",
            error,
            action,
        )
    if isinstance(error, ConnectionError | HTTPClientError):
        return _retryable(
            f"could not reach AWS for {action}: {error}; Keycard will retry",
            "AwsUnreachable",
            error,
            action,
        )
    if isinstance(error, BotoCoreError):
        return _retryable(f"{action} failed: {error}", type(error).__name__, error, action)
    raise TypeError(f"not an AWS error: {error!r}")


async def run_blocking(call: Callable[..., T], /, **kwargs: Any) -> T:
    """Run one blocking boto3 call in a worker thread, so the activity's event loop stays free."""
    return await asyncio.to_thread(call, **kwargs)


async def call_aws(
    call: Callable[..., T], /, *, if_not_found: ApplicationError | None = None, **kwargs: Any
) -> T:
    """Run a boto3 client method off the event loop and classify anything it raises.

    `if_not_found` is raised (from the AWS error) when AWS says the resource does not exist, so the
    message names what was missing ("no Identity Center user has the email ...").
    """
    try:
        return await run_blocking(call, **kwargs)
    except (ClientError, BotoCoreError) as error:
        if if_not_found is not None and is_not_found(error):
            raise _from_aws(if_not_found, error) from None
        client_error = error if isinstance(error, ClientError) else None
        raise classify(error, action_name(call, client_error)) from None


async def paginate(
    client: Any,
    operation: str,
    /,
    *,
    if_not_found: ApplicationError | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Every page of a paginated boto3 operation, fetched off the event loop and classified."""

    def all_pages() -> list[dict[str, Any]]:
        return list(client.get_paginator(operation).paginate(**kwargs))

    try:
        return await run_blocking(all_pages)
    except (ClientError, BotoCoreError) as error:
        if if_not_found is not None and is_not_found(error):
            raise _from_aws(if_not_found, error) from None
        client_error = error if isinstance(error, ClientError) else None
        action = action_name(getattr(client, operation), client_error)
        raise classify(error, action) from None


# --- malformed input: a bug or a hand-made call, never worth a retry -------------------------


def invalid_target(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidTarget", non_retryable=True)


def require_spec(spec: AssignmentSpec, strategy: str, *fields: str) -> None:
    if spec.strategy != strategy:
        raise invalid_target(f"{strategy} cannot handle a {spec.strategy} assignment")
    missing = [name for name in fields if not getattr(spec, name)]
    if missing:
        raise invalid_target(f"a {strategy} target needs {' and '.join(missing)}")


def require_resolved(assignment: ResolvedAssignment, *fields: str) -> None:
    missing = [name for name in fields if not getattr(assignment, name)]
    if missing:
        raise invalid_target(f"the assignment was not resolved: {', '.join(missing)} missing")
