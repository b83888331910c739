"""What an on_request or on_approve hook may return: approve, deny, or None to leave it to people."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Decision(BaseModel):
    """`Decision.approve(reason)` or `Decision.deny(reason)`; the reason goes to the audit log
    and to the requester."""

    model_config = ConfigDict(frozen=True)

    outcome: Literal["approve", "deny"]
    reason: str = ""

    @classmethod
    def approve(cls, reason: str = "") -> Decision:
        return cls(outcome="approve", reason=reason)

    @classmethod
    def deny(cls, reason: str = "") -> Decision:
        return cls(outcome="deny", reason=reason)

    @property
    def approved(self) -> bool:
        return self.outcome == "approve"
