# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's own nftables table (``table ip unboxed``): masquerade for each bridge's subnet and DNAT for
published ports, as Docker's iptables rules do, in one table that nothing else edits.

The table is a function of the bridges' records (netdev.read_records): it is written whole, in one atomic
``nft -f -`` transaction, from values that were validated (bridge names, ipaddress objects, integers, container
names) - never from raw option text. Whether it is as we left it is read as JSON (``nft -j list table``) and
compared with the listing kept after our last write, so that a rule someone added, removed or changed by hand is
seen. A table of that name with no such listing is not ours and is never touched.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ansible_collections.unboxed.lab.plugins.module_utils import netdev

FAMILY = 'ip'
TABLE = 'unboxed'
LISTING_FILE = 'nftables.json'
LOCALHOST = '127.0.0.0/8'

CHAINS = (
    # name, the chain's definition: Docker's nat chains, as nft names their priorities.
    ('prerouting', 'type nat hook prerouting priority dstnat ; policy accept ;'),
    ('output', 'type nat hook output priority -100 ; policy accept ;'),
    ('postrouting', 'type nat hook postrouting priority srcnat ; policy accept ;'),
)


def table_words() -> str:
    return f'{FAMILY} {TABLE}'


def port_match(port: netdev.PublishedPort) -> str:
    host = '' if port.host_ip == netdev.ANY_ADDRESS else f'ip daddr {ipaddress.IPv4Address(port.host_ip)} '
    return f'fib daddr type local {host}{port.protocol} dport {int(port.host_port)}'


def bridge_statements(bridge: str, subnet: str, containers: dict) -> list[str]:
    """``add rule`` statements of one bridge: masquerade for its subnet (leaving by another interface), masquerade for
    the seat's own 127.0.0.1 reaching a published port, and the DNAT of every published port - from outside the seat
    (prerouting, not from the bridge itself) and from the seat itself (output)."""
    if netdev.bridge_problem(bridge):
        raise ValueError(netdev.bridge_problem(bridge))
    network = ipaddress.IPv4Network(subnet, strict=True)
    table = table_words()
    statements = [
        f'add rule {table} postrouting ip saddr {network} oifname != "{bridge}" masquerade comment "{bridge} masquerade"',
        f'add rule {table} postrouting ip saddr {LOCALHOST} oifname "{bridge}" masquerade comment "{bridge} localhost"',
    ]
    for name in sorted(containers):
        entry = containers[name]
        address = ipaddress.IPv4Address(entry['address'])
        if address not in network:
            raise ValueError(f'{address} of {name} is outside {network}')
        for text in entry.get('ports', []):
            port = netdev.parse_port(text)
            target = f'dnat to {address}:{int(port.container_port)}'
            comment = f'comment "{bridge} {name} {port}"'
            statements.append(f'add rule {table} prerouting iifname != "{bridge}" {port_match(port)} {target} {comment}')
            statements.append(f'add rule {table} output {port_match(port)} {target} {comment}')
    return statements


def desired_statements(records: dict) -> list[str]:
    """Every statement that makes the table for ``records`` (bridge -> record); empty when there is no bridge."""
    if not records:
        return []
    statements = [f'add table {table_words()}']
    statements += [f'add chain {table_words()} {name} {{ {definition} }}' for name, definition in CHAINS]
    for bridge in sorted(records):
        record = records[bridge]
        statements += bridge_statements(bridge, record['subnet'], record.get('containers', {}))
    return statements


def replace_script(statements: list[str]) -> str:
    """One transaction for ``nft -f -``: the table is declared (so that delete cannot fail), deleted and made again -
    the kernel applies all of it or none of it."""
    return '\n'.join([f'table {table_words()}', f'delete table {table_words()}'] + statements) + '\n'


def delete_script() -> str:
    return f'delete table {table_words()}\n'


def digest(statements: list[str]) -> str:
    return hashlib.sha256('\n'.join(statements).encode('utf-8')).hexdigest()


def listing(nft_json: dict | None) -> list[dict] | None:
    """The table as ``nft -j list table ip unboxed`` shows it, without handles and version lines (what changes when
    the same table is made again), or None when there is no such table."""
    if not nft_json:
        return None
    kept = []
    for entry in nft_json.get('nftables', []):
        if 'metainfo' in entry:
            continue
        kind, body = next(iter(entry.items()))
        kept.append({kind: {key: value for key, value in body.items() if key != 'handle'}})
    return kept or None


def shell_lines(statements: list[str], table_exists: bool) -> list[str]:
    """The statements as a student types them, one ``nft`` command each."""
    lines = [f'nft delete table {table_words()}'] if table_exists else []
    return lines + [f"nft '{statement}'" if '"' in statement or '{' in statement else f'nft {statement}'
                    for statement in statements]
