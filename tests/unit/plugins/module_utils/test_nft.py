"""nft's pure logic: the statements of the table for given records (only validated values reach them), the atomic
replacement script, the listing read back without handles, and the commands shown on the slide."""

from __future__ import annotations

import json

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import nft

RECORDS = {'unboxed0': {'subnet': '10.47.0.0/24', 'containers': {
    'web': {'address': '10.47.0.2', 'ports': ['8080:80/tcp', '127.0.0.1:5353:53/udp']},
    'client': {'address': '10.47.0.3', 'ports': []}}}}


def test_statements_of_a_bridge():
    statements = nft.desired_statements(RECORDS)
    assert statements[:4] == [
        'add table ip unboxed',
        'add chain ip unboxed prerouting { type nat hook prerouting priority dstnat ; policy accept ; }',
        'add chain ip unboxed output { type nat hook output priority -100 ; policy accept ; }',
        'add chain ip unboxed postrouting { type nat hook postrouting priority srcnat ; policy accept ; }',
    ]
    assert ('add rule ip unboxed postrouting ip saddr 10.47.0.0/24 oifname != "unboxed0" masquerade comment '
            '"unboxed0 masquerade"') in statements
    assert ('add rule ip unboxed prerouting iifname != "unboxed0" fib daddr type local tcp dport 8080 dnat to '
            '10.47.0.2:80 comment "unboxed0 web 8080:80/tcp"') in statements
    assert ('add rule ip unboxed output fib daddr type local ip daddr 127.0.0.1 udp dport 5353 dnat to 10.47.0.2:53 '
            'comment "unboxed0 web 127.0.0.1:5353:53/udp"') in statements
    assert len(statements) == 4 + 2 + 2 * 2


def test_no_bridge_no_table():
    assert nft.desired_statements({}) == []


@pytest.mark.parametrize('records', [
    {'bad"name': {'subnet': '10.47.0.0/24', 'containers': {}}},
    {'unboxed0': {'subnet': '10.47.0.0/24; flush ruleset', 'containers': {}}},
    {'unboxed0': {'subnet': '10.47.0.0/24', 'containers': {'web': {'address': '10.48.0.2', 'ports': []}}}},
    {'unboxed0': {'subnet': '10.47.0.0/24', 'containers': {'web': {'address': '10.47.0.2', 'ports': ['80" ; flush']}}}},
])
def test_only_validated_values_reach_a_statement(records):
    with pytest.raises(ValueError):
        nft.desired_statements(records)


def test_replace_script_is_one_transaction():
    script = nft.replace_script(['add table ip unboxed'])
    assert script.splitlines() == ['table ip unboxed', 'delete table ip unboxed', 'add table ip unboxed']
    assert nft.delete_script() == 'delete table ip unboxed\n'


def test_digest_changes_with_any_statement():
    statements = nft.desired_statements(RECORDS)
    assert nft.digest(statements) == nft.digest(list(statements))
    assert nft.digest(statements) != nft.digest(statements[:-1])


# nft -j list table ip unboxed (nftables 1.0.6), trimmed to one rule.
LISTED = json.loads('''{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",
 "json_schema_version": 1}}, {"table": {"family": "ip", "name": "unboxed", "handle": 2}},
 {"chain": {"family": "ip", "table": "unboxed", "name": "postrouting", "handle": 3, "type": "nat",
  "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"rule": {"family": "ip", "table": "unboxed", "chain": "postrouting", "handle": 4, "comment": "unboxed0 masquerade",
  "expr": [{"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "unboxed0"}}, {"masquerade": null}]}}]}''')


def test_listing_drops_handles_and_version():
    listed = nft.listing(LISTED)
    assert [next(iter(entry)) for entry in listed] == ['table', 'chain', 'rule']
    assert all('handle' not in next(iter(entry.values())) for entry in listed)
    renumbered = json.loads(json.dumps(LISTED).replace('"handle": 4', '"handle": 9'))
    assert nft.listing(renumbered) == listed
    assert nft.listing(None) is None and nft.listing({'nftables': [LISTED['nftables'][0]]}) is None


def test_shell_lines_quote_what_a_shell_would_split():
    lines = nft.shell_lines(nft.desired_statements(RECORDS), table_exists=True)
    assert lines[0] == 'nft delete table ip unboxed' and lines[1] == 'nft add table ip unboxed'
    assert lines[2].startswith("nft 'add chain ip unboxed prerouting {") and lines[2].endswith("'")
