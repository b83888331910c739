"""The payload codec: what it encrypts, which keys open what, and how a bad key is refused."""

from __future__ import annotations

import base64

import pytest
from temporalio.api.common.v1 import Payload

from keycard.codec import (
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadKeyError,
    PayloadKeys,
    UnknownPayloadKey,
    data_converter,
    new_key,
)

OLD = new_key("k1")
NEW = new_key("k2")
SECRET = "incident 4312, pager says db-7 is down"


def codec(text: str) -> EncryptionCodec:
    return EncryptionCodec(PayloadKeys.parse(text))


async def encoded(value: object, keys: str) -> Payload:
    [payload] = await data_converter(PayloadKeys.parse(keys)).encode([value])
    return payload


async def decoded(payload: Payload, keys: str | None) -> object:
    [value] = await data_converter(PayloadKeys.parse(keys) if keys else None).decode([payload])
    return value


async def test_a_payload_is_unreadable_without_the_key_and_the_same_with_it():
    payload = await encoded({"reason": SECRET}, OLD)

    assert SECRET.encode() not in payload.SerializeToString()
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert payload.metadata[KEY_ID_METADATA] == b"k1"
    assert await decoded(payload, OLD) == {"reason": SECRET}


async def test_the_same_value_encrypts_differently_each_time():
    first, second = await encoded(SECRET, OLD), await encoded(SECRET, OLD)

    assert first.data != second.data


async def test_after_rotation_new_payloads_use_the_first_key_and_old_ones_still_open():
    before = await encoded(SECRET, OLD)
    rotated = f"{NEW},{OLD}"

    after = await encoded(SECRET, rotated)

    assert after.metadata[KEY_ID_METADATA] == b"k2"
    assert await decoded(before, rotated) == SECRET
    assert await decoded(after, rotated) == SECRET


async def test_a_payload_whose_key_was_dropped_names_that_key():
    payload = await encoded(SECRET, OLD)

    with pytest.raises(UnknownPayloadKey, match=r"key 'k1'.*holds k2"):
        await codec(NEW).decode([payload])


async def test_a_payload_relabelled_with_another_key_id_does_not_open():
    payload = await encoded(SECRET, OLD)
    payload.metadata[KEY_ID_METADATA] = b"k2"
    same_bytes_as_k1 = "k2:" + OLD.partition(":")[2]

    with pytest.raises(UnknownPayloadKey, match="altered"):
        await codec(f"{same_bytes_as_k1}").decode([payload])


async def test_a_tampered_payload_does_not_open():
    payload = await encoded(SECRET, OLD)
    payload.data = payload.data[:-1] + bytes([payload.data[-1] ^ 1])

    with pytest.raises(UnknownPayloadKey, match="altered"):
        await codec(OLD).decode([payload])


async def test_payloads_written_before_the_codec_was_turned_on_still_read():
    plain = await data_converter(None).encode([{"reason": SECRET}])

    assert await decoded(plain[0], OLD) == {"reason": SECRET}


async def test_failure_messages_are_encrypted_too():
    from temporalio.api.failure.v1 import Failure

    converter = data_converter(PayloadKeys.parse(OLD))
    failure = Failure()
    await converter.encode_failure(RuntimeError(SECRET), failure)

    assert SECRET not in str(failure)
    assert SECRET in str(await converter.decode_failure(failure))


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (" , ", "empty"),
        (base64.b64encode(b"x" * 32).decode(), "no key id"),
        ("my key:" + base64.b64encode(b"x" * 32).decode(), "must be 1-64 letters"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(b"x" * 16).decode(), "16 bytes; AES-256 needs 32"),
        (f"{OLD},{OLD}", "listed twice"),
    ],
    ids=["only commas", "no id", "id with a space", "not base64", "short", "twice"],
)
def test_a_malformed_key_is_refused_with_what_to_do(value: str, says: str):
    with pytest.raises(PayloadKeyError, match=says) as refused:
        PayloadKeys.from_env({"KEYCARD_PAYLOAD_KEY": value})
    assert value.partition(":")[2][:20] not in str(refused.value) or not value.partition(":")[2]


def test_no_key_means_no_codec():
    assert PayloadKeys.from_env({}) is None
    assert PayloadKeys.from_env({"KEYCARD_PAYLOAD_KEY": ""}) is None
    assert data_converter(None).payload_codec is None
