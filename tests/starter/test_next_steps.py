"""What `keycard request --wait` tells a person once access is active."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keycard.models import Requester, RequestState, RequestView, TargetStatus
from starter.cli.next_steps import next_steps, waiting_message

NOW = datetime(2026, 11, 21, 13, 0, tzinfo=UTC)


def view(strategy: str, settings: dict[str, str], **extra) -> RequestView:
    return RequestView(
        id="req-abc",
        state=RequestState.ACTIVE,
        requester=Requester(email="alice@example.com"),
        flow="prod-power-user",
        flow_label="Prod PowerUser",
        strategy=strategy,
        target="prod",
        target_label="Production",
        target_settings=settings,
        duration=timedelta(hours=1),
        reason="incident 4312",
        approvals_required=1,
        approvers=["bob@example.com", "carol@example.com"],
        requested_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
        **extra,
    )


def test_aws_sso_names_the_account_and_permission_set():
    text = next_steps(
        view("aws_sso", {"account_id": "111111111111", "permission_set": "PowerUserAccess"}),
        now=NOW,
    )
    assert text.splitlines() == [
        "Access is active until 13:30 UTC (30m from now).",
        "In the AWS access portal, open account 111111111111 (Production) and choose "
        "PowerUserAccess.",
        "From a terminal, with this profile in ~/.aws/config (the sso_session you already use "
        "for `aws sso login`):",
        "",
        "    [profile prod-power-user-prod]",
        "    sso_session    = <your sso-session name>",
        "    sso_account_id = 111111111111",
        "    sso_role_name  = PowerUserAccess",
        "",
        "    aws sso login --profile prod-power-user-prod",
        "    aws sts get-caller-identity --profile prod-power-user-prod",
        "Done early? keycard revoke req-abc",
    ]


def test_groups_and_standing_access():
    group = next_steps(view("aws_sso_group", {"group": "prod-admins"}), now=NOW)
    assert "You are in the Identity Center group prod-admins." in group
    iam = next_steps(view("aws_iam_group", {"group": "deployers"}, standing_access=True), now=NOW)
    assert "Your IAM user is in the group deployers" in iam
    assert "You had this access before Keycard; it stays when this request ends." in iam


def test_waiting_says_for_whom():
    pending = view("aws_sso", {}).model_copy(update={"state": RequestState.PENDING})
    assert waiting_message(pending) == (
        "req-abc: waiting for 1 approval(s) from bob@example.com, carol@example.com. "
        "Ctrl-C stops waiting; the request stays open."
    )


def test_several_targets_each_get_their_profile_and_a_failed_one_says_why():
    targets = [
        TargetStatus(
            name=name, label=label, state=state, error=error,
            settings={"account_id": account, "permission_set": "PowerUserAccess"},
        )
        for name, label, account, state, error in [
            ("eu", "EU", "111111111111", "active", None),
            ("us", "US", "222222222222", "failed", "AccessDeniedException: no"),
            ("ap", "AP", "333333333333", "active", None),
        ]
    ]  # fmt: skip
    text = next_steps(view("aws_sso", {}, targets=targets), now=NOW)
    assert "open account 111111111111 (EU) and choose PowerUserAccess." in text
    assert "open account 333333333333 (AP) and choose PowerUserAccess." in text
    assert "    [profile prod-power-user-ap]" in text and "222222222222" not in text
    assert "Not granted: US (AccessDeniedException: no)." in text
