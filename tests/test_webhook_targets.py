"""The SSRF guard on its own, without any network: addresses, URLs and resolution.

Every address outside 127.0.0.0/8 and ::1 is judged here, by the classification
function, and never through a live deployment: if the guard ever failed open, a test
of it through the API would itself send requests to those networks. Resolution is
driven by a resolver passed in (a name table in memory), or by the system resolver
with loopback forms only.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from warmrun.webhooks import (
    BLOCKS,
    WebhookTargetRefused,
    address_refusal,
    resolve_webhook_target,
)
from warmrun.webhooks.addresses import block_of

# (address, the block that refuses it), at least one per refused block of the table and
# both ends of the larger ones.
REFUSED = [
    ("0.1.2.3", "0.0.0.0/8"),
    ("0.0.0.0", "0.0.0.0/32"),
    ("10.0.0.0", "10.0.0.0/8"),
    ("10.1.2.3", "10.0.0.0/8"),
    ("10.255.255.255", "10.0.0.0/8"),
    ("100.64.0.0", "100.64.0.0/10"),
    ("100.127.255.255", "100.64.0.0/10"),
    ("127.0.0.1", "127.0.0.0/8"),
    ("127.255.255.255", "127.0.0.0/8"),
    ("169.254.0.0", "169.254.0.0/16"),
    ("169.254.169.254", "169.254.0.0/16"),
    ("169.254.255.255", "169.254.0.0/16"),
    ("172.16.0.0", "172.16.0.0/12"),
    ("172.31.255.255", "172.16.0.0/12"),
    ("192.0.0.11", "192.0.0.0/24"),
    ("192.0.0.255", "192.0.0.0/24"),
    ("192.0.0.0", "192.0.0.0/29"),
    ("192.0.0.7", "192.0.0.0/29"),
    ("192.0.0.8", "192.0.0.8/32"),
    ("192.0.0.9", "192.0.0.9/32"),
    ("192.0.0.10", "192.0.0.10/32"),
    ("192.0.0.170", "192.0.0.170/32"),
    ("192.0.0.171", "192.0.0.171/32"),
    ("192.0.2.0", "192.0.2.0/24"),
    ("192.0.2.255", "192.0.2.0/24"),
    ("192.31.196.1", "192.31.196.0/24"),
    ("192.52.193.1", "192.52.193.0/24"),
    ("192.88.99.1", "192.88.99.0/24"),
    ("192.88.99.2", "192.88.99.2/32"),
    ("192.168.0.10", "192.168.0.0/16"),
    ("192.168.255.255", "192.168.0.0/16"),
    ("192.175.48.1", "192.175.48.0/24"),
    ("198.18.0.0", "198.18.0.0/15"),
    ("198.19.255.255", "198.18.0.0/15"),
    ("198.51.100.7", "198.51.100.0/24"),
    ("203.0.113.9", "203.0.113.0/24"),
    ("224.0.0.1", "224.0.0.0/4"),
    ("239.255.255.255", "224.0.0.0/4"),
    ("240.0.0.0", "240.0.0.0/4"),
    ("255.255.255.254", "240.0.0.0/4"),
    ("255.255.255.255", "255.255.255.255/32"),
    ("::1", "::1/128"),
    ("::", "::/128"),
    ("::808:808", "::/96"),  # IPv4-compatible, deprecated, even around a public IPv4
    ("::fffe:ffff:ffff", "::/0"),  # just below the IPv4-mapped block
    ("::1:0:0:0", "::/0"),  # just above it
    ("::ffff:0:0:0", "::/0"),  # IPv4-translated (SIIT), not mapped
    ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"),  # just below NAT64
    ("64:ff9b::1:0:0", "::/0"),  # just above it
    ("64:ff9b:1::808:808", "64:ff9b:1::/48"),
    ("100::1", "100::/64"),
    ("100:0:0:1::1", "100:0:0:1::/64"),
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"),  # just below 2000::/3
    ("4000::", "::/0"),  # just above it
    ("2001:1::4", "2001::/23"),
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "2001::/23"),
    ("2001:1::1", "2001:1::1/128"),
    ("2001:1::2", "2001:1::2/128"),
    ("2001:1::3", "2001:1::3/128"),
    ("2001:2::1", "2001:2::/48"),
    ("2001:3::1", "2001:3::/32"),
    ("2001:4:112::1", "2001:4:112::/48"),
    ("2001:10::1", "2001:10::/28"),
    ("2001:20::1", "2001:20::/28"),
    ("2001:30::1", "2001:30::/28"),
    ("2001:db8::1", "2001:db8::/32"),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::/32"),
    ("2620:4f:8000::1", "2620:4f:8000::/48"),
    ("3fff::1", "3fff::/20"),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff::/20"),
    ("5f00::1", "5f00::/16"),
    ("fc00::1", "fc00::/7"),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fc00::/7"),
    ("fe80::1", "fe80::/10"),
    ("fe80::1%eth0", "fe80::/10"),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::/10"),
    ("fec0::1", "fec0::/10"),
    ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fec0::/10"),
    ("ff02::1", "ff00::/8"),
]

# (IPv6 address, the IPv4 address it carries, the block that refuses that IPv4 address)
CARRIED = [
    ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.0/8"),
    ("::ffff:169.254.169.254", "169.254.169.254", "169.254.0.0/16"),
    ("::ffff:10.1.2.3", "10.1.2.3", "10.0.0.0/8"),
    ("::127.0.0.1", "127.0.0.1", "127.0.0.0/8"),
    ("::10.0.0.1", "10.0.0.1", "10.0.0.0/8"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254", "169.254.0.0/16"),
    ("64:ff9b::192.168.0.1", "192.168.0.1", "192.168.0.0/16"),
    ("64:ff9b::192.0.0.8", "192.0.0.8", "192.0.0.8/32"),
    ("2002:7f00:1::", "127.0.0.1", "127.0.0.0/8"),
    ("2002:a9fe:a9fe::1", "169.254.169.254", "169.254.0.0/16"),
    ("2002:c000:0008:1::1", "192.0.0.8", "192.0.0.8/32"),
    # Teredo: 2001:0:<server>:<flags>:<port ^ ffff>:<client ^ ffffffff>
    ("2001:0:a00:1:0:0:f7f7:f7f7", "10.0.0.1", "10.0.0.0/8"),  # private server
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", "127.0.0.0/8"),  # loopback client
    ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254", "169.254.0.0/16"),
    # ISATAP interface identifiers, under a global prefix and a link-local one
    ("2a00:1450:4001::5efe:a9fe:a9fe", "169.254.169.254", "169.254.0.0/16"),
    ("2a00:1450:4001::200:5efe:c0a8:1", "192.168.0.1", "192.168.0.0/16"),
    ("fe80::5efe:a00:1", "10.0.0.1", "10.0.0.0/8"),
]

# Public: every neighbour just outside a refused block that is itself global, ordinary
# public hosts, and translated forms of public IPv4 addresses.
PUBLIC = [
    "1.0.0.0",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "191.255.255.255",
    "192.0.1.0",
    "192.0.1.255",
    "192.0.3.0",
    "192.31.195.255",
    "192.31.197.0",
    "192.52.192.255",
    "192.52.194.0",
    "192.88.98.255",
    "192.88.100.0",
    "192.167.255.255",
    "192.169.0.0",
    "192.175.47.255",
    "192.175.49.0",
    "198.17.255.255",
    "198.20.0.0",
    "198.51.99.255",
    "198.51.101.0",
    "203.0.112.255",
    "203.0.114.0",
    "223.255.255.255",
    "8.8.8.8",
    "93.184.215.14",
    "2000::",
    "2001:200::",  # just above 2001::/23
    "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db9::",
    "2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff",  # just below 6to4
    "2003::",  # just above it
    "2620:4f:7fff:ffff:ffff:ffff:ffff:ffff",
    "2620:4f:8001::",
    "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "3fff:1000::",
    "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",  # the last of 2000::/3
    "2606:4700:4700::1111",
    "2a00:1450:4001:82b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: public server, client 8.8.8.8
    "2a00:1450:4001::200:5efe:808:808",  # ISATAP around a public IPv4 address
]


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


@pytest.mark.parametrize(("address", "block"), REFUSED)
def test_each_special_block_refuses_its_addresses(address: str, block: str) -> None:
    refusal = address_refusal(address)

    assert refusal is not None, f"{address} was allowed"
    assert refusal.block.network == _network(block)
    assert refusal.embedded is None
    assert refusal.block.name in str(refusal)
    assert refusal.block.refused


@pytest.mark.parametrize(("address", "carried", "block"), CARRIED)
def test_an_ipv6_address_is_judged_by_the_ipv4_address_it_carries(
    address: str, carried: str, block: str
) -> None:
    refusal = address_refusal(address)

    assert refusal is not None, f"{address} was allowed"
    assert refusal.embedded == ipaddress.IPv4Address(carried)
    assert refusal.block.network == _network(block)
    assert f"carries {carried}" in str(refusal)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_and_the_neighbours_of_blocks_are_allowed(address: str) -> None:
    assert address_refusal(address) is None


def test_every_block_of_the_table_has_a_case() -> None:
    cases = [a for a, _ in REFUSED] + [a for a, _, _ in CARRIED] + PUBLIC
    covered = {block_of(ipaddress.ip_address(a.split("%")[0])).network for a in cases}

    assert [str(b.network) for b in BLOCKS if b.network not in covered] == []


def test_no_block_the_registries_call_unreachable_is_let_through() -> None:
    """Only translation prefixes pass a registry's "not globally reachable", and only
    on the strength of the IPv4 address they carry."""
    let_through = [
        str(b.network)
        for b in BLOCKS
        if b.globally_reachable is not True and b.refused is None and b.embedded is None
    ]

    assert let_through == []


def test_each_block_says_where_it_comes_from_and_why() -> None:
    for block in BLOCKS:
        assert block.name and block.source.startswith("IANA"), block
        assert block.refused is None or len(block.refused) > 10, block


class NameTable:
    """A resolver from a table in memory: drives resolution with no network at all."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[host]


