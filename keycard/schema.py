"""The building blocks every part of keycard.yaml's schema shares: names, emails, strict models and
`${VAR}` references. Kept apart so the strategy registry (keycard/strategies.py) and the config
(keycard/config.py) both build on them without importing each other."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ENV_REF_PATTERN = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
PERMISSION_SET_ARN = re.compile(
    r"^arn:aws[a-z-]*:sso:::permissionSet/ssoins-[0-9a-f]+/ps-[0-9a-f]+$"
)

Name = Annotated[
    str, Field(pattern=NAME_PATTERN, description="lower-case letters, digits, - and _")
]


def _email(value: str) -> str:
    value = value.strip().lower()
    if not EMAIL_PATTERN.match(value):
        raise ValueError(f"{value!r} is not an email address")
    return value


# Validated one by one, so a bad address is reported at its own index.
Email = Annotated[str, AfterValidator(_email)]


class _Strict(BaseModel):
    """Config models reject unknown keys: a typo must not silently disable a rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvRef(BaseModel):
    """A secret kept out of the file: `${SLACK_BOT_TOKEN}` in YAML, read from the environment."""

    model_config = ConfigDict(frozen=True)

    env: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = ENV_REF_PATTERN.match(value.strip())
            if not match:
                raise ValueError(
                    "secrets are never written in keycard.yaml: "
                    "write an environment reference such as ${MY_SECRET}"
                )
            return {"env": match.group(1)}
        return value

    def resolve(self, environ: Mapping[str, str] | None = None) -> str:
        env: Mapping[str, str] = os.environ if environ is None else environ
        value = env.get(self.env)
        if not value:
            raise LookupError(f"environment variable {self.env} is not set")
        return value
