"""Reading Temporal failure chains: the innermost cause carries the outside system's own words."""

from __future__ import annotations


def root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def root_message(err: BaseException) -> str:
    cause = root_cause(err)
    return getattr(cause, "message", None) or str(cause)


def root_type(err: BaseException) -> str | None:
    return getattr(root_cause(err), "type", None)
