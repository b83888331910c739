"""What a change to keycard.yaml changes, flow by flow, in the words a reviewer approves: who may
ask and approve, how many approvals, for how long, which rules decide alone, and which targets.

`keycard flows diff OLD NEW` prints it; each flow also shows the digest a request of it records
(keycard/provenance.py), so a request's policy leads to the change that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from keycard.config import Flow, KeycardConfig
from keycard.durations import format_duration
from keycard.provenance import flow_digest

# What a reviewer reads first, in this order; every other key follows in the file's order.
FIRST = (
    "strategy",
    "targets",
    "requesters",
    "approvers",
    "approvals_required",
    "approval_steps",
    "allow_self_approval",
    "break_glass",
    "auto_approve",
    "durations",
    "max_duration",
    "hooks",
)


@dataclass
class FlowChange:
    """One flow: `added`, `removed` or `changed`, with a line per difference."""

    name: str
    kind: str
    lines: list[str] = field(default_factory=list)
    old_digest: str | None = None
    new_digest: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "flow": self.name,
            "change": self.kind,
            "differences": self.lines,
            "old_digest": self.old_digest,
            "new_digest": self.new_digest,
        }


def diff_configs(old: KeycardConfig, new: KeycardConfig) -> list[FlowChange]:
    """Every flow added, removed or changed (a flow whose approver group's members changed is
    changed too: the people who may approve it are not the same)."""
    before = {f.name: f for f in old.flows}
    after = {f.name: f for f in new.flows}
    changes: list[FlowChange] = []
    for name, flow in after.items():
        if name not in before:
            changes.append(FlowChange(name, "added", _summary(flow), new_digest=flow_digest(flow)))
    for name, flow in before.items():
        if name not in after:
            changes.append(
                FlowChange(name, "removed", _summary(flow), old_digest=flow_digest(flow))
            )
    for name in before.keys() & after.keys():
        lines = _compare(_plain(before[name]), _plain(after[name]))
        lines += _group_changes(before[name], after[name], old, new)
        if lines:
            changes.append(
                FlowChange(
                    name,
                    "changed",
                    lines,
                    old_digest=flow_digest(before[name]),
                    new_digest=flow_digest(after[name]),
                )
            )
    order = {name: n for n, name in enumerate([*after, *before])}
    return sorted(changes, key=lambda c: order[c.name])


def render(changes: list[FlowChange]) -> str:
    if not changes:
        return "No flow changes: every request would be decided as before."
    out = []
    for change in changes:
        out.append(f"flow {change.name}: {change.kind}")
        out.extend(f"  {line}" for line in change.lines)
        if change.kind == "changed":
            out.append(f"  digest: {change.old_digest} → {change.new_digest}")
        else:
            out.append(f"  digest: {change.new_digest or change.old_digest}")
    return "\n".join(out)


# --- the differences ------------------------------------------------------------------------------


def _plain(flow: Flow) -> dict[str, Any]:
    data = flow.model_dump(mode="python", exclude_defaults=False)
    keys = [*[k for k in FIRST if k in data], *[k for k in data if k not in FIRST]]
    return {key: data[key] for key in keys}


def _compare(old: Any, new: Any, path: str = "") -> list[str]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in [*old, *[k for k in new if k not in old]]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                lines.append(f"{where}: removed (was {_show(old[key])})")
            elif key not in old:
                lines.append(f"{where}: added {_show(new[key])}")
            else:
                lines += _compare(old[key], new[key], where)
        return lines
    if _is_list_of_scalars(old) and _is_list_of_scalars(new):
        gone = [v for v in old if v not in new]
        came = [v for v in new if v not in old]
        if gone or came:
            parts = [f"added {_show(v)}" for v in came] + [f"removed {_show(v)}" for v in gone]
            return [f"{path}: {', '.join(parts)}"]
        return [f"{path}: reordered {_show(old)} → {_show(new)}"]
    if isinstance(old, list) and isinstance(new, list):
        return _compare_items(old, new, path)
    if old is None:
        return [f"{path}: added {_show(new)}"]
    if new is None:
        return [f"{path}: removed (was {_show(old)})"]
    return [f"{path}: {_show(old)} → {_show(new)}"]


def _compare_items(old: list[Any], new: list[Any], path: str) -> list[str]:
    """Lists of objects (targets, rules, steps): by name where they have one, else by place."""
    named = all(isinstance(v, dict) and v.get("name") for v in [*old, *new])
    if not named:
        lines = []
        for n in range(max(len(old), len(new))):
            where = f"{path}[{n}]"
            if n >= len(new):
                lines.append(f"{where}: removed (was {_show(old[n])})")
            elif n >= len(old):
                lines.append(f"{where}: added {_show(new[n])}")
            else:
                lines += _compare(old[n], new[n], where)
        return lines
    before = {v["name"]: v for v in old}
    after = {v["name"]: v for v in new}
    lines = [
        f"{path}: added {name} ({_show(v)})" for name, v in after.items() if name not in before
    ]
    lines += [f"{path}: removed {name}" for name in before if name not in after]
    for name in before.keys() & after.keys():
        lines += _compare(before[name], after[name], f"{path}[{name}]")
    return lines


def _group_changes(
    old_flow: Flow, new_flow: Flow, old: KeycardConfig, new: KeycardConfig
) -> list[str]:
    """Members of the approver groups the flow names (in both versions) who came or went."""
    lines = []
    groups = set(_named_groups(old_flow)) & set(_named_groups(new_flow))
    for group in sorted(groups):
        was = old.approver_groups.get(group, [])
        now = new.approver_groups.get(group, [])
        came = [p for p in now if p not in was]
        gone = [p for p in was if p not in now]
        if came or gone:
            parts = [f"added {p}" for p in came] + [f"removed {p}" for p in gone]
            lines.append(f"approver group {group}: {', '.join(parts)}")
    return lines


def _named_groups(flow: Flow) -> list[str]:
    named = [g for step in flow.steps for g in step.approvers.groups]
    if flow.requesters is not None:
        named += flow.requesters.groups
    if flow.escalation is not None:
        named += flow.escalation.approvers.groups
    return named


def _summary(flow: Flow) -> list[str]:
    data = _plain(flow)
    wanted = [k for k in FIRST if data.get(k) not in (None, [], {}, False)]
    return [f"{key}: {_show(data[key])}" for key in wanted]


def _is_list_of_scalars(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict | list) for v in value)


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        shown = {k: v for k, v in value.items() if v not in (None, [], {}, "")}
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in shown.items()) + "}"
    return str(value)
