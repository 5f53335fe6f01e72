import asyncio

import pytest

from operators.delivery import AlertHub, sign, verify_signature
from operators.subscriptions import Selector
from pipeline.contracts import Alert


def test_signature_matches_the_published_hmac_sha256_vector() -> None:
    # The known answer published on Wikipedia's HMAC page for HMAC_SHA256("key", "The quick brown fox ...").
    body = b"The quick brown fox jumps over the lazy dog"
    expected = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert sign("key", body) == expected
    assert verify_signature("key", body, expected)


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        ("key", b"The quick brown fox jumps over the lazy cat", None),
        ("other", b"The quick brown fox jumps over the lazy dog", None),
        ("key", b"The quick brown fox jumps over the lazy dog", "sha256=00"),
        ("key", b"The quick brown fox jumps over the lazy dog", ""),
    ],
)
def test_tampered_bodies_wrong_secrets_and_bad_headers_fail(secret: str, body: bytes, header: str | None) -> None:
    good = sign("key", b"The quick brown fox jumps over the lazy dog")
    assert not verify_signature(secret, body, good if header is None else header)


def _alert(stream: str, n: int) -> Alert:
    return Alert(
        alert_id=f"al-{n}",
        modality="sensor",
        stream=stream,
        state="firing",
        severity="warning",
        started_at=0.0,
        ts=float(n),
        score=2.0,
        threshold=1.0,
        model="m",
    )


async def test_hub_fans_out_by_selector_and_a_slow_listener_loses_its_oldest() -> None:
    hub = AlertHub(queue_size=2)
    pumps = hub.subscribe(Selector(stream="pump-*"))
    fans = hub.subscribe(Selector(stream="fan-*"))
    for n in range(3):
        assert hub.publish(_alert("pump-1", n)) == 1
    assert fans.empty()
    assert [pumps.get_nowait().alert_id for _ in range(2)] == ["al-1", "al-2"]  # type: ignore[union-attr]
    assert hub.dropped == 1
    hub.close()
    assert await asyncio.wait_for(fans.get(), 1) is None
    hub.unsubscribe(pumps)
    hub.unsubscribe(fans)
    assert hub.listeners == 0
