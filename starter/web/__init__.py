"""The web console: ask for access, decide, and see who holds what, in a browser.

Server-rendered pages on the API's own FastAPI app, calling KeycardClient like every other front
door: the same rules, the same sentences, no new source of truth. Who may read what is the API's
read model (policy.may_read).

Signing in, in this version: with a Keycard API token (`keycard token create`), pasted once and
kept as a session; and, only in `keycard dev`, as any demo user from a list. Sessions are signed,
HttpOnly, SameSite=Lax cookies that hold the token's hash (never the token), so removing a token
from keycard.yaml ends its sessions at their next click. Every form carries a per-session CSRF
token. Single sign-on over OpenID Connect is the next step (issue 13).
"""

from starter.web.app import ConsoleOptions, console_router, session_middleware, static_files

__all__ = ["ConsoleOptions", "console_router", "session_middleware", "static_files"]
