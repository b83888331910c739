"""The minimal IAM policy Keycard needs: exactly the calls its AWS strategies and `keycard doctor`
make. deploy/iam-policy.json is this, printed (`keycard doctor --iam-policy`)."""

from __future__ import annotations

import json
from typing import Any

# Exactly the calls the strategy activities (activities/aws_sso.py, aws_sessions.py, aws_iam.py),
# the activity reader (aws_activity.py: flows with `activity: cloudtrail`)
# and this doctor make; tests/starter/test_doctor.py checks both ways. deploy/iam-policy.json is this, printed.
IAM_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "KeycardReadIdentityCenter",
            "Effect": "Allow",
            "Action": [
                "sso:DescribeAccountAssignmentCreationStatus",
                "sso:DescribeAccountAssignmentDeletionStatus",
                "sso:DescribePermissionSet",
                "sso:ListAccountAssignments",
                "sso:ListAccountAssignmentsForPrincipal",
                "sso:ListCustomerManagedPolicyReferencesInPermissionSet",
                "sso:ListInstances",
                "sso:ListPermissionSets",
            ],
            "Resource": "*",
        },
        {
            "Sid": "KeycardAssignPermissionSets",
            "Effect": "Allow",
            "Action": ["sso:CreateAccountAssignment", "sso:DeleteAccountAssignment"],
            "Resource": "*",
        },
        {
            "Sid": "KeycardEndSessions",
            "Effect": "Allow",
            "Action": [
                "sso:DeleteInlinePolicyFromPermissionSet",
                "sso:DescribePermissionSetProvisioningStatus",
                "sso:GetInlinePolicyForPermissionSet",
                "sso:ProvisionPermissionSet",
                "sso:PutInlinePolicyToPermissionSet",
            ],
            "Resource": "*",
        },
        {
            "Sid": "KeycardIdentityStore",
            "Effect": "Allow",
            "Action": [
                "identitystore:CreateGroupMembership",
                "identitystore:DeleteGroupMembership",
                "identitystore:DescribeUser",
                "identitystore:GetGroupId",
                "identitystore:GetGroupMembershipId",
                "identitystore:GetUserId",
            ],
            "Resource": "*",
        },
        {
            "Sid": "KeycardReadActivity",
            "Effect": "Allow",
            "Action": ["cloudtrail:LookupEvents"],
            "Resource": "*",
        },
        {
            "Sid": "KeycardIamGroups",
            "Effect": "Allow",
            "Action": [
                "iam:AddUserToGroup",
                "iam:GetGroup",
                "iam:GetUser",
                "iam:ListGroupsForUser",
                "iam:ListUserTags",
                "iam:ListUsers",
                "iam:RemoveUserFromGroup",
            ],
            "Resource": "*",
        },
    ],
}


def iam_policy_json() -> str:
    return json.dumps(IAM_POLICY, indent=2) + "\n"