async def test_one_internal_address_among_public_ones_refuses_the_name() -> None:
    names = NameTable({"hooks.example": ["93.184.215.14", "2606:4700::1", "10.1.2.3"]})

    with pytest.raises(WebhookTargetRefused, match=r"hooks\.example resolves to 10\.1\.2\.3"):
        await resolve_webhook_target("https://hooks.example/h", [], resolver=names)


async def test_a_public_name_is_pinned_to_its_first_checked_address() -> None:
    names = NameTable({"hooks.example": ["93.184.215.14", "93.184.215.14", "2606:4700::1"]})

    target = await resolve_webhook_target(
        "https://Hooks.Example.:8443/in?x=1#frag", [], resolver=names
    )

    assert names.asked == ["hooks.example"]
    assert target.addresses == ("93.184.215.14", "2606:4700::1")
    assert target.pinned_url == "https://93.184.215.14:8443/in?x=1"
    assert target.authority == "hooks.example:8443"
    assert target.host == "hooks.example"


async def test_an_internationalised_name_is_looked_up_as_its_a_label() -> None:
    names = NameTable({"xn--bcher-kva.example": ["93.184.215.14"]})

    target = await resolve_webhook_target("https://Bücher.example/", [], resolver=names)

    assert names.asked == ["xn--bcher-kva.example"]
    assert target.authority == "xn--bcher-kva.example"


