"""What to tell a person while they wait for access, and once they have it: where to find it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keycard.durations import format_duration
from keycard.models import RequestState, RequestView

# `keycard request --wait` waits this long at most; the flow's approval timeout ends it sooner.
WAIT_AT_MOST = timedelta(days=1)


def waiting_message(view: RequestView) -> str:
    if view.state is RequestState.GRANTING:
        return f"{view.id}: approved; granting access..."
    if view.state is RequestState.SCHEDULED and view.start_at is not None:
        return (
            f"{view.id}: approved; access begins at {view.start_at:%Y-%m-%d %H:%M:%S} UTC. "
            "Ctrl-C stops waiting; the request stays open."
        )
    if view.approval_steps:
        open_steps = [
            f"step {s.name} ({s.count - len(s.approved_by)} more, from "
            f"{', '.join(view.can_still_approve(s)) or 'an admin'})"
            for s in view.approval_steps
            if not s.satisfied
        ]
        waiting = "; ".join(open_steps)
    else:
        needed = view.approvals_required - len(view.approvals)
        waiting = f"{needed} approval(s) from {', '.join(view.approvers) or 'an admin'}"
    return f"{view.id}: waiting for {waiting}. Ctrl-C stops waiting; the request stays open."


def next_steps(view: RequestView, now: datetime | None = None) -> str:
    """How to use access that is now ACTIVE, for the strategy that granted it."""
    lines = [_until(view, now or datetime.now(UTC))]
    settings = view.target_settings
    if view.strategy == "aws_sso":
        for name, label, settings in _granted_targets(view):
            account = settings.get("account_id", "?")
            permission_set = settings.get("permission_set", "?")
            profile = f"{view.flow}-{name}"
            lines += [
                f"In the AWS access portal, open account {account} ({label}) and choose "
                f"{permission_set}.",
                "From a terminal, with this profile in ~/.aws/config (the sso_session you already "
                "use for `aws sso login`):",
                "",
                f"    [profile {profile}]",
                "    sso_session    = <your sso-session name>",
                f"    sso_account_id = {account}",
                f"    sso_role_name  = {permission_set}",
                "",
                f"    aws sso login --profile {profile}",
                f"    aws sts get-caller-identity --profile {profile}",
            ]
    elif view.strategy == "aws_sso_group":
        lines += [
            f"You are in the Identity Center group {settings.get('group', view.target)}. The "
            "accounts and permission sets assigned to it appear in the AWS access portal (give "
            "it a minute); run `aws sso login` again to refresh the CLI's list.",
        ]
    elif view.strategy == "okta_group":
        lines += [
            f"You are in the Okta group {settings.get('group', view.target)}: the apps assigned "
            "to it are on your Okta dashboard now (sign in again where an app asks).",
        ]
    elif view.strategy == "aws_iam_group":
        lines += [
            f"Your IAM user is in the group {settings.get('group', view.target)}: its policies "
            "apply to your usual IAM credentials now.",
        ]
    for target in view.targets:
        if target.state == "failed":
            lines.append(f"Not granted: {target.label} ({target.error or 'unknown error'}).")
    if view.standing_access:
        lines.append("You had this access before Keycard; it stays when this request ends.")
    lines.append(f"Done early? keycard revoke {view.id}")
    return "\n".join(lines)


def _granted_targets(view: RequestView) -> list[tuple[str, str, dict[str, str]]]:
    """(name, label, settings) of each target the request holds: its one, or those of several
    that were granted."""
    if not view.targets:
        return [(view.target, view.target_label, view.target_settings)]
    return [(t.name, t.label, t.settings) for t in view.targets if t.state == "active"]


def _until(view: RequestView, now: datetime) -> str:
    if view.expires_at is None:
        return "Access is active."
    left = view.expires_at - now
    rounded = timedelta(seconds=max(0, round(left.total_seconds() / 60) * 60))
    return (
        f"Access is active until {view.expires_at:%H:%M} UTC "
        f"({format_duration(rounded) if rounded else 'less than a minute'} from now)."
    )
