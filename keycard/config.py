"""keycard.yaml as a whole: its schema (the flows in flows.py and flow_rules.py, the other sections
in config_sections.py) and its loader, with located error messages."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from keycard.config_sections import (
    AUDIT_TYPES,
    DEFAULT_AUDIT_DESTINATION,
    ApiSettings,
    ApiToken,
    AuditConfig,
    AuditDestination,
    AwsSettings,
    DriftSettings,
    FirehoseDestination,
    HttpDestination,
    JsonlDestination,
    KinesisDestination,
    S3Destination,
    StdoutDestination,
)
from keycard.flow_rules import (
    ActivitySettings,
    AutoApprove,
    PromptField,
    ReasonPolicy,
    SessionsPolicy,
    Strategy,
    step_people,
    unmeetable,
)
from keycard.flows import (
    STRATEGY_TAGS,
    AwsIamGroupFlow,
    AwsSsoFlow,
    AwsSsoGroupFlow,
    Flow,
    Target,
)
from keycard.provenance import (
    ConfigPolicy,
    ConfigSource,
    PolicyRef,
    config_source,
    digest_of,
    flow_digest,
    policy_json,
)
from keycard.schema import (  # noqa: F401 (re-exported: the names every config user knows)
    EMAIL_PATTERN,
    ENV_REF_PATTERN,
    NAME_PATTERN,
    PERMISSION_SET_ARN,
    Email,
    EnvRef,
    Name,
    _email,
    _Strict,
)
from keycard.strategies import (  # noqa: F401 (re-exported)
    STRATEGIES,
    AwsSsoTarget,
    GroupTarget,
    HttpOptions,
    SettingsTarget,
    StrategyInfo,
    TargetBase,
    _TargetBase,
)


class KeycardConfig(_Strict):
    """The whole keycard.yaml: reviewed like code, loaded once per process."""

    version: Literal[1] = 1
    aws: AwsSettings = Field(default_factory=AwsSettings)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    approver_groups: dict[str, list[Email]] = Field(
        default_factory=dict, description="named groups of approver emails"
    )
    flows: list[Flow] = Field(min_length=1)
    api: ApiSettings = Field(default_factory=ApiSettings, description="the HTTP API's tokens")
    drift: DriftSettings = Field(default_factory=DriftSettings)
    allow_hooks_outside_config_dir: bool = Field(
        default=False,
        description="let flows' `hooks` name files outside this file's directory (off: a review "
        "of this directory then covers every line of code the worker runs for a flow)",
    )
    # Where the file was loaded from: flows' `hooks` paths are relative to it.
    _base_dir: Path | None = PrivateAttr(default=None)
    # Its git commit and path, when it was loaded from a file (keycard/provenance.py).
    _source: ConfigSource = PrivateAttr(default_factory=ConfigSource)

    @property
    def base_dir(self) -> Path:
        return self._base_dir or Path(".")

    @property
    def source(self) -> ConfigSource:
        return self._source

    def policy_of(self, flow: Flow) -> PolicyRef:
        """The policy a request of `flow` is decided under: its digest, and this file's source."""
        source = self._source
        return PolicyRef(
            digest=flow_digest(flow), commit=source.commit, path=source.path, dirty=source.dirty
        )

    def policy(self) -> ConfigPolicy:
        """The digest of this whole config and of each flow, and its source (`config.loaded`)."""
        source = self._source
        return ConfigPolicy(
            digest=digest_of(policy_json(self)),
            flows={flow.name: flow_digest(flow) for flow in self.flows},
            commit=source.commit,
            path=source.path,
            dirty=source.dirty,
        )

    @property
    def uses_aws(self) -> bool:
        """Whether any flow grants AWS access, and so needs an AWS region and credentials."""
        return any(STRATEGIES[flow.strategy].aws for flow in self.flows)

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = [f.name for f in self.flows]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"flow names must be unique; repeated: {', '.join(dupes)}")
        for index, flow in enumerate(self.flows):
            backups = flow.escalation.approvers if flow.escalation else None
            for who in (*(step.approvers for step in flow.steps), backups, flow.requesters):
                for group in who.groups if who else []:
                    if group not in self.approver_groups:
                        known = ", ".join(sorted(self.approver_groups)) or "none defined"
                        raise ValueError(
                            f"flows[{index}] ({flow.name}) names group {group!r}, which is not "
                            f"in approver_groups (known: {known})"
                        )
            problem = unmeetable(flow, self.approver_groups)
            if problem:
                raise ValueError(f"flows[{index}] ({flow.name}) {problem}")
        return self

    def flow(self, name: str) -> Flow:
        for flow in self.flows:
            if flow.name == name:
                return flow
        raise KeyError(name)


# --- loading and error reporting -----------------------------------------------------------