async def test_an_internal_address_carried_in_ipv6_refuses_the_name() -> None:
    names = NameTable({"hooks.example": ["64:ff9b::a9fe:a9fe"]})

    with pytest.raises(WebhookTargetRefused, match=r"carries 169\.254\.169\.254"):
        await resolve_webhook_target("https://hooks.example/", [], resolver=names)


async def test_an_allowed_host_skips_the_address_check_but_not_the_url_check() -> None:
    names = NameTable({"receiver.internal": ["10.1.2.3"]})

    target = await resolve_webhook_target(
        "http://receiver.internal:8080/h", ["Receiver.Internal."], resolver=names
    )
    assert target.pinned_url == "http://10.1.2.3:8080/h"

    with pytest.raises(WebhookTargetRefused, match="credentials"):
        await resolve_webhook_target(
            "http://user:pw@receiver.internal/h", ["receiver.internal"], resolver=names
        )


async def test_cloud_metadata_names_are_refused_without_a_lookup() -> None:
    names = NameTable({"metadata.google.internal": ["93.184.215.14"]})

    with pytest.raises(WebhookTargetRefused, match="metadata"):
        await resolve_webhook_target("http://metadata.google.internal/", [], resolver=names)
    assert names.asked == []


async def test_an_unknown_or_empty_name_is_refused() -> None:
    names = NameTable({"empty.example": []})

    with pytest.raises(WebhookTargetRefused, match="cannot resolve"):
        await resolve_webhook_target("https://unknown.example/", [], resolver=names)
    with pytest.raises(WebhookTargetRefused, match="no address"):
        await resolve_webhook_target("https://empty.example/", [], resolver=names)


