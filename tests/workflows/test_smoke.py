from tests.harness import ALICE, BOB, running_stack


async def test_approve_grant_revoke(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await stack.keycard.request(
            flow="prod-power-user",
            target="prod",
            duration="1h",
            reason="incident 4312",
            requester=ALICE,
        )
        assert view.state == "PENDING"
        view = await stack.keycard.approve(view.id, BOB)
        print(view)
