"""The deny entries that end a grant's AWS sessions, held to the evaluation they stand for:
sessions issued before a grant ended are denied, sessions of a later grant are not, the customer's
own statements are untouched, and entries go only once nothing they match can still be alive."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from keycard.session_policy import (
    INLINE_POLICY_LIMIT,
    MANAGED_POLICY_LIMIT,
    PLACEHOLDER,
    PolicyTooLarge,
    denies,
    entries,
    merge,
    next_expiry,
    prune,
    statement,
)

ALICE, BOB = "u-alice-1234", "u-bob-5678"
PROD, STAGING = "111111111111", "222222222222"
T0 = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SESSION = timedelta(hours=12)  # the permission set's session duration
CUSTOMER = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Sid": "TheirOwn", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
})  # fmt: skip


def test_a_session_from_before_the_end_is_denied_and_one_from_a_later_grant_is_not():
    policy = merge(None, {(ALICE, PROD): T0}, now=T0, max_session=SESSION)

    assert denies(policy, ALICE, PROD, T0 - HOUR)  # signed in during the grant that ended
    assert denies(policy, ALICE, PROD, T0 - timedelta(seconds=1))
    assert not denies(policy, ALICE, PROD, T0 + timedelta(seconds=1))  # a new grant's session
    assert not denies(policy, BOB, PROD, T0 - HOUR)  # nobody else


def test_the_statement_is_awss_deny_with_the_token_issue_time():
    assert statement(ALICE, PROD, T0.replace(microsecond=250_000)) == {
        "Sid": statement(ALICE, PROD, T0)["Sid"],
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"identitystore:userId": ALICE, "aws:PrincipalAccount": PROD},
            # rounded up: the revocation's own second is denied too
            "DateLessThan": {"aws:TokenIssueTime": "2026-12-02T12:00:01Z"},
        },
    }
    assert (
        statement(ALICE, PROD, T0)["Sid"].isalnum()
        and statement(ALICE, PROD, T0)["Sid"] != statement(BOB, PROD, T0)["Sid"]
    )


def test_the_customers_statements_are_kept_as_they_were():
    policy = merge(CUSTOMER, {(ALICE, PROD): T0}, now=T0, max_session=SESSION)

    assert json.loads(policy)["Statement"][0] == json.loads(CUSTOMER)["Statement"][0]
    assert prune(policy, now=T0 + 2 * SESSION, max_session=SESSION) == json.dumps(
        json.loads(CUSTOMER), separators=(",", ":")
    )


def test_one_entry_per_person_with_their_latest_end():
    policy = merge(None, {(ALICE, PROD): T0}, now=T0, max_session=SESSION)
    policy = merge(policy, {(ALICE, PROD): T0 + HOUR}, now=T0 + HOUR, max_session=SESSION)
    policy = merge(
        policy, {(ALICE, PROD): T0 + timedelta(minutes=30)}, now=T0 + HOUR, max_session=SESSION
    )

    assert entries(policy) == {(ALICE, PROD): T0 + HOUR}
    assert denies(policy, ALICE, PROD, T0 + timedelta(minutes=59))


def test_two_grants_ending_together_on_one_permission_set_make_one_correct_policy():
    policy = merge(CUSTOMER, {(ALICE, PROD): T0}, now=T0, max_session=SESSION)
    policy = merge(policy, {(BOB, PROD): T0}, now=T0, max_session=SESSION)

    assert entries(policy) == {(ALICE, PROD): T0, (BOB, PROD): T0}
    assert denies(policy, ALICE, PROD, T0 - HOUR) and denies(policy, BOB, PROD, T0 - HOUR)
    assert len(json.loads(policy)["Statement"]) == 3


def test_entries_go_only_once_every_session_they_match_has_expired():
    policy = merge(None, {(ALICE, PROD): T0}, now=T0, max_session=SESSION)
    policy = merge(policy, {(BOB, PROD): T0 + HOUR}, now=T0 + HOUR, max_session=SESSION)
    expiry = next_expiry(policy, SESSION)

    assert expiry == T0 + SESSION
    assert prune(policy, now=expiry - timedelta(seconds=1), max_session=SESSION) == policy
    pruned = prune(policy, now=expiry, max_session=SESSION)
    assert entries(pruned) == {(BOB, PROD): T0 + HOUR}
    assert prune(pruned, now=T0 + HOUR + SESSION, max_session=SESSION) is None  # nothing left
    # A merge prunes too, but never the person it is adding.
    at = T0 + SESSION + timedelta(minutes=30)  # alice's old entry has expired, bob's has not
    later = merge(policy, {(ALICE, PROD): at}, now=at, max_session=SESSION)
    assert entries(later) == {(ALICE, PROD): at, (BOB, PROD): T0 + HOUR}


def test_a_policy_that_would_pass_the_size_limit_is_refused_unchanged():
    policy = None
    with pytest.raises(PolicyTooLarge, match="over its limit of 32768"):
        for n in range(1000):
            policy = merge(policy, {(f"u-{n:08d}", PROD): T0}, now=T0, max_session=SESSION)
    assert policy is not None and len(policy) <= INLINE_POLICY_LIMIT
    assert len(entries(policy)) > 100  # room for a busy permission set's day


def test_an_entry_is_for_one_account_and_a_batch_merges_at_once():
    policy = merge(
        None, {(ALICE, PROD): T0, (BOB, PROD): T0 + HOUR}, now=T0 + HOUR, max_session=SESSION
    )

    assert denies(policy, ALICE, PROD, T0 - HOUR)
    assert not denies(policy, ALICE, STAGING, T0 - HOUR)  # her sessions elsewhere go on
    assert entries(policy) == {(ALICE, PROD): T0, (BOB, PROD): T0 + HOUR}
    later = merge(policy, {(ALICE, STAGING): T0 + HOUR}, now=T0 + HOUR, max_session=SESSION)
    assert entries(later) == {
        (ALICE, PROD): T0,
        (BOB, PROD): T0 + HOUR,
        (ALICE, STAGING): T0 + HOUR,
    }


# --- a customer-managed policy: several permission sets' roles attach it -------------------------

RESERVED = "arn:aws:iam::111111111111:role/aws-reserved/sso.amazonaws.com/"
ROLE = RESERVED + "AWSReservedSSO_{}_0a1b2c3d4e5f6a7b"
REGIONAL = RESERVED + "eu-west-1/AWSReservedSSO_{}_0a1b2c3d4e5f6a7b"


def test_an_entry_scoped_to_a_permission_set_spares_the_persons_other_permission_sets():
    policy = merge(None, {(ALICE, PROD, "Admin"): T0}, now=T0, max_session=SESSION)
    before = T0 - HOUR

    assert denies(policy, ALICE, PROD, before, ROLE.format("Admin"))
    assert denies(policy, ALICE, PROD, before, REGIONAL.format("Admin"))
    # Her live grant of another permission set in the same account keeps working, even one
    # whose name starts with this one's.
    assert not denies(policy, ALICE, PROD, before, ROLE.format("ReadOnly"))
    assert not denies(policy, ALICE, PROD, before, ROLE.format("Admin_Plus"))
    assert not denies(policy, ALICE, PROD, T0, ROLE.format("Admin"))  # her next grant's
    assert entries(policy) == {(ALICE, PROD, "Admin"): T0}


def test_an_emptied_customer_managed_policy_keeps_a_statement_that_allows_nothing():
    policy = merge(CUSTOMER.replace("TheirOwn", "KeycardNoEntries"), {(ALICE, PROD, "Admin"): T0},
                   now=T0, max_session=SESSION)  # fmt: skip
    [only] = json.loads(policy)["Statement"]  # the placeholder went when an entry came
    assert only["Sid"].startswith("KeycardEndSessions")

    emptied = prune(policy, now=T0 + SESSION, max_session=SESSION, keep=True)

    assert json.loads(emptied)["Statement"] == [PLACEHOLDER]
    assert entries(emptied) == {}
    assert prune(policy, now=T0 + SESSION, max_session=SESSION) is None  # an inline one goes


def test_a_customer_managed_policy_is_held_to_its_smaller_limit():
    many = {(f"u-{n:036d}", PROD, "Admin"): T0 for n in range(40)}
    with pytest.raises(PolicyTooLarge, match=f"over its limit of {MANAGED_POLICY_LIMIT}"):
        merge(None, many, now=T0, max_session=SESSION, limit=MANAGED_POLICY_LIMIT)
    assert len(merge(None, many, now=T0, max_session=SESSION)) < INLINE_POLICY_LIMIT
