"""The outbound policy for webhook and apprise targets, and delivery's use of it (no network: literal addresses,
fake DNS)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core.contracts import Alert, DeadLetter
from core.settings import ApiSettings, DeliverySettings, KafkaSettings, Settings, StreamSettings, TritonSettings
from core.stack_state import TRITON, ServiceRecord, StackState
from operators.delivery import AlertDispatcher
from operators.notifications import transition_notification
from operators.outbound import BlockedTarget, OutboundPolicy, own_ports, redact_url
from operators.subscriptions import Delivery, SubscriptionSpec
from tests.state import delivery_journal, subscription_store

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host name -> the addresses getaddrinfo answers; a name not in it does not resolve."""
    answers: dict[str, list[str]] = {}

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in answers[host]
        ]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return answers


def _url(address: str, port: int = 80) -> str:
    return f"http://[{address}]:{port}/hook" if ":" in address else f"http://{address}:{port}/hook"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
async def test_non_public_addresses_are_refused_by_default(address: str, kind: str) -> None:
    with pytest.raises(BlockedTarget, match=f"is a {kind} address: .*delivery.allowed_targets"):
        await OutboundPolicy().resolve(_url(address))


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6])
async def test_public_addresses_pass_and_are_what_is_connected_to(address: str) -> None:
    target = await OutboundPolicy().resolve(_url(address, 8443).replace("http:", "https:"))
    assert target.url == _url(address, 8443).replace("http:", "https:")


async def test_a_host_name_resolving_to_loopback_is_refused(dns: dict[str, list[str]]) -> None:
    dns["localhost"] = ["127.0.0.1"]
    with pytest.raises(BlockedTarget, match=re.escape("localhost resolves to 127.0.0.1, a loopback address")):
        await OutboundPolicy().resolve("http://localhost:9000/hook")


async def test_every_address_of_a_name_must_pass(dns: dict[str, list[str]]) -> None:
    dns["mixed.example"] = [PUBLIC_V4, "10.0.0.7"]
    with pytest.raises(BlockedTarget, match=re.escape("mixed.example resolves to 10.0.0.7, a private address")):
        await OutboundPolicy().resolve("http://mixed.example/")


async def test_the_request_goes_to_the_checked_address_under_the_host_name(dns: dict[str, list[str]]) -> None:
    dns["hooks.example"] = [PUBLIC_V4]
    target = await OutboundPolicy().resolve("https://user:pw@Hooks.Example:8443/a?b=1")
    assert target.url == f"https://user:pw@{PUBLIC_V4}:8443/a?b=1"
    assert target.host_header == "hooks.example:8443" and target.server_name == "hooks.example"


async def test_a_name_that_does_not_resolve_is_an_os_error(dns: dict[str, list[str]]) -> None:
    with pytest.raises(socket.gaierror):
        await OutboundPolicy().resolve("http://nowhere.example/")


async def test_the_allow_list_admits_cidrs_and_host_names(dns: dict[str, list[str]]) -> None:
    policy = OutboundPolicy(["127.0.0.1/32", "fd00::/8", "receiver.plant.internal"])
    await policy.resolve("http://127.0.0.1:9000/")
    await policy.resolve("http://[fd00::5]:9000/")
    await policy.resolve("http://[::ffff:127.0.0.1]:9000/")  # the same address, mapped
    dns["receiver.plant.internal"] = ["10.9.8.7"]
    await policy.resolve("http://receiver.plant.internal./hook")
    with pytest.raises(BlockedTarget, match=re.escape("127.0.0.2 is a loopback")):
        await policy.resolve("http://127.0.0.2:9000/")
    with pytest.raises(BlockedTarget, match=re.escape("169.254.169.254 is a link-local")):
        await policy.resolve("http://169.254.169.254/latest/meta-data/")