LOOPBACK_FORMS = [
    "0x7f000001",
    "0X7F000001",
    "2130706433",
    "127.1",
    "127.0.1",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.0.0.01",
    "127.0.0.1.",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits: UTS #46 maps them to ASCII
]


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
async def test_numeric_host_forms_are_the_loopback_address_they_reach(host: str) -> None:
    names = NameTable({})

    with pytest.raises(WebhookTargetRefused, match=r"127\.0\.0\.1 is in 127\.0\.0\.0/8"):
        await resolve_webhook_target(f"http://{host}:9/h", [], resolver=names)
    assert names.asked == []  # an address, never a name to look up


@pytest.mark.parametrize("host", [h for h in LOOPBACK_FORMS if h.isascii()])
def test_the_system_resolver_reads_numeric_hosts_as_the_guard_does(host: str) -> None:
    """The guard judges `127.1` as 127.0.0.1 because the OS would connect there."""
    infos = socket.getaddrinfo(host.rstrip("."), 9, socket.AF_INET, flags=socket.AI_NUMERICHOST)

    assert {info[4][0] for info in infos} == {"127.0.0.1"}


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9/h",
        "http://LOCALHOST.:9/h",
        "http://[::1]:9/h",
        "http://[0:0:0:0:0:0:0:1]:9/h",
        "http://[::ffff:127.0.0.1]:9/h",
        "http://[::ffff:7f00:2]:9/h",
        "http://127.0.0.2:9/h",
        "http://0x7f000002:9/h",
    ],
)
async def test_the_system_resolver_path_refuses_loopback(url: str) -> None:
    with pytest.raises(WebhookTargetRefused, match=r"Loopback"):
        await resolve_webhook_target(url, [])


async def test_an_allow_listed_loopback_name_resolves_for_real() -> None:
    target = await resolve_webhook_target("http://localhost:9/h", ["localhost"])

    assert set(target.addresses) <= {"127.0.0.1", "::1"}
    assert target.authority == "localhost:9"


async def test_allow_list_entries_name_addresses_in_any_spelling() -> None:
    target = await resolve_webhook_target("http://0x7f000001:9/h", ["127.0.0.1"])
    assert target.pinned_url == "http://127.0.0.1:9/h"

    target = await resolve_webhook_target("http://[0::1]:9/h", ["[::1]"])
    assert target.pinned_url == "http://[::1]:9/h"
    assert target.authority == "[::1]:9"


MALFORMED = [
    "http://[::1/",
    "http://[::1]x/",
    "http://[::1]:80x/",
    "http://[127.0.0.1]/",
    "http://[v1.fe80::a+en1]/",
    "http://[fe80::1%25eth0]/",
    "http://[::1%25lo]:9/",
    "http://hooks.example:0/",
    "http://hooks.example:65536/",
    "http://hooks.example:99999/",
    "http://hooks.example:-1/",
    "http://hooks.example:+80/",
    "http://hooks.example:8o/",
    "http://hooks.example:80:90/",
    "http://hooks.example:٨٠/",  # Arabic-Indic digits
    "http://:80/",
    "http:///path",
    "http://",
    "http://@hooks.example/",
    "http://user@hooks.example/",
    "http://user:pw@hooks.example/",
    "http://%31%32%37.0.0.1/",
    "http://127.0.0.%31/",
    "http://hooks%2eexample/",
    "http://hooks.exa mple/",
    "http://hooks.example\t/",
    "http://hooks\\.example/",
    "http://hooks.example\x00/",
    f"http://{'a' * 64}.example/",
    f"http://{'a.' * 127}example/",  # 261 characters
    "http://a..example/",
    "http://.example/",
    "http://-hooks.example/",
    "http://hooks-.example/",
    "http://xn--zz.example/",
    "http://xn--.example/",
    "http://\u2488.example/",  # "⒈": disallowed by UTS #46
    "http://hooks.example\u200b/",  # zero-width space
    "http://999.1.1.1/",
    "http://1.2.3.4.5/",
    "http://hooks.123/",
    "ftp://hooks.example/",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "hooks.example/path",
]


@pytest.mark.parametrize("url", MALFORMED)
async def test_a_malformed_url_is_refused_before_any_lookup(url: str) -> None:
    names = NameTable({"hooks.example": ["93.184.215.14"], "a.example": ["93.184.215.14"]})

    with pytest.raises(WebhookTargetRefused, match="callback_url"):
        await resolve_webhook_target(url, ["hooks.example"], resolver=names)
    assert names.asked == []
