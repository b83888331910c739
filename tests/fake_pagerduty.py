"""A fake PagerDuty REST API v2 over HTTPS on a free local port: users, on-calls and incidents.

The `pagerduty` client only speaks https, so the server presents a self-signed certificate made
per test session; `FakePagerDuty.client_tls` is the client context that trusts it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

API_KEY = "u+fake-pagerduty-key"


@dataclass
class Certificate:
    cert_pem: bytes
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(cert, key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.cert_pem.decode())


def self_signed_certificate() -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@dataclass
class OnCall:
    user_id: str
    schedule_id: str | None = None
    escalation_policy_id: str = "PEP0001"
    level: int = 1


@dataclass
class FakePagerDuty:
    """The account's state, which tests change as they go; `requests` records what was asked."""

    users: dict[str, dict] = field(default_factory=dict)
    oncalls: list[OnCall] = field(default_factory=list)
    incidents: list[dict] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    fail_with: int | None = None
    url: str = ""
    client_tls: ssl.SSLContext | None = None

    def add_user(self, user_id: str, email: str, name: str = "") -> None:
        self.users[user_id] = {
            "id": user_id,
            "type": "user",
            "email": email,
            "name": name or email.split("@")[0].title(),
        }

    def put_on_call(self, user_id: str, schedule_id: str | None = None, **kw) -> None:
        self.oncalls.append(OnCall(user_id, schedule_id, **kw))

    def open_incident(self, service_id: str, status: str = "triggered") -> None:
        self.incidents.append(
            {"id": f"Q{len(self.incidents) + 1}", "status": status, "service": {"id": service_id}}
        )

    # --- the API ---------------------------------------------------------------------------------

    def respond(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict]:
        if self.fail_with:
            return self.fail_with, {"error": {"message": "unavailable", "code": 2001}}
        if path == "/users":
            text = query.get("query", [""])[0].lower()
            found = [
                u for u in self.users.values() if text in u["email"].lower() or text in u["name"]
            ]
            return 200, self._page("users", found, query)
        if path == "/oncalls":
            return 200, self._page("oncalls", self._oncalls(query), query)
        if path == "/incidents":
            services = set(query.get("service_ids[]", []))
            statuses = set(query.get("statuses[]", [])) or {"triggered", "acknowledged"}
            found = [
                i
                for i in self.incidents
                if i["status"] in statuses and (not services or i["service"]["id"] in services)
            ]
            return 200, self._page("incidents", found, query)
        return 404, {"error": {"message": "Not Found", "code": 2100}}

    def _oncalls(self, query: dict[str, list[str]]) -> list[dict]:
        users = set(query.get("user_ids[]", []))
        schedules = set(query.get("schedule_ids[]", []))
        policies = set(query.get("escalation_policy_ids[]", []))
        full = "users" in query.get("include[]", [])
        found = []
        for oncall in self.oncalls:
            if users and oncall.user_id not in users:
                continue
            if schedules and oncall.schedule_id not in schedules:
                continue
            if policies and oncall.escalation_policy_id not in policies:
                continue
            user = self.users[oncall.user_id]
            found.append(
                {
                    "user": user
                    if full
                    else {"id": user["id"], "type": "user_reference", "summary": user["name"]},
                    "schedule": {"id": oncall.schedule_id} if oncall.schedule_id else None,
                    "escalation_policy": {"id": oncall.escalation_policy_id},
                    "escalation_level": oncall.level,
                }
            )
        return found

    @staticmethod
    def _page(wrapper: str, items: list[dict], query: dict[str, list[str]]) -> dict:
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["25"])[0])
        page = items[offset : offset + limit]
        return {
            wrapper: page,
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(items),
            "total": len(items),
        }


def _handler(fake: FakePagerDuty) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            fake.requests.append(self.path)
            if self.headers.get("Authorization") != f"Token token={API_KEY}":
                status, body = 401, {"error": {"message": "Unauthorized", "code": 2006}}
            else:
                status, body = fake.respond(url.path, parse_qs(url.query))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def running_fake_pagerduty(certificate: Certificate) -> Iterator[FakePagerDuty]:
    fake = FakePagerDuty()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.socket = certificate.server_context().wrap_socket(server.socket, server_side=True)
    fake.url = f"https://127.0.0.1:{server.server_address[1]}"
    fake.client_tls = certificate.client_context()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
