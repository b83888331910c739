"""Optional encryption of everything Keycard puts in Temporal: an AES-GCM payload codec.

Without it, reasons, emails and fields sit in workflow histories as plain JSON, readable by anyone
who can read the Temporal namespace. With `KEYCARD_PAYLOAD_KEY` set, every payload (workflow,
activity, update and signal arguments and results, memos, the summary the Temporal UI shows,
failure messages) is encrypted before it leaves the process, and decrypted on the way in, by the
worker, every client, the replayer and `keycard audit export` alike.

`KEYCARD_PAYLOAD_KEY` holds one or more keys, each `ID:BASE64`, comma-separated. The first one
encrypts; every one listed decrypts. Rotating is: put a new key first and keep the old ones for as
long as histories written with them are kept (the namespace's retention). `keycard codec new-key`
prints a fresh one.

Each encrypted payload says which key made it (`encryption-key-id`, as in Temporal's encryption
sample), and the key id is bound into the ciphertext as associated data, so relabelling a payload
with another key's id makes it fail to decrypt rather than decrypt under the wrong key. Payloads
written before the key was set (no `binary/encrypted` encoding) pass through as they are: turning
the codec on does not strand requests already running.

Search attributes are not payloads: the requester, approvers, flow, target and state stay readable
in the namespace's visibility store, because the request list filters on them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.converter import PayloadCodec as TemporalPayloadCodec

KEY_ENV = "KEYCARD_PAYLOAD_KEY"
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32  # AES-256
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """KEYCARD_PAYLOAD_KEY is malformed; the message says how to fix it."""


class UnknownPayloadKey(PayloadKeyError):
    """A payload was encrypted with a key this process was not given."""


@dataclasses.dataclass(frozen=True)
class PayloadKeys:
    """The keys, in order: `current` encrypts, all of `by_id` decrypt."""

    current: str
    by_id: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str) -> PayloadKeys:
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
        if not entries:
            raise PayloadKeyError(f"{KEY_ENV} is set but empty; {_HOW}")
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(entries, start=1):
            key_id, sep, encoded = entry.partition(":")
            where = f"{KEY_ENV}, key {position}"
            if not sep:
                raise PayloadKeyError(f"{where} has no key id: write it as ID:BASE64; {_HOW}")
            if not _KEY_ID.match(key_id):
                raise PayloadKeyError(
                    f"{where}: the key id {key_id[:70]!r} must be 1-64 letters, digits, '.', "
                    "'_' or '-'"
                )
            if key_id in keys:
                raise PayloadKeyError(f"{where}: the key id {key_id!r} is listed twice")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise PayloadKeyError(f"{where} ({key_id}) is not base64; {_HOW}") from None
            if len(key) != KEY_BYTES:
                raise PayloadKeyError(
                    f"{where} ({key_id}) is {len(key)} bytes; AES-256 needs {KEY_BYTES}; {_HOW}"
                )
            keys[key_id] = key
        return cls(current=next(iter(keys)), by_id=keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PayloadKeys | None:
        text = (os.environ if environ is None else environ).get(KEY_ENV, "")
        return cls.parse(text) if text.strip() else None


_HOW = "make a key with `keycard codec new-key`"


def payload_key_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with KEYCARD_PAYLOAD_KEY, for `doctor` and the start-up checks."""
    try:
        PayloadKeys.from_env(environ)
    except PayloadKeyError as err:
        return str(err)
    return None


def new_key(key_id: str) -> str:
    """A fresh `ID:BASE64` entry for KEYCARD_PAYLOAD_KEY."""
    if not _KEY_ID.match(key_id):
        raise PayloadKeyError(
            f"the key id {key_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


class EncryptionCodec(TemporalPayloadCodec):
    """AES-256-GCM over each whole payload (its metadata and data), with a fresh random nonce."""

    def __init__(self, keys: PayloadKeys):
        self.keys = keys
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.by_id.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keys.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before the codec was turned on
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownPayloadKey(
                f"a payload is encrypted with key {key_id!r}, which {KEY_ENV} does not hold "
                f"(it holds {', '.join(self.keys.by_id)}): add that key back, after the current one"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise UnknownPayloadKey(
                f"a payload labelled with key {key_id!r} does not decrypt with that key: the key "
                "was changed under the same id, or the payload was altered"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def require_keys_for(payloads: Sequence[Payload], converter: DataConverter) -> None:
    """Refuse, with what to do, to read encrypted payloads through a converter without keys
    (which would otherwise fail on an "unknown encoding")."""
    if converter.payload_codec is None and any(
        p.metadata.get("encoding") == ENCODING for p in payloads
    ):
        raise UnknownPayloadKey(
            f"these histories are encrypted: set {KEY_ENV} to the key(s) they were written with"
        )


def data_converter(keys: PayloadKeys | None) -> DataConverter:
    """The converter every Keycard client, worker and replayer uses: pydantic, plus encryption
    (payloads, and failure messages and stack traces) when there are keys."""
    if keys is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def data_converter_from_env(environ: Mapping[str, str] | None = None) -> DataConverter:
    return data_converter(PayloadKeys.from_env(environ))
