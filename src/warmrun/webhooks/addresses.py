"""Which IP addresses a webhook may be sent to: one table of blocks, deny by default.

A webhook receiver is an ordinary unicast host on the public Internet. Python's
`ipaddress.is_global` is not the test for that (it calls `192.0.0.8`, `fec0::1` and every
IPv6 address that embeds an internal IPv4 address global), so the decision is made here,
from the IANA registries, in three steps:

1. An IPv6 address that carries an IPv4 address is judged by that IPv4 address first:
   IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`,
   6to4 `2002:AABB:CCDD::`, Teredo `2001:0:SSSS:SSSS:…:~CCCC:~CCCC` (its server and its
   obfuscated client), and an ISATAP interface identifier (`…:0:5efe:a.b.c.d`, any
   prefix), whose router forwards to that IPv4 address inside its site.
2. The address's most specific block in `BLOCKS` decides. The table holds every entry of
   the IANA IPv4 and IPv6 Special-Purpose Address Registries (2025-10), multicast, the
   deprecated site-local prefix, and the IPv6 space outside `2000::/3` (not allocated for
   unicast at all).
3. Every special-purpose block is refused, including the few the registries call
   globally reachable: those are anycast service addresses (PCP, TURN, AMT, AS112,
   DNS-SD), answered by the nearest instance of that service, which is often the
   deployment's own network operator, or identifiers that are not locators (ORCHIDv2,
   drone DETs). No webhook receiver lives at any of them. Only the translation prefixes
   (IPv4-mapped, NAT64, 6to4, Teredo) pass, on the strength of the IPv4 address they
   carry.

This module does no I/O: `targets` resolves names and asks `address_refusal` about each
address a delivery could connect to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
Embedded = Callable[[IPv6Address], tuple[IPv4Address, ...]]

_THIS_HOST = "reaches this host itself"
_PRIVATE = "a private network: the deployment's own internal services"
_NOT_A_DESTINATION = "not valid as a destination address"
_DOCUMENTATION = "reserved for documentation; no real host is there"
_BENCHMARKING = "reserved for benchmarking networks; no real receiver is there"
_RESERVED = "reserved; not allocated to any host"
_MULTICAST = "multicast: a group of hosts, not one receiver"
_ANYCAST = (
    "an anycast service address, answered by the nearest instance of that service (often "
    "the deployment's own network operator); never a webhook receiver"
)
_IDENTIFIER = "identifiers, not locators: no host is reached at them"
_TRANSLATED = "decided by the IPv4 address it carries"


@dataclass(frozen=True)
class AddressBlock:
    """One row of the table: a registry's entry and what warmrun does with it."""

    network: IPv4Network | IPv6Network
    name: str
    """The block's name in its registry."""
    source: str
    """The registry and RFC it comes from."""
    globally_reachable: bool | None
    """The registry's "Globally Reachable" column (None: N/A or not given)."""
    refused: str | None
    """Why a webhook may not go there; None: it may (after its embedded IPv4, if any)."""
    embedded: Embedded | None = None
    """The IPv4 address(es) an address of this block carries, judged first."""


