"""okta_group through the real `okta` SDK against a local stand-in for the Okta API endpoints it
calls (tests/fake_okta.py): who the person is, which group, membership added and removed,
standing membership left alone, and Okta's refusals said plainly."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.okta import OktaGroupStrategy, okta_group_activities
from activities.registry import StrategyContext
from keycard.config import parse_config
from keycard.models import Actor, Requester, RequestState
from keycard.sdk.strategy import Grant, Refused
from tests.fake_okta import TOKEN, running_okta
from tests.harness import ALICE, BOB, running_stack, state_is, unique_id
from tests.workflows.test_timers import outcome


@pytest.fixture(autouse=True)
def plain_http(monkeypatch):
    """The stand-in speaks http: the SDK's own switch lets it (Okta itself is https only)."""
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")


def env(okta, token: str = TOKEN) -> dict[str, str]:
    return {"OKTA_CLIENT_ORGURL": okta.url, "OKTA_CLIENT_TOKEN": token}


async def test_a_member_is_added_and_removed_by_group_name():
    async with running_okta() as okta:
        strategy = OktaGroupStrategy(env(okta))
        resolved = await strategy.resolve("alice@example.com", "sre", {"group": "sre-admins"})
        assert (resolved.principal_id, resolved.resource_id) == ("00ualice", "00gsre")
        grant = Grant(person="alice@example.com", principal_id="00ualice", resource_id="00gsre",
                      target="sre")  # fmt: skip
        assert await strategy.exists(grant) is False
        await strategy.grant(grant)
        assert okta.has("00ualice") and await strategy.exists(grant) is True
        await strategy.revoke(grant)
        assert not okta.has("00ualice")
        await strategy.revoke(grant)  # already gone: still fine
        by_id = await strategy.resolve("bob@example.com", "sre", {"group": "00gsre"})
        assert by_id.resource_id == "00gsre"


@pytest.mark.parametrize(
    ("person", "group", "said"),
    [
        ("mallory@example.com", "sre-admins",
         "no active Okta user has the email or login mallory@example.com"),
        ("alice@example.com", "nope", "there is no Okta group named nope"),
        ("alice@example.com", "ad-admins",
         "the Okta group ad-admins is of type APP_GROUP: its members are managed by the app or "
         "directory it comes from, not in Okta"),
    ],
)  # fmt: skip
async def test_what_cannot_be_granted_is_refused_with_a_sentence(person, group, said):
    async with running_okta() as okta:
        with pytest.raises(Refused) as refused:
            await OktaGroupStrategy(env(okta)).resolve(person, "t", {"group": group})
        assert str(refused.value) == said


async def test_a_bad_token_is_refused_and_an_outage_is_retried():
    async with running_okta() as okta:
        with pytest.raises(ApplicationError) as denied:
            await OktaGroupStrategy(env(okta, token="wrong")).resolve("a@example.com", "t", {})
        assert denied.value.type == "AccessDenied" and denied.value.non_retryable
        assert "Invalid token provided" in denied.value.message
        okta.fail_next = [503, 503, 503, 503]
        grant = Grant(person="a", principal_id="00ualice", resource_id="00gsre", target="t")
        with pytest.raises(ApplicationError) as down:
            await OktaGroupStrategy(env(okta)).grant(grant)
        assert down.value.type == "OktaUnavailable" and not down.value.non_retryable
        with pytest.raises(ApplicationError) as unset:
            await OktaGroupStrategy({}).grant(grant)
        assert "okta_group needs OKTA_CLIENT_ORGURL and OKTA_CLIENT_TOKEN" in unset.value.message
        assert not unset.value.non_retryable  # set them, restart: the removal goes on


async def test_doctor_finds_a_missing_group():
    async with running_okta() as okta:
        strategy = OktaGroupStrategy(env(okta))
        assert await strategy.check({"sre": {"group": "sre-admins"}}) == []
        assert await strategy.check({"x": {"group": "gone"}}) == [
            "target x: there is no Okta group named gone"
        ]


BOB_REQUESTER = Requester(email="bob@example.com")
CAROL = Actor(email="carol@example.com")
FLOW = """
flows:
  - name: okta-sre
    strategy: okta_group
    targets: [{name: sre, label: SRE admins, group: sre-admins}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


async def test_a_whole_lifecycle_and_standing_membership_left_alone(time_env, tmp_path):
    async with running_okta() as okta:
        config = parse_config(FLOW)
        context = StrategyContext(config, None, tmp_path, env(okta))
        okta.members.add(("00gsre", "00ubob"))  # bob is a member already: standing
        async with running_stack(
            time_env.client, config, strategies=okta_group_activities(context)
        ) as stack:
            asked = {}
            for who in (ALICE, BOB_REQUESTER):
                asked[who.email] = await stack.keycard.request(
                    flow="okta-sre",
                    target="sre",
                    reason="pager",
                    requester=who,
                    request_id=unique_id(),
                )
            await stack.keycard.approve(asked["alice@example.com"].id, BOB)
            await stack.keycard.approve(asked["bob@example.com"].id, CAROL)
            for view in asked.values():
                await state_is(stack, view.id, RequestState.ACTIVE)
            assert okta.has("00ualice") and okta.has("00ubob")
            assert (await stack.keycard.get(asked["bob@example.com"].id)).standing_access
            for view in asked.values():
                assert (await outcome(time_env, view.id)).state is RequestState.ENDED
            assert not okta.has("00ualice")
            assert okta.has("00ubob")  # standing: never removed
