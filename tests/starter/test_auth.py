"""API tokens: what keycard.yaml accepts, and how a presented token finds its identity."""

from __future__ import annotations

import pytest

from keycard.config import ConfigError, parse_config
from keycard.models import Role
from starter.api.auth import TOKEN_PREFIX, TokenBook, config_entry, hash_token, new_token

FLOWS = """
flows:
  - name: f
    strategy: aws_sso
    targets: [{name: t, account_id: "111111111111", permission_set: ReadOnlyAccess}]
    durations: [1h]
"""


def with_tokens(lines: str):
    return parse_config(FLOWS + "api:\n  tokens:\n" + lines)


def test_tokens_are_long_random_and_recognisable():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith(TOKEN_PREFIX) and len(t) == len(TOKEN_PREFIX) + 43 for t in tokens)


def test_a_token_finds_its_identity_and_nothing_else_does():
    alice, ci = new_token(), new_token()
    book = TokenBook(
        [
            config_entry(alice, "Alice@Example.com", Role.USER),
            config_entry(ci, "ci@example.com", Role.SERVICE, name="deploys"),
        ]
    )
    assert len(book) == 2
    found = book.identify(alice)
    assert found is not None and (found.email, found.role) == ("alice@example.com", Role.USER)
    service = book.identify(ci)
    assert service is not None and (service.role, service.name) == (Role.SERVICE, "deploys")
    assert service.actor().model_dump(include={"email", "role", "via"}) == {
        "email": "ci@example.com",
        "role": Role.SERVICE,
        "via": "api",
    }
    for wrong in ("", alice[:-1], alice + "x", hash_token(alice), alice.upper()):
        assert book.identify(wrong) is None


def test_the_config_holds_hashes_only():
    token = new_token()
    config = with_tokens(
        f'    - {{hash: "{hash_token(token)}", email: bob@example.com, role: admin}}\n'
    )
    assert config.api.tokens[0].role == "admin"
    assert TokenBook(config.api.tokens).identify(token).role is Role.ADMIN  # type: ignore[union-attr]

    with pytest.raises(ConfigError) as pasted:
        with_tokens(f"    - {{hash: {token}, email: bob@example.com}}\n")
    assert pasted.value.problems == [
        "api.tokens[0].hash: this is a token, not its hash: never write tokens in keycard.yaml; "
        "paste the hash line `keycard token create` printed"
    ]
    with pytest.raises(ConfigError) as bad:
        with_tokens('    - {hash: "sha256:abc", email: bob, role: root}\n')
    assert bad.value.problems == [
        "api.tokens[0].hash: must be sha256: followed by 64 lower-case hex digits",
        "api.tokens[0].email: 'bob' is not an email address",
        "api.tokens[0].role: Input should be 'user', 'admin' or 'service'",
    ]
    line = f'    - {{hash: "{hash_token(token)}", email: bob@example.com}}\n'
    with pytest.raises(ConfigError) as twice:
        with_tokens(line + line)
    assert twice.value.problems == ["api.tokens: the same token hash is listed twice"]
