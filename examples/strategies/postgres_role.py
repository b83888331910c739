"""A strategy of one's own: membership of a PostgreSQL role, granted with GRANT and revoked with
REVOKE. A flow names it with `strategy: custom` and `module: examples/strategies/postgres_role.py`;
each target says which role, e.g. `settings: {role: billing_admin}`.

It talks to the database through `connect()`, which reads KEYCARD_PG_DSN from the worker's
environment; the tests replace it with an in-memory stand-in. Every method is idempotent, as
Keycard needs: granting a role someone has, or revoking one they no longer have, succeeds.
"""

from __future__ import annotations

import os
import re

from keycard.sdk import Grant, Refused, Resolved, Strategy

ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresRole(Strategy):
    async def resolve(self, person: str, target: str, settings: dict[str, str]) -> Resolved:
        role = settings.get("role", "")
        if not ROLE.match(role):
            raise Refused(f"target {target}: settings.role must be a PostgreSQL role name")
        login = person.split("@", 1)[0].replace(".", "_").lower()
        async with connect() as db:
            if not await db.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login):
                raise Refused(f"{person} has no database login {login}")
            if not await db.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                raise Refused(f"there is no role {role}")
        return Resolved(principal_id=login, resource_id=f"role:{role}")

    async def exists(self, grant: Grant) -> bool:
        async with connect() as db:
            return bool(
                await db.fetchval(
                    "SELECT pg_has_role($1, $2, 'MEMBER')",
                    grant.principal_id,
                    grant.resource_id.removeprefix("role:"),
                )
            )

    async def grant(self, grant: Grant) -> None:
        role = grant.resource_id.removeprefix("role:")
        async with connect() as db:  # names were checked by resolve; GRANT takes no parameters
            await db.execute(f'GRANT "{role}" TO "{grant.principal_id}"')

    async def revoke(self, grant: Grant) -> None:
        role = grant.resource_id.removeprefix("role:")
        async with connect() as db:
            await db.execute(f'REVOKE "{role}" FROM "{grant.principal_id}"')


def connect():
    """A connection from KEYCARD_PG_DSN (asyncpg), as an async context manager."""
    import asyncpg  # the worker image adds it for this strategy

    class _Connection:
        async def __aenter__(self):
            self._db = await asyncpg.connect(os.environ["KEYCARD_PG_DSN"])
            return self._db

        async def __aexit__(self, *exc):
            await self._db.close()

    return _Connection()
