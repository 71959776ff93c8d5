"""Which callback URLs may be called: the SSRF guard, from URL to checked addresses.

A target must be a well-formed http(s) URL without credentials, and every address its
host resolves to must pass `addresses.address_refusal`, unless the host is listed in
`WARMRUN_WEBHOOK_ALLOWED_HOSTS`. The check runs when the run is submitted (422 for what
can be known then) and again at each delivery, which then connects to the very address
it checked (`WebhookTarget.pinned_url`), so a DNS answer that changes after submission
cannot aim a delivery at an internal service.

Host names are read strictly, so that no spelling reaches a resolver that would read it
differently: non-ASCII names become their IDNA A-label (UTS #46), a name ending in a
number must be an IPv4 address in one of the forms `inet_aton` accepts (`127.1`,
`0x7f000001`, `2130706433`, `0177.0.0.1`) and is judged as that address, and anything
else (percent-encoding, empty or overlong labels, text after `]`, zone identifiers)
is refused without a lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import idna

from warmrun.webhooks.addresses import address_refusal

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> addresses`: how a host name becomes the addresses to connect to."""

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
"""Cloud metadata names, refused whatever they resolve to."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class WebhookTargetRefused(Exception):
    """The callback URL may not be called from this deployment."""


@dataclass(frozen=True)
class WebhookTarget:
    """A callback URL that passed the guard, and the addresses it was checked against."""

    url: str
    scheme: str
    host: str
    """ASCII, lowercase, without a trailing dot; an IP address in its canonical form."""
    port: int
    path: str
    """Path and query, as given (`/` when empty)."""
    addresses: tuple[str, ...]

    @property
    def authority(self) -> str:
        """The Host header: the URL's host (as an A-label) and any non-default port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def pinned_url(self) -> str:
        """The URL aimed at the first checked address, so nothing is resolved again."""
        address = self.addresses[0]
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class _ParsedURL:
    scheme: str
    host: str
    port: int
    path: str
    address: str | None
    """The host's address when the URL names one (no lookup needed)."""


def _check_url(url: str) -> _ParsedURL:
    """What can be refused from the URL alone; raises `WebhookTargetRefused`."""
    if any(char.isspace() or not char.isprintable() for char in url):
        raise WebhookTargetRefused("callback_url contains whitespace or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise WebhookTargetRefused(f"callback_url is not a valid URL: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise WebhookTargetRefused(f"callback_url must be http or https, not {parts.scheme!r}")
    if "@" in parts.netloc:
        raise WebhookTargetRefused("callback_url must not carry credentials")
    host, address, port_text = _split_authority(parts.netloc)
    port = _port(port_text, scheme)
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return _ParsedURL(scheme, host, port, path, address)


def _split_authority(netloc: str) -> tuple[str, str | None, str]:
    """`(host, address or None, port text)`; every malformed host is a refusal."""
    if netloc.startswith("["):
        literal, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise WebhookTargetRefused("callback_url has a malformed [IPv6] host")
        if "%" in literal:
            raise WebhookTargetRefused("callback_url must not carry an IPv6 zone identifier")
        try:
            address = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise WebhookTargetRefused(
                f"callback_url's [{literal}] is not an IPv6 address"
            ) from None
        return address, address, rest[1:]
    if "[" in netloc or "]" in netloc:
        raise WebhookTargetRefused("callback_url has a malformed [IPv6] host")
    name, _, port_text = netloc.partition(":")
    host = _host_name(name)
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # As WHATWG URL parsers do: a name ending in a number is an IPv4 address or
        # nothing, so `127.1` and `0x7f000001` are judged as the 127.0.0.1 they reach.
        try:
            address = str(ipaddress.IPv4Address(socket.inet_aton(host)))
        except OSError:
            raise WebhookTargetRefused(f"callback_url's {name!r} is not an IPv4 address") from None
        return address, address, port_text
    return host, None, port_text


def _host_name(name: str) -> str:
    """The host as the ASCII name DNS would be asked for."""
    if not name:
        raise WebhookTargetRefused("callback_url has no host")
    if "%" in name:
        raise WebhookTargetRefused("callback_url's host must not be percent-encoded")
    try:
        host = name.lower() if name.isascii() else idna.encode(name, uts46=True).decode()
    except idna.IDNAError as err:
        raise WebhookTargetRefused(f"callback_url's host is not a valid name: {err}") from None
    host = host.removesuffix(".")
    if len(host) > 253:
        raise WebhookTargetRefused("callback_url's host is longer than 253 characters")
    for label in host.split("."):
        if not _LABEL.fullmatch(label):
            raise WebhookTargetRefused(
                f"callback_url's host has an invalid label {label[:64]!r} (letters, digits, "
                "'-' and '_', 1 to 63 characters)"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise WebhookTargetRefused(
                    f"callback_url's host has an invalid IDNA label {label!r}"
                ) from None
    return host


def _port(text: str, scheme: str) -> int:
    if not text:
        return _DEFAULT_PORTS[scheme]
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise WebhookTargetRefused(f"callback_url has an invalid port {text[:16]!r}")
    return int(text)


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system's resolver gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_webhook_target(
    url: str, allowed_hosts: Iterable[str], resolver: Resolver = system_resolver
) -> WebhookTarget:
    """Check `url` and resolve its host; refuse internal addresses unless allowed."""
    parsed = _check_url(url)
    host = parsed.host
    allowed = {_canonical_host(name) for name in allowed_hosts if name.strip()}
    if host in METADATA_HOSTS and host not in allowed:
        raise WebhookTargetRefused(f"{host} is a cloud metadata endpoint")
    if parsed.address is not None:
        addresses: tuple[str, ...] = (parsed.address,)
    else:
        try:
            addresses = tuple(dict.fromkeys(await resolver(host, parsed.port)))
        except socket.gaierror as err:
            raise WebhookTargetRefused(f"cannot resolve {host}: {err.strerror}") from None
        except (OSError, UnicodeError) as err:
            raise WebhookTargetRefused(f"cannot resolve {host}: {err}") from None
        if not addresses:
            raise WebhookTargetRefused(f"{host} resolves to no address")
    if host not in allowed:
        for address in addresses:
            refusal = address_refusal(address)
            if refusal is not None:
                why = (
                    str(refusal)
                    if address == host
                    else f"{host} resolves to {address}, and {refusal}"
                )
                raise WebhookTargetRefused(
                    f"{why}. List the host in WARMRUN_WEBHOOK_ALLOWED_HOSTS to allow it."
                )
    return WebhookTarget(
        url=url,
        scheme=parsed.scheme,
        host=host,
        port=parsed.port,
        path=parsed.path,
        addresses=addresses,
    )


def _canonical_host(name: str) -> str:
    """An allow-list entry spelled as `_check_url` spells hosts (`[::1]` is `::1`)."""
    name = name.strip().lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(name.removeprefix("[").removesuffix("]")))
    except ValueError:
        return name