def _low_32_bits(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    """IPv4-mapped, IPv4-compatible and NAT64 (RFC 6052 /96) addresses end in it."""
    return (IPv4Address(int(ip) & 0xFFFFFFFF),)


def _sixtofour(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    return (ip.sixtofour,) if ip.sixtofour else ()


def _teredo(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    """The Teredo server and the client (stored inverted, "obfuscated"): both decide."""
    return ip.teredo or ()


def _isatap(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    """RFC 5214: interface identifier `0000:5efe:a.b.c.d` (or `0200:`, the u/g bits)."""
    if (int(ip) >> 32) & 0xFCFF_FFFF == 0x0000_5EFE:
        return _low_32_bits(ip)
    return ()


def _block(
    network: str,
    name: str,
    source: str,
    globally_reachable: bool | None,
    refused: str | None,
    embedded: Embedded | None = None,
) -> AddressBlock:
    return AddressBlock(
        ipaddress.ip_network(network), name, source, globally_reachable, refused, embedded
    )


_V4 = "IANA IPv4 Special-Purpose Address Registry"
_V6 = "IANA IPv6 Special-Purpose Address Registry"

BLOCKS: tuple[AddressBlock, ...] = (
    # IPv4: unicast space is public unless a more specific block says otherwise.
    _block("0.0.0.0/0", "IPv4 unicast", "IANA IPv4 Address Space", True, None),
    _block("0.0.0.0/8", '"This network"', f"{_V4}, RFC 791", False, _THIS_HOST),
    _block("0.0.0.0/32", '"This host on this network"', f"{_V4}, RFC 1122", False, _THIS_HOST),
    _block("10.0.0.0/8", "Private-Use", f"{_V4}, RFC 1918", False, _PRIVATE),
    _block(
        "100.64.0.0/10",
        "Shared Address Space",
        f"{_V4}, RFC 6598",
        False,
        "carrier-grade NAT space, inside the network operator's own network",
    ),
    _block("127.0.0.0/8", "Loopback", f"{_V4}, RFC 1122", False, _THIS_HOST),
    _block(
        "169.254.0.0/16",
        "Link Local",
        f"{_V4}, RFC 3927",
        False,
        "link-local: the deployment's own link, cloud metadata services included",
    ),
    _block("172.16.0.0/12", "Private-Use", f"{_V4}, RFC 1918", False, _PRIVATE),
    _block(
        "192.0.0.0/24",
        "IETF Protocol Assignments",
        f"{_V4}, RFC 6890",
        False,
        "reserved for protocol assignments; not usable but through a more specific one",
    ),
    _block(
        "192.0.0.0/29",
        "IPv4 Service Continuity Prefix",
        f"{_V4}, RFC 7335",
        False,
        "the DS-Lite tunnel's own endpoints, local to the access network",
    ),
    _block("192.0.0.8/32", "IPv4 dummy address", f"{_V4}, RFC 7600", False, _NOT_A_DESTINATION),
    _block("192.0.0.9/32", "Port Control Protocol Anycast", f"{_V4}, RFC 7723", True, _ANYCAST),
    _block(
        "192.0.0.10/32",
        "Traversal Using Relays around NAT Anycast",
        f"{_V4}, RFC 8155",
        True,
        _ANYCAST,
    ),
    _block(
        "192.0.0.170/32",
        "NAT64/DNS64 Discovery",
        f"{_V4}, RFC 8880",
        False,
        "a well-known name for NAT64 discovery, never a host",
    ),
    _block(
        "192.0.0.171/32",
        "NAT64/DNS64 Discovery",
        f"{_V4}, RFC 8880",
        False,
        "a well-known name for NAT64 discovery, never a host",
    ),
    _block("192.0.2.0/24", "Documentation (TEST-NET-1)", f"{_V4}, RFC 5737", False, _DOCUMENTATION),
    _block("192.31.196.0/24", "AS112-v4", f"{_V4}, RFC 7535", True, _ANYCAST),
    _block("192.52.193.0/24", "AMT", f"{_V4}, RFC 7450", True, _ANYCAST),
    _block(
        "192.88.99.0/24",
        "Deprecated (6to4 Relay Anycast)",
        f"{_V4}, RFC 7526",
        None,
        "the deprecated 6to4 relay anycast: answered by whichever relay is nearest",
    ),
    _block("192.88.99.2/32", "6a44-relay anycast address", f"{_V4}, RFC 6751", False, _ANYCAST),
    _block("192.168.0.0/16", "Private-Use", f"{_V4}, RFC 1918", False, _PRIVATE),
    _block(
        "192.175.48.0/24", "Direct Delegation AS112 Service", f"{_V4}, RFC 7534", True, _ANYCAST
    ),
    _block("198.18.0.0/15", "Benchmarking", f"{_V4}, RFC 2544", False, _BENCHMARKING),
    _block(
        "198.51.100.0/24", "Documentation (TEST-NET-2)", f"{_V4}, RFC 5737", False, _DOCUMENTATION
    ),
    _block(
        "203.0.113.0/24", "Documentation (TEST-NET-3)", f"{_V4}, RFC 5737", False, _DOCUMENTATION
    ),
    _block(
        "224.0.0.0/4", "Multicast", "IANA IPv4 Multicast Address Space, RFC 5771", False, _MULTICAST
    ),
    _block("240.0.0.0/4", "Reserved", f"{_V4}, RFC 1112", False, _RESERVED),
    _block(
        "255.255.255.255/32",
        "Limited Broadcast",
        f"{_V4}, RFC 919",
        False,
        "broadcast to the deployment's own link",
    ),
    # IPv6: only 2000::/3 is allocated for global unicast; the rest is refused unless
    # a more specific block below carries an IPv4 address that decides.
    _block(
        "::/0",
        "Reserved by IETF (outside 2000::/3)",
        "IANA IPv6 Address Space, RFC 4291",
        None,
        "not allocated for global unicast",
    ),
    _block("2000::/3", "Global Unicast", "IANA IPv6 Address Space, RFC 4291", True, None),
    _block("::1/128", "Loopback Address", f"{_V6}, RFC 4291", False, _THIS_HOST),
    _block("::/128", "Unspecified Address", f"{_V6}, RFC 4291", False, _THIS_HOST),
    _block(
        "::/96",
        "IPv4-Compatible IPv6 Address (deprecated)",
        "IANA IPv6 Address Space, RFC 4291 section 2.5.5.1",
        None,
        "deprecated; no host is reached at one",
        _low_32_bits,
    ),
    _block("::ffff:0:0/96", "IPv4-mapped Address", f"{_V6}, RFC 4291", False, None, _low_32_bits),
    _block("64:ff9b::/96", "IPv4-IPv6 Translat.", f"{_V6}, RFC 6052", True, None, _low_32_bits),
    _block(
        "64:ff9b:1::/48",
        "IPv4-IPv6 Translat.",
        f"{_V6}, RFC 8215",
        False,
        "the local-use translation prefix: a translator inside the deployment's own network",
    ),
    _block(
        "100::/64", "Discard-Only Address Block", f"{_V6}, RFC 6666", False, "discarded by design"
    ),
    _block("100:0:0:1::/64", "Dummy IPv6 Prefix", f"{_V6}, RFC 9780", False, _NOT_A_DESTINATION),
    _block(
        "2001::/23",
        "IETF Protocol Assignments",
        f"{_V6}, RFC 2928",
        False,
        "reserved for protocol assignments; not usable but through a more specific one",
    ),
    _block("2001::/32", "TEREDO", f"{_V6}, RFC 4380", None, None, _teredo),
    _block("2001:1::1/128", "Port Control Protocol Anycast", f"{_V6}, RFC 7723", True, _ANYCAST),
    _block(
        "2001:1::2/128",
        "Traversal Using Relays around NAT Anycast",
        f"{_V6}, RFC 8155",
        True,
        _ANYCAST,
    ),
    _block(
        "2001:1::3/128",
        "DNS-SD Service Registration Protocol Anycast",
        f"{_V6}, RFC 9665",
        True,
        _ANYCAST,
    ),
    _block("2001:2::/48", "Benchmarking", f"{_V6}, RFC 5180", False, _BENCHMARKING),
    _block("2001:3::/32", "AMT", f"{_V6}, RFC 7450", True, _ANYCAST),
    _block("2001:4:112::/48", "AS112-v6", f"{_V6}, RFC 7535", True, _ANYCAST),
    _block(
        "2001:10::/28",
        "Deprecated (previously ORCHID)",
        f"{_V6}, RFC 4843",
        None,
        _IDENTIFIER,
    ),
    _block("2001:20::/28", "ORCHIDv2", f"{_V6}, RFC 7343", True, _IDENTIFIER),
    _block(
        "2001:30::/28",
        "Drone Remote ID Protocol Entity Tags (DETs) Prefix",
        f"{_V6}, RFC 9374",
        True,
        _IDENTIFIER,
    ),
    _block("2001:db8::/32", "Documentation", f"{_V6}, RFC 3849", False, _DOCUMENTATION),
    _block("2002::/16", "6to4", f"{_V6}, RFC 3056", None, None, _sixtofour),
    _block(
        "2620:4f:8000::/48", "Direct Delegation AS112 Service", f"{_V6}, RFC 7534", True, _ANYCAST
    ),
    _block("3fff::/20", "Documentation", f"{_V6}, RFC 9637", False, _DOCUMENTATION),
    _block(
        "5f00::/16",
        "Segment Routing (SRv6) SIDs",
        f"{_V6}, RFC 9602",
        False,
        "segment-routing instructions inside an operator's network",
    ),
    _block("fc00::/7", "Unique-Local", f"{_V6}, RFC 4193", False, _PRIVATE),
    _block(
        "fe80::/10",
        "Link-Local Unicast",
        f"{_V6}, RFC 4291",
        False,
        "link-local: the deployment's own link",
    ),
    _block(
        "fec0::/10",
        "Site-Local (deprecated)",
        "IANA IPv6 Address Space, RFC 3879",
        False,
        "deprecated site-local: still routed inside some sites",
    ),
    _block("ff00::/8", "Multicast", "IANA IPv6 Address Space, RFC 4291", False, _MULTICAST),
)
"""Every block warmrun knows; an address belongs to the most specific one containing it."""

_MOST_SPECIFIC_FIRST = sorted(BLOCKS, key=lambda block: block.network.prefixlen, reverse=True)


@dataclass(frozen=True)
class AddressRefusal:
    """Why one address may not receive webhooks."""

    address: IPAddress
    block: AddressBlock
    embedded: IPv4Address | None = None
    """The IPv4 address carried by `address` that was refused, if that was the reason."""

    def __str__(self) -> str:
        subject = f"{self.address} carries {self.embedded}, which" if self.embedded else None
        block = self.block
        return (
            f"{subject or self.address} is in {block.network} ({block.name}, "
            f"{block.source}): {block.refused}"
        )


def block_of(address: IPAddress) -> AddressBlock:
    """The most specific block that contains `address` (the table covers every address)."""
    for block in _MOST_SPECIFIC_FIRST:
        if address.version == block.network.version and address in block.network:
            return block
    raise AssertionError(f"no block contains {address}")  # unreachable: ::/0 and 0.0.0.0/0


def address_refusal(address: str | IPAddress) -> AddressRefusal | None:
    """Why a webhook may not be sent to `address`; None when it may.

    `address` is an IP address as `getaddrinfo` answers it (an IPv6 zone, `%eth0`, is
    ignored: the address alone decides)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    block = block_of(ip)
    if isinstance(ip, IPv6Address):
        carried = block.embedded(ip) if block.embedded else _isatap(ip)
        for inner in carried:
            inner_refusal = address_refusal(inner)
            if inner_refusal is not None:
                return AddressRefusal(ip, inner_refusal.block, embedded=inner)
    if block.refused is not None:
        return AddressRefusal(ip, block)
    return None
