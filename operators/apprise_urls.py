"""Apprise URLs (``json://host/path``, ``ntfys://ntfy.example.com/topic``, ``slack://T/B/C``, ``mailtos://...``):
parsed by apprise itself, so that what a subscription stores is what apprise will send to.

An apprise URL carries its credentials (tokens, passwords) in the URL itself, so it is treated like a webhook
secret: stored encrypted and shown only as :func:`redacted` (the scheme, and the host where the user chose it).

Which hosts the user chooses: apprise gives a plugin a plain ``protocol`` (``json``, ``ntfy``, ``gotify``,
``mailto``, ``mmost``, ...) only when it also talks to a server the URL names; services at fixed cloud addresses
(``slack``, ``tgram``, ``opsgenie``, ...) have only a ``secure_protocol``, and their "host" field is a token.
The chosen hosts are the ones the outbound policy (``operators/outbound.py``) must check.
"""

from __future__ import annotations

import apprise
from apprise.plugins.base import NotifyBase

# Attributes of a plugin that name a server it connects to (an e-mail plugin's SMTP server may differ from the
# address's domain).
_HOST_ATTRIBUTES = ("host", "smtp_host")


def sending_asset() -> apprise.AppriseAsset:
    """Apprise's settings for sending: redirects off (one could lead past the outbound policy), and nothing on disk
    (what some plugins cache between sends stays in memory)."""
    return apprise.AppriseAsset(http_redirects=False, storage_mode="memory")


def parse(url: str, asset: apprise.AppriseAsset | None = None) -> NotifyBase:
    """The apprise plugin of ``url`` (with ``asset``'s settings); ValueError when apprise does not take it."""
    plugin = apprise.Apprise.instantiate(url, asset=asset)
    if plugin is None:
        scheme = url.partition("://")[0] if "://" in url else "?"
        raise ValueError(f"not an apprise URL apprise can send to (scheme {scheme!r}); see the apprise wiki")
    return plugin


def _chooses_host(plugin: NotifyBase) -> bool:
    return getattr(plugin, "protocol", None) is not None


def chosen_hosts(url: str) -> list[tuple[str, int]]:
    """(host, port) of every server a user-chosen-host URL connects to; empty for fixed cloud services."""
    plugin = parse(url)
    if not _chooses_host(plugin):
        return []
    port = plugin.port or (443 if plugin.secure else 80)
    hosts = [getattr(plugin, attribute, None) for attribute in _HOST_ATTRIBUTES]
    return [(host, port) for host in dict.fromkeys(hosts) if isinstance(host, str) and host]


def redacted(url: str) -> str:
    """What answers and logs show of an apprise URL: its scheme, plus the host where the user chose one."""
    try:
        plugin = parse(url)
    except ValueError:
        return "<unparsable apprise URL>"
    scheme = url.partition("://")[0].lower()
    if _chooses_host(plugin) and plugin.host:
        port = f":{plugin.port}" if plugin.port else ""
        return f"{scheme}://{plugin.host}{port}/…"
    return f"{scheme}://…"
