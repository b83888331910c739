"""Ending the AWS sessions a grant allowed: the deny entries of a permission set's inline policy.

Removing an Identity Center account assignment stops new sign-ins, but a session already open
keeps its role credentials until the permission set's session duration runs out (1-12 h). AWS's
guidance for revoking active sessions ("Revoke active IAM role sessions created by permission
sets", IAM Identity Center user guide) is a Deny-everything statement in the permission set's
inline policy, conditioned on `identitystore:userId` — the person's Identity Center user id, which
unlike `aws:userId` does not change with a renamed user. On its own that statement also blocks
the person's *next* grant, so Keycard adds the condition AWS uses when it revokes an IAM role's
sessions (IAM user guide, "Revoke IAM role temporary security credentials"):
`aws:TokenIssueTime` earlier than the revocation. Sessions issued before the grant ended are
denied; a session issued after a new grant is not. A permission set's inline policy is the same
in every account it is provisioned to, so each statement also names the account the grant was in
(`aws:PrincipalAccount`, the account of the role the session belongs to): the person's sessions
of the same permission set in other accounts are not touched.

This module is the pure part: the statement, merging one more revocation into an inline policy,
pruning entries that can no longer match anything, and the evaluation the statements stand for
(what tests check). Its rules:

- Keycard's statements are recognised by their Sid (`KeycardEndSessions` and a digest of the user
  id); every other statement of the inline policy is the customer's and is kept as it was.
- One statement per person and account: a later revocation time denies every session an earlier
  one denied, so merging keeps the latest time.
- A statement can go once the permission set's maximum session duration has passed since its
  revocation time: every session it could match has expired by then (`prune`). Nothing else is
  ever removed early.
- An inline policy has a size limit (32,768 characters for a permission set); a merge that would
  pass it, even after pruning, raises PolicyTooLarge rather than dropping a live entry.

A flow may name a customer-managed policy instead (`end_sessions_policy`): the same statements, in
an IAM policy of each account that the permission set references by name. Several permission sets
may reference one such policy, so each of its statements also names the permission set's role
(`aws:PrincipalArn` like `.../AWSReservedSSO_<permission set name>_<16 characters>`, the name
Identity Center gives the role): ending a grant of one permission set never touches the person's
live grant of another. Its limit is 6,144 characters, and it can never be deleted or left empty
while a permission set references it (provisioning would fail), so pruning its last entry leaves
a statement that allows nothing (PLACEHOLDER).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

SID_PREFIX = "KeycardEndSessions"
INLINE_POLICY_LIMIT = 32_768  # characters, IAM Identity Center's limit for an inline policy
MANAGED_POLICY_LIMIT = 6_144  # characters (without whitespace), IAM's limit for a managed policy
# What an emptied customer-managed policy holds: GetCallerIdentity needs no permission, so allowing
# it allows nothing; its Sid is not SID_PREFIX's, and a merge drops it again.
PLACEHOLDER = {
    "Sid": "KeycardNoEntries",
    "Effect": "Allow",
    "Action": "sts:GetCallerIdentity",
    "Resource": "*",
}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class PolicyTooLarge(ValueError):
    """The inline policy cannot hold one more entry; nothing was changed."""


# (Identity Center user id, AWS account id), plus the permission set's name in a customer-managed
# policy, which several permission sets' roles may attach.
Key = tuple[str, ...]
_ROLE_SUFFIX = "?" * 16  # Identity Center names roles AWSReservedSSO_<name>_<16 characters>


def statement(
    user_id: str, account_id: str, revoked_at: datetime, permission_set: str | None = None
) -> dict[str, Any]:
    """Deny everything to this Identity Center user's sessions in this account issued before
    `revoked_at` (only those of `permission_set`'s role, when named)."""
    condition: dict[str, Any] = {
        "StringEquals": {"identitystore:userId": user_id, "aws:PrincipalAccount": account_id},
        # Whole seconds, rounded up: a session issued in the revocation's own second is denied
        # too (it came from the grant that just ended).
        "DateLessThan": {"aws:TokenIssueTime": _iso(ceil_second(revoked_at))},
    }
    if permission_set:
        condition["ArnLike"] = {"aws:PrincipalArn": role_pattern(account_id, permission_set)}
    key = (user_id, account_id, permission_set) if permission_set else (user_id, account_id)
    return {
        "Sid": _sid(key),
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": condition,
    }


def role_pattern(account_id: str, permission_set: str) -> str:
    """The ARN of every role Identity Center makes for this permission set in this account."""
    return (
        f"arn:*:iam::{account_id}:role/aws-reserved/sso.amazonaws.com/"
        f"*AWSReservedSSO_{permission_set}_{_ROLE_SUFFIX}"
    )


def entries(policy: str | None) -> dict[Key, datetime]:
    """The revocations an inline policy holds: (user id, account id) -> the time before which it
    denies."""
    return {_key(item): _before(item) for item in _statements(_parse(policy)) if _is_ours(item)}


def merge(
    policy: str | None,
    revocations: Mapping[Key, datetime],
    *,
    now: datetime,
    max_session: timedelta,
    limit: int = INLINE_POLICY_LIMIT,
) -> str:
    """The policy with these revocations in it (and expired entries pruned): the customer's
    statements unchanged, one Keycard statement per person and account with their latest
    revocation (whole seconds, rounded up)."""
    document = _parse(policy)
    latest = entries(policy)
    for key, revoked_at in revocations.items():
        revoked_at = ceil_second(revoked_at)
        latest[key] = max(revoked_at, latest.get(key, revoked_at))
    kept = [
        s
        for s in _statements(document)
        if s.get("Sid") != PLACEHOLDER["Sid"]
        and (not _is_ours(s) or (_key(s) not in revocations and not _expired(s, now, max_session)))
    ]
    document["Statement"] = [*kept, *(_statement(key, latest[key]) for key in revocations)]
    text = _dump(document)
    if len(text) > limit:
        raise PolicyTooLarge(
            f"the policy would be {len(text)} characters with {len(revocations)} more ended "
            f"session(s), over its limit of {limit}; nothing was changed"
        )
    return text


def prune(
    policy: str | None, *, now: datetime, max_session: timedelta, keep: bool = False
) -> str | None:
    """The policy without the Keycard entries that can no longer match a live session; when
    nothing is left, None (delete the inline policy), or with `keep` the PLACEHOLDER statement (a
    customer-managed policy must stay)."""
    document = _parse(policy)
    kept = [s for s in _statements(document) if not (_is_ours(s) and _expired(s, now, max_session))]
    if not kept:
        if not keep:
            return None
        kept = [dict(PLACEHOLDER)]
    document["Statement"] = kept
    return _dump(document)


def next_expiry(policy: str | None, max_session: timedelta) -> datetime | None:
    """When the next Keycard entry of this policy may be pruned (for a durable timer)."""
    times = entries(policy).values()
    return min(times) + max_session if times else None


def denies(
    policy: str | None,
    user_id: str,
    account_id: str,
    token_issued_at: datetime,
    role_arn: str | None = None,
) -> bool:
    """Whether the policy's Keycard entries deny a session of `user_id` in `account_id` whose
    credentials were issued at `token_issued_at` (to the role `role_arn`): the evaluation AWS
    performs for these statements (an explicit Deny wins over any Allow; StringEquals, ArnLike and
    DateLessThan on the request's context keys), written down so tests can hold them to it."""
    for item in _statements(_parse(policy)):
        if not _is_ours(item):
            continue
        equals = item["Condition"]["StringEquals"]
        context = {"identitystore:userId": user_id, "aws:PrincipalAccount": account_id}
        if any(context.get(name) != value for name, value in equals.items()):
            continue
        like = item["Condition"].get("ArnLike", {}).get("aws:PrincipalArn")
        if like is not None and not (role_arn and _arn_like(role_arn, like)):
            continue
        if token_issued_at.astimezone(UTC) < _before(item):
            return True
    return False


def _arn_like(arn: str, pattern: str) -> bool:
    """IAM's ArnLike: each of the six colon-separated parts matched with * and ? wildcards."""
    parts, patterns = arn.split(":", 5), pattern.split(":", 5)
    return len(parts) == len(patterns) == 6 and all(
        fnmatch.fnmatchcase(part, like) for part, like in zip(parts, patterns, strict=True)
    )


# --- helpers ------------------------------------------------------------------------------------


def _statement(key: Key, revoked_at: datetime) -> dict[str, Any]:
    user_id, account_id, *permission_set = key
    return statement(user_id, account_id, revoked_at, *permission_set)


def _sid(key: Key) -> str:
    # Sids are alphanumeric; a digest keeps them unique per key, within IAM's rules.
    return SID_PREFIX + hashlib.sha256(":".join(key).encode()).hexdigest()[:16]


def _parse(policy: str | None) -> dict[str, Any]:
    if not policy or not policy.strip():
        return {"Version": "2012-10-17", "Statement": []}
    document = json.loads(policy)
    if not isinstance(document, dict):
        raise ValueError("the permission set's inline policy is not a JSON object")
    return document


def _statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = document.get("Statement", [])
    return [found] if isinstance(found, dict) else list(found)


def _is_ours(item: Mapping[str, Any]) -> bool:
    return str(item.get("Sid", "")).startswith(SID_PREFIX)


def _key(item: Mapping[str, Any]) -> Key:
    equals = item["Condition"]["StringEquals"]
    key = (equals["identitystore:userId"], equals.get("aws:PrincipalAccount", ""))
    like = item["Condition"].get("ArnLike", {}).get("aws:PrincipalArn")
    if like is None:
        return key
    permission_set = like.rpartition("AWSReservedSSO_")[2].removesuffix("_" + _ROLE_SUFFIX)
    return (*key, permission_set)


def _before(item: Mapping[str, Any]) -> datetime:
    return _time(item["Condition"]["DateLessThan"]["aws:TokenIssueTime"])


def _expired(item: Mapping[str, Any], now: datetime, max_session: timedelta) -> bool:
    return _before(item) + max_session <= now.astimezone(UTC)


def partition(arn: str) -> str:
    """`aws`, `aws-us-gov` or `aws-cn`: the partition an ARN lives in."""
    parts = arn.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else "aws"


def ceil_second(moment: datetime) -> datetime:
    """`moment` rounded up to a whole second (in UTC): the precision of aws:TokenIssueTime."""
    moment = moment.astimezone(UTC)
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def _time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def _dump(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))