async def test_the_stacks_own_ports_stay_refused_on_allowed_local_addresses() -> None:
    policy = OutboundPolicy(["127.0.0.1/32"], own_ports={8000: "triton.http_url"})
    with pytest.raises(BlockedTarget, match=r"port 8000 of 127.0.0.1 is DiffSentry's own \(triton.http_url\)"):
        await policy.resolve("http://127.0.0.1:8000/v2/repository/models/ts_diffusion/unload")
    await policy.resolve("http://127.0.0.1:8001/")
    await policy.resolve(f"http://{PUBLIC_V4}:8000/")  # someone else's port 8000


@pytest.mark.parametrize("url", ["ftp://93.184.216.34/", "file:///etc/passwd", "http:///nohost", "http://[::1"])
async def test_only_http_urls_with_a_host_are_targets(url: str) -> None:
    with pytest.raises(BlockedTarget):
        await OutboundPolicy(["0.0.0.0/0", "::/0"]).resolve(url)


def test_own_ports_come_from_the_settings_and_the_running_stack(tmp_path: Path) -> None:
    executable = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    record = ServiceRecord(TRITON, os.getpid(), executable, {"http": 18000, "grpc": 18001, "metrics": 18002}, "t")
    StackState(services={TRITON: record}).save(tmp_path)
    settings = Settings(
        state_dir=tmp_path,
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:19092,[::1]:19093"),
        triton=TritonSettings(grpc_urls=["127.0.0.1:8001"], http_url="127.0.0.1:8000"),
        api=ApiSettings(port=8088),
        stream=StreamSettings(metrics_port=0),
    )
    ports = own_ports(settings)
    assert {19092, 19093, 8000, 8001, 8088, 18000, 18001, 18002} <= set(ports)
    assert ports[8088] == "api.port" and ports[18002] == "the local stack's triton"
    assert 0 not in ports  # a free port picked at start is not known here


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@hooks.example/a", "https://***@hooks.example/a"),
        ("https://token@hooks.example/a", "https://***@hooks.example/a"),
        ("https://hooks.example/a?x=1", "https://hooks.example/a?x=1"),
    ],
)
def test_credentials_in_urls_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_allow_list_setting_takes_cidrs_and_host_names_only() -> None:
    assert DeliverySettings(allowed_targets=["127.0.0.1/32", "::1", "hooks.plant.internal"]).allowed_targets
    for entry in ["http://127.0.0.1/", "10.0.0.0/33", "two words", ""]:
        with pytest.raises(ValueError, match="neither a CIDR"):
            DeliverySettings(allowed_targets=[entry])


# --- delivery through the policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("json://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
        ("forms://169.254.169.254/latest", "169.254.169.254 is a link-local address"),
        ("ntfy://10.0.0.8/plant", "10.0.0.8 is a private address"),
        ("gotify://internal.example/token", "internal.example resolves to 192.168.1.5, a private address"),
        ("mailto://ops:pw@plant.example?smtp=10.1.1.1", "10.1.1.1 is a private address"),
        ("xml://[::1]:9000/", "::1 is a loopback address"),
    ],
)
async def test_apprise_servers_the_user_names_pass_the_policy(
    url: str, refusal: str, dns: dict[str, list[str]]
) -> None:
    dns["internal.example"] = ["192.168.1.5"]
    dns["plant.example"] = [PUBLIC_V4]
    with pytest.raises(BlockedTarget, match=re.escape(refusal)):
        await OutboundPolicy().check_apprise_url(url)
    await OutboundPolicy(["0.0.0.0/0", "::/0", "internal.example"]).check_apprise_url(url)


