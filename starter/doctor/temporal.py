"""`keycard doctor`'s Temporal checks: the connection and namespace, Keycard's search attributes,
and the workers polling its task queue."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError, RPCStatusCode

from keycard import temporal as names
from starter.doctor.report import (
    CONNECT_TIMEOUT,
    Report,
    connect_problem,
    short,
)


async def check_temporal(report: Report, env: Mapping[str, str], task_queue: str) -> None:
    try:
        connect = ClientConfig.load_client_connect_config(override_env_vars=env)
    except Exception as err:  # a malformed temporal.toml or TLS file: say which
        report.fail(
            "temporal",
            f"Temporal's client settings cannot be read ({err}). Check TEMPORAL_CONFIG_FILE, "
            "TEMPORAL_PROFILE and the TEMPORAL_TLS_* paths.",
        )
        return
    connect.setdefault("target_host", "localhost:7233")
    address, namespace = connect["target_host"], connect.get("namespace", "default")
    try:
        client = await asyncio.wait_for(Client.connect(**connect), CONNECT_TIMEOUT)
    except Exception as err:
        report.fail(
            "temporal",
            f"cannot reach Temporal at {address} ({connect_problem(err)}). Set "
            "TEMPORAL_ADDRESS to the frontend's host:port; for Temporal Cloud also TEMPORAL_API_KEY or the "
            "TEMPORAL_TLS_CLIENT_CERT_PATH/_KEY_PATH pair (docs/deployment.md).",
        )
        return
    report.ok("temporal", f"connected to {address}.")

    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            report.fail(
                "namespace",
                f"namespace {namespace!r} does not exist on {address}. Create it "
                f"(temporal operator namespace create --namespace {namespace}) or set "
                "TEMPORAL_NAMESPACE to the one Keycard should use.",
            )
            return
        report.fail("namespace", f"cannot describe namespace {namespace!r}: {short(err)}.")
        return
    report.ok("namespace", f"namespace {namespace!r} exists.")

    await _check_search_attributes(report, client, namespace)
    await _check_pollers(report, client, namespace, task_queue)


def _type_name(value: int) -> str:
    """KEYWORD_LIST -> KeywordList: how `temporal operator search-attribute create` spells it."""
    name = IndexedValueType.Name(value).removeprefix("INDEXED_VALUE_TYPE_")
    return "".join(part.capitalize() for part in name.split("_"))


def _expected() -> str:
    return ", ".join(
        f"{k.name} ({_type_name(int(k.indexed_value_type))})" for k in names.SEARCH_ATTRIBUTES
    )


async def _check_search_attributes(report: Report, client: Client, namespace: str) -> None:
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        report.warn(
            "search attributes",
            f"cannot list the search attributes of {namespace!r} ({short(err)}); make sure "
            f"these exist: {_expected()}.",
        )
        return
    existing = dict(response.custom_attributes)
    missing = [k for k in names.SEARCH_ATTRIBUTES if k.name not in existing]
    wrong = [
        k
        for k in names.SEARCH_ATTRIBUTES
        if k.name in existing and existing[k.name] != int(k.indexed_value_type)
    ]
    if missing:
        create = " ".join(
            f"--name {k.name} --type {_type_name(int(k.indexed_value_type))}" for k in missing
        )
        report.fail(
            "search attributes",
            f"missing in namespace {namespace!r}: {', '.join(k.name for k in missing)}; new "
            f"requests cannot start without them. Create them: temporal operator "
            f"search-attribute create --namespace {namespace} {create}",
        )
    if wrong:
        report.fail(
            "search attributes",
            "; ".join(
                f"{k.name} is {_type_name(existing[k.name])} in namespace {namespace!r}, but "
                f"Keycard needs {_type_name(int(k.indexed_value_type))}"
                for k in wrong
            )
            + ". Remove and re-create them with that type.",
        )
    if not missing and not wrong:
        report.ok("search attributes", f"{_expected()} exist.")


async def _check_pollers(report: Report, client: Client, namespace: str, task_queue: str) -> None:
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except RPCError as err:
        report.warn("workers", f"cannot describe task queue {task_queue!r}: {short(err)}.")
        return
    pollers = {poller.identity for poller in response.pollers}
    if not pollers:
        report.warn(
            "workers",
            f"no worker has polled task queue {task_queue!r} in namespace {namespace!r} lately; "
            "requests will wait until one does. Start `keycard worker` with the same TEMPORAL_* "
            "settings and KEYCARD_TASK_QUEUE.",
        )
        return
    report.ok("workers", f"{len(pollers)} worker(s) polling task queue {task_queue!r}.")
