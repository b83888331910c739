"""A decision sent while Temporal says the request is not ready (its workflow task is being
retried: an overloaded worker, a redeploy) is retried as the same update, not failed."""

from __future__ import annotations

from google.protobuf.any_pb2 import Any as AnyProto
from temporalio.api.common.v1 import GrpcStatus
from temporalio.service import RPCError, RPCStatusCode

from starter import client as client_module
from starter.client import _update_when_ready

NOT_READY_TYPE = "type.googleapis.com/temporal.api.errordetails.v1.WorkflowNotReadyFailure"


def not_ready() -> RPCError:
    status = GrpcStatus(
        code=RPCStatusCode.FAILED_PRECONDITION.value,
        message="Unable to perform workflow execution update due to Workflow Task in failed state.",
        details=[AnyProto(type_url=NOT_READY_TYPE)],
    )
    return RPCError(status.message, RPCStatusCode.FAILED_PRECONDITION, status.SerializeToString())


class Handle:
    def __init__(self, failures: list[Exception]):
        self.failures = failures
        self.ids: list[str] = []

    async def execute_update(self, update, input, *, id, result_type):
        self.ids.append(id)
        if self.failures:
            raise self.failures.pop(0)
        return "done"


async def test_not_ready_is_retried_as_one_update(monkeypatch):
    handle = Handle([not_ready(), not_ready()])

    assert await _update_when_ready(handle, "approve", object(), None) == "done"

    assert len(handle.ids) == 3 and len(set(handle.ids)) == 1


async def test_other_errors_are_not_retried():
    refused = RPCError("no", RPCStatusCode.INVALID_ARGUMENT, b"")
    handle = Handle([refused])

    try:
        await _update_when_ready(handle, "approve", object(), "u-1")
    except RPCError as err:
        assert err is refused
    assert handle.ids == ["u-1"]


async def test_not_ready_for_too_long_gives_up(monkeypatch):
    from datetime import timedelta

    monkeypatch.setattr(client_module, "UPDATE_NOT_READY_WAIT", timedelta(seconds=0.5))
    handle = Handle([not_ready() for _ in range(50)])

    try:
        await _update_when_ready(handle, "approve", object(), None)
        raise AssertionError("expected the not-ready error")
    except RPCError as err:
        assert "Workflow Task in failed state" in str(err)
    assert 2 <= len(handle.ids) <= 5
