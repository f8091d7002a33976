"""Namespace inspection: /proc/PID/ns link parsing, reports against a reference, canonical order."""

from __future__ import annotations

import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import namespaces

# readlink /proc/PID/ns/* of a container started with unshare --fork --pid --mount-proc, on this machine.
CONTAINER_LINKS = {
    'cgroup': 'cgroup:[4026531835]', 'ipc': 'ipc:[4026531839]', 'mnt': 'mnt:[4026532399]',
    'net': 'net:[4026531833]', 'pid': 'pid:[4026532400]', 'pid_for_children': 'pid:[4026532400]',
    'time': 'time:[4026531834]', 'user': 'user:[4026531837]', 'uts': 'uts:[4026531838]',
}
HOST_LINKS = dict(CONTAINER_LINKS, mnt='mnt:[4026531832]', pid='pid:[4026531836]', pid_for_children='pid:[4026531836]')


@pytest.mark.parametrize('target, inode', [
    ('net:[4026531840]', 4026531840),
    ('pid:[4026532400]', 4026532400),
    ('mnt:[4026532399]', 4026532399),
    ('pid_for_children:[4026532400]', 4026532400),
    ('time_for_children:[4026531834]', 4026531834),
])
def test_parse_ns_link(target, inode):
    assert namespaces.parse_ns_link(target) == inode


@pytest.mark.parametrize('target', ['', 'net:4026531840', 'net:[]', 'net:[12a]', '/proc/1/ns/net', 'net:[1] ',
                                    'net:[4026531840]\n', '\nnet:[4026531840]'])
def test_parse_ns_link_rejects_other_text(target):
    with pytest.raises(ValueError):
        namespaces.parse_ns_link(target)


def fake_proc_ns(tmp_path, processes):
    """A /proc-like tree whose PID/ns entries are symbolic links with the kernel's link text."""
    root = tmp_path / 'proc'
    for pid, links in processes.items():
        ns_dir = root / str(pid) / 'ns'
        ns_dir.mkdir(parents=True)
        for name, target in links.items():
            os.symlink(target, ns_dir / name)
    return str(root)


def test_report_marks_what_differs_from_the_reference(tmp_path):
    proc = fake_proc_ns(tmp_path, {9871: CONTAINER_LINKS, 'self': HOST_LINKS})
    report = namespaces.namespace_report(9871, 'self', proc)
    assert set(report) == set(namespaces.NAMESPACE_TYPES)
    assert report['mount'] == {'inode': 4026532399, 'host_inode': 4026531832, 'isolated': True}
    assert report['pid'] == {'inode': 4026532400, 'host_inode': 4026531836, 'isolated': True}
    assert report['net'] == {'inode': 4026531833, 'host_inode': 4026531833, 'isolated': False}
    assert namespaces.isolated_types(report) == ['pid', 'mount']


def test_an_unreadable_namespace_is_never_reported_isolated(tmp_path):
    proc = fake_proc_ns(tmp_path, {42: {'net': 'net:[1]'}, 'self': HOST_LINKS})
    report = namespaces.namespace_report(42, 'self', proc)
    assert report['pid'] == {'inode': None, 'host_inode': 4026531836, 'isolated': False}
    assert report['net']['isolated'] is True


def test_this_process_is_not_isolated_from_itself():
    report = namespaces.namespace_report('self', 'self')
    assert report['net']['inode'] and report['net']['inode'] == report['net']['host_inode']
    assert namespaces.isolated_types(report) == []


@pytest.mark.parametrize('given, canonical', [
    (['net', 'pid', 'mount'], ['pid', 'net', 'mount']),
    (['mount', 'mount', 'pid'], ['pid', 'mount']),
    (['cgroup', 'user', 'ipc', 'uts'], ['uts', 'ipc', 'user', 'cgroup']),
    ([], []),
])
def test_canonical_order(given, canonical):
    assert namespaces.canonical_order(given) == canonical


def test_canonical_order_rejects_unknown_types():
    with pytest.raises(ValueError, match='mnt'):
        namespaces.canonical_order(['pid', 'mnt'])