class ConfigError(Exception):
    """keycard.yaml is unreadable or invalid; `problems` holds one located line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source} is not a valid Keycard config:\n" + "\n".join(problems))


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    previous: int | str | None = None
    for part in loc:
        tag = previous is not None and isinstance(previous, int)  # a list item's union tag
        previous = part
        if isinstance(part, int):
            text += f"[{part}]"
        elif (tag and (part in STRATEGY_TAGS or part in AUDIT_TYPES)) or part.startswith(
            "function-"
        ):
            continue  # the union's tag, not a key the author wrote (`http` may be both)
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem, `flows[1].targets[0].account_id: must be 12 digits`."""
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if item["type"] == "extra_forbidden":
            message = "is not a known setting (check the spelling)"
        elif item["type"] == "missing":
            message = "is required"
        elif item["type"] == "string_pattern_mismatch" and item["ctx"]["pattern"] == NAME_PATTERN:
            message = "must be lower-case letters, digits, - or _ (at most 63), e.g. prod-admin"
        where = _location(item["loc"])
        # A whole-file check about one flow names it first ("flows[1] (prod-admin) ..."): that
        # is where the problem is, rather than the top level.
        about_a_flow = re.match(r"(flows\[\d+\] \([^)]*\)) (.*)", message, re.DOTALL)
        if not item["loc"] and about_a_flow:
            where, message = about_a_flow.groups()
        line = f"{where}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (safe_load keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice here", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config(text: str, source: str = "keycard.yaml") -> KeycardConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping with a `flows` list"])
    try:
        return KeycardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc)) from exc


def load_config(path: str | os.PathLike[str]) -> KeycardConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path),
            [
                f"byte {exc.start + 1}: not UTF-8 text (0x{exc.object[exc.start]:02x}); "
                "save the file as UTF-8"
            ],
        ) from None
    config = parse_config(text, str(path))
    config._base_dir = path.parent
    config._source = config_source(path)
    problems = outside_hook_files(config, path.parent) + missing_hook_files(config, path.parent)
    if problems:
        raise ConfigError(str(path), problems)
    return config


def _code_files(config: KeycardConfig) -> list[tuple[int, str, str]]:
    """(flow index, key, path) of every Python file a flow names: its `hooks`, and a custom
    strategy's `module`."""
    files = []
    for index, flow in enumerate(config.flows):
        if flow.hooks:
            files.append((index, "hooks", flow.hooks))
        module = getattr(flow, "module", None)
        if module:
            files.append((index, "module", module))
    return files


def outside_hook_files(config: KeycardConfig, base_dir: Path) -> list[str]:
    """Flows whose `hooks` or `module` file lies outside the config's directory, unless that is
    allowed."""
    if config.allow_hooks_outside_config_dir:
        return []
    root = base_dir.resolve()
    return [
        f"flows[{index}].{key}: {path} is outside {root}; keep code files beside "
        "keycard.yaml (reviewed with it), or set allow_hooks_outside_config_dir: true"
        for index, key, path in _code_files(config)
        if not (base_dir / path).resolve().is_relative_to(root)
    ]


def unset_environment(config: KeycardConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """One located line per `${VAR}` the config names that is not set (or empty) in `environ`:
    the worker cannot start without them."""
    environ = os.environ if environ is None else environ
    problems = []
    for index, destination in enumerate(config.audit.destinations or []):
        for header, ref in getattr(destination, "headers", {}).items():
            if not environ.get(ref.env):
                problems.append(
                    f"audit.destinations[{index}].headers.{header}: ${{{ref.env}}} is not set "
                    "in this environment; set it where the worker runs"
                )
    return problems


def missing_hook_files(config: KeycardConfig, base_dir: Path) -> list[str]:
    """One located line per `hooks` or `module` file that is not there (relative to base_dir)."""
    return [
        f"flows[{index}].{key}: {path} does not exist (looked in {base_dir / path})"
        for index, key, path in _code_files(config)
        if not (base_dir / path).is_file()
    ]


def default_config_path() -> Path:
    return Path(os.environ.get("KEYCARD_CONFIG", "keycard.yaml"))


def json_schema() -> str:
    schema = KeycardConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Keycard flows (keycard.yaml)"
    return json.dumps(schema, indent=2)


# Every part of keycard.yaml, importable from here as from the modules that define it.
__all__ = [
    "DEFAULT_AUDIT_DESTINATION",
    "EMAIL_PATTERN",
    "NAME_PATTERN",
    "ActivitySettings",
    "ApiSettings",
    "ApiToken",
    "AuditConfig",
    "AuditDestination",
    "AutoApprove",
    "AwsIamGroupFlow",
    "AwsSettings",
    "AwsSsoFlow",
    "AwsSsoGroupFlow",
    "ConfigError",
    "FirehoseDestination",
    "Flow",
    "HttpDestination",
    "JsonlDestination",
    "KeycardConfig",
    "KinesisDestination",
    "PromptField",
    "ReasonPolicy",
    "S3Destination",
    "SessionsPolicy",
    "StdoutDestination",
    "Strategy",
    "Target",
    "describe_errors",
    "json_schema",
    "load_config",
    "parse_config",
    "step_people",
    "unset_environment",
]