async def test_apprise_cloud_services_are_not_resolved_and_unknown_urls_are_refused(dns: dict[str, list[str]]) -> None:
    # Their "host" is a token (nothing resolves here): the service's own address is fixed by apprise.
    await OutboundPolicy().check_apprise_url("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    await OutboundPolicy().check_apprise_url("ntfy://plant-alerts")  # ntfy.sh, the cloud service
    with pytest.raises(BlockedTarget, match="not an apprise URL"):
        await OutboundPolicy().check_apprise_url("gopher://example.com/")
    with pytest.raises(BlockedTarget, match=r"port 9092 of 127.0.0.1 is DiffSentry's own"):
        await OutboundPolicy(["127.0.0.1/32"], {9092: "kafka.bootstrap_servers"}).check_apprise_url(
            "json://127.0.0.1:9092/"
        )


def _alert() -> Alert:
    return Alert(
        alert_id="al-1",
        modality="sensor",
        stream="pump-1",
        state="firing",
        severity="warning",
        started_at=0.0,
        event_time=1.0,
        score=2.0,
        threshold=1.0,
        model="m",
    )


Handler = Callable[[httpx.Request], httpx.Response]


async def _deliver(tmp_path: Path, url: str, handler: Handler) -> tuple[list[httpx.Request], list[DeadLetter]]:
    """One alert to one subscription of ``url``; returns the requests the transport saw and the dead letters."""
    requests: list[httpx.Request] = []
    letters: list[DeadLetter] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return handler(request)

    async def to_dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    store = subscription_store(tmp_path / "subscriptions.sqlite")
    journal = delivery_journal(tmp_path / "subscriptions.sqlite")
    store.create(SubscriptionSpec(name="t", delivery=Delivery(webhook_url=url), secret="s" * 20))
    client = httpx.AsyncClient(transport=httpx.MockTransport(record), follow_redirects=True)
    settings = DeliverySettings(max_attempts=2, backoff_base_s=0.0, backoff_jitter=0.0)
    dispatcher = AlertDispatcher(
        store,
        journal,
        settings=settings,
        dead_letter=to_dead_letter,
        source_topic="alerts",
        external_url="http://127.0.0.1:8088",
        client=client,
    )
    await dispatcher.start()
    dispatcher.submit(transition_notification(_alert()))
    await dispatcher.drain()
    await dispatcher.stop()
    await client.aclose()
    return requests, letters


async def test_a_redirect_to_a_private_address_is_not_followed(tmp_path: Path) -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": "http://10.0.0.1/admin"})

    requests, (letter,) = await _deliver(tmp_path, f"http://{PUBLIC_V4}/hook", redirect)
    assert [str(r.url) for r in requests] == [f"http://{PUBLIC_V4}/hook"]  # even by a client that follows them
    assert letter.reason.endswith("failed after 1 attempt(s): HTTP 307: redirects are not followed")


async def test_a_name_resolving_to_a_private_address_at_delivery_time_gets_no_request(
    tmp_path: Path, dns: dict[str, list[str]]
) -> None:
    dns["hooks.example"] = ["10.0.0.9"]  # public when subscribed, private now (DNS rebinding)
    requests, (letter,) = await _deliver(
        tmp_path, "http://user:pw@hooks.example/hook", lambda request: httpx.Response(200)
    )
    assert requests == []
    assert letter.reason == (
        f"subscription {letter.reason.split(':')[0].split()[1]}: webhook http://***@hooks.example/hook failed after "
        "1 attempt(s): refused by the outbound policy: hooks.example resolves to 10.0.0.9, a private address: "
        "notifications go to public addresses unless delivery.allowed_targets lists the address (in a CIDR) or the host"
    )


async def test_delivery_connects_to_the_checked_address_with_the_host_header(
    tmp_path: Path, dns: dict[str, list[str]]
) -> None:
    dns["hooks.example"] = [PUBLIC_V4]
    requests, letters = await _deliver(tmp_path, "http://hooks.example:8080/hook", lambda r: httpx.Response(204))
    (request,) = requests
    assert str(request.url) == f"http://{PUBLIC_V4}:8080/hook" and request.headers["Host"] == "hooks.example:8080"
    assert letters == []


async def test_a_host_that_does_not_resolve_is_retried(tmp_path: Path, dns: dict[str, list[str]]) -> None:
    requests, (letter,) = await _deliver(tmp_path, "http://gone.example/", lambda r: httpx.Response(200))
    assert requests == [] and "failed after 2 attempt(s): cannot resolve the host" in letter.reason
