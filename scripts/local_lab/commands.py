# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each labctl command does, step by step, out of the other files' pieces.

Every step reads the kernel's state first and acts only on a difference (through Changes, which also makes
--check), so a second `up` changes nothing. Each command returns the dict that cli.py prints.
"""

from __future__ import annotations

import ipaddress
import os
import shutil

from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo

from . import account, addresses, cgroups, host, image, inventory, net, releases, rootfs, serve, ssh, state
from .changes import Changes
from .state import Lab
from .system import LabError, read_file, require_root, run, write_file_atomically


def command_up(args) -> dict:
    require_root()
    with state.global_lock(create=not args.check):
        controller = state.load_controller()
        lab = state.load_lab(args.lab)
        inventory_path = os.path.abspath(args.inventory) if args.inventory else None
        changes = Changes(args.check)
        if lab is None:
            lab = new_lab(args.lab, args.subnet, args.host_prefix, inventory_path or inventory.DEFAULT_INVENTORY,
                          args.releases or releases.DEFAULT_RELEASES)
            lab.packages = tuple(args.packages or ())
        else:
            if args.subnet and ipaddress.ip_network(args.subnet) != lab.subnet:
                raise LabError(f'Lab "{lab.name}" already uses {lab.subnet}: run `labctl down --lab {lab.name}` to change its subnet.')
            if args.host_prefix != lab.host_prefix:
                raise LabError(f'Lab "{lab.name}" names its hosts {lab.host_prefix}N: run `labctl down --lab {lab.name}` to rename them.')
            if inventory_path and inventory_path != lab.inventory:
                raise LabError(f'Lab "{lab.name}" writes its inventory to {lab.inventory}: run `labctl down --lab {lab.name}` first '
                               f'to move it.')
            if args.packages is not None and tuple(args.packages) != lab.packages:
                raise LabError(f'Lab "{lab.name}" gives its seats {", ".join(lab.packages) or "no extra packages"}: run '
                               f'`labctl down --lab {lab.name}` to change its --packages.')
            if args.releases and args.releases != lab.releases:
                # Recorded now; each host whose release this changes is made again below.
                changes.make(f'set the releases of lab {lab.name} to {",".join(args.releases)} (was {",".join(lab.releases)})',
                             lambda: None)
                lab.set_releases(args.releases)
        wanted = state.host_names(lab.host_prefix, args.hosts)
        for position, name in enumerate(wanted, 1):
            addresses.host_address(lab.subnet, position)  # fails early when the subnet is too small
            lab.hosts.setdefault(name, lab.new_host(name, position))
        # The bases matter only to hosts still to be copied: hosts already there never wait for a rebuild.
        to_copy = [lab.hosts[name] for name in wanted if not os.path.isfile(lab.hosts[name].marker)]
        # A host whose files hold another release than the lab now gives it is made again.
        installed = {name: rootfs.installed_release(lab.hosts[name]) for name in wanted if lab.hosts[name] not in to_copy}
        to_remake = [lab.hosts[name] for name, release in installed.items() if release != lab.hosts[name].release]
        # A host made by an earlier labctl (root login, no student account) is made again too.
        outdated = {name: rootfs.outdated_reason(lab.hosts[name]) for name in installed if lab.hosts[name] not in to_remake}
        outdated = {name: reason for name, reason in outdated.items() if reason}
        to_copy += to_remake + [lab.hosts[name] for name in outdated]
        bases = {release: image.ensure_base(changes, release, lab.packages) for release in sorted({record.release for record in to_copy})}
        key_made_now = ensure_lab_dir(changes, lab)
        net.ensure_bridge(changes, lab)
        for name in sorted(set(lab.hosts) - set(wanted)):
            changes.make(f'remove {name}', host.remove_host, lab, lab.hosts[name])
        for record in to_remake:
            changes.make(f'make {record.name} again as {releases.describe(record.release)}: it runs {releases.describe(installed[record.name])} '
                         f'(its files go; address and MAC stay, its host key is new)', host.remove_host_files, record)
        for name, reason in outdated.items():
            changes.make(f'make {name} again: {reason}', host.remove_host_files, lab.hosts[name])
        for name in wanted:
            if lab.hosts[name] not in to_copy:
                ssh.ensure_authorized_key(changes, lab, lab.hosts[name], key_made_now)
        rootfs.ensure_rootfs(changes, lab, to_copy, bases)
        for name in wanted:
            host.ensure_host(changes, lab, lab.hosts[name], controller, copied_now=lab.hosts[name] in to_copy)
        ssh.ensure_known_hosts(changes, lab, controller, keys_pending=bool(to_copy))
        inventory.ensure_inventory(changes, lab)
        if not changes.check and changes.changed:
            state.save_lab(lab)
        return lab_result(lab, changes)


def new_lab(name: str, requested_subnet: str | None, host_prefix: str, inventory_path: str, lab_releases) -> Lab:
    """A lab slot and a subnet no other lab of this machine, and no network it routes, uses."""
    other_labs = [lab for lab in state.all_labs() if lab.name != name]
    index = addresses.free_index({lab.index for lab in other_labs}, net.links_by_name())
    subnet = addresses.choose_subnet(index, name, requested_subnet, {lab.name: lab.subnet for lab in other_labs},
                                     net.routed_networks())
    return Lab(name=name, index=index, subnet=subnet, host_prefix=host_prefix, inventory=inventory_path,
               releases=tuple(lab_releases))


def ensure_lab_dir(changes: Changes, lab: Lab) -> bool:
    """The lab's directory and client key; True when the key is (or, in check mode, would be) made now."""
    if not os.path.isfile(lab.state_file):
        changes.make(f'create {lab.dir}', state.create_lab_dir, lab)
    if not (os.path.isfile(lab.key) and os.path.isfile(lab.key + '.pub')):
        changes.make(f'generate the lab SSH key {lab.key}', ssh.create_client_key, lab)
        return True
    return False


def command_stop(args) -> dict:
    require_root()
    with state.global_lock(create=False):
        lab = state.load_lab(args.lab)
        if lab is None:
            raise LabError(f'There is no lab "{args.lab}" (labctl up --lab {args.lab} creates it).')
        unknown = [name for name in args.host if name not in lab.hosts]
        if unknown:
            raise LabError(f'Lab "{lab.name}" has no host {", ".join(unknown)}; it has {", ".join(lab.hosts)}.')
        changes = Changes(args.check)
        for name in args.host:
            record = lab.hosts[name]
            if host.host_running(record) or host.namespace_inits_in_netns(record.netns):
                changes.make(f'stop {name}', host.stop_host, record)
        if not changes.check and changes.changed:
            state.save_lab(lab)
        return lab_result(lab, changes)


def command_down(args) -> dict:
    require_root()
    with state.global_lock(create=False):
        controller = state.load_controller()
        changes = Changes(args.check)
        lab = state.load_lab(args.lab)
        links = net.links_by_name()
        recorded = lab.hosts_in_order() if lab else []
        if lab:
            serve.ensure_not_served(changes, lab)
        for record in recorded:
            if host.host_present(record, links):
                changes.make(f'remove {record.name} (processes, cgroups, {record.netns}, {record.veth}, {record.dir})',
                             host.remove_host, lab, record)
        # What the kernel still has of this lab beyond its record: namespaces by name, links by alias.
        handled_netns = {record.netns for record in recorded}
        handled_links = {record.veth for record in recorded}
        prefix = addresses.netns_name(args.lab, '')
        for name in sorted(os.listdir(net.NETNS_DIR)) if os.path.isdir(net.NETNS_DIR) else []:
            if name.startswith(prefix) and name not in handled_netns:
                changes.make(f'remove the network namespace {name}', host.remove_stray_netns, name)
        for name, link in sorted(links.items()):
            if link.get('ifalias') == addresses.link_alias(args.lab) and name not in handled_links:
                changes.make(f'remove the link {name}', net.delete_link, name)
        # Seats started by a labctl that lost its record leave cgroups below this labctl's own: removed once empty.
        stray_cgroups = cgroups.stray_lab_cgroups(cgroups.current_hierarchies(), args.lab, {record.name for record in recorded})
        if stray_cgroups:
            changes.make(f'remove the cgroups {", ".join(stray_cgroups)}', cgroups.remove_stray_cgroups, stray_cgroups)
        # Without a record, the default inventory is the one place this lab's inventory can be found.
        inventory.remove_inventory(changes, lab.inventory if lab else inventory.DEFAULT_INVENTORY, args.lab)
        current_known_hosts = read_file(ssh.SYSTEM_KNOWN_HOSTS)
        known_hosts = current_known_hosts
        if current_known_hosts is not None:
            known_hosts = ssh.replace_block(current_known_hosts, args.lab, '')
            if known_hosts != current_known_hosts:
                changes.make(f'remove the host keys of lab {args.lab} from {ssh.SYSTEM_KNOWN_HOSTS}', write_file_atomically,
                             ssh.SYSTEM_KNOWN_HOSTS, known_hosts, 0o644)
        if os.path.lexists(state.lab_dir(args.lab)):
            changes.make(f'remove {state.lab_dir(args.lab)}', rootfs.remove_tree, state.lab_dir(args.lab))
        if not any(other.name != args.lab for other in state.all_labs()):
            release_controller(changes, controller, args.lab, known_hosts)
        if args.purge and os.path.isdir(image.CACHE_DIR):
            changes.make(f'remove the cached base root file systems in {image.CACHE_DIR}', shutil.rmtree, image.CACHE_DIR)
        return {'changed': changes.changed, 'check': changes.check, 'lab': args.lab,
                'changes': changes.made, 'timings': changes.timings}


def release_controller(changes: Changes, controller: dict, leaving: str, known_hosts: str | None) -> None:
    """With the last lab gone, undo what labctl did to the controller for all labs.

    ``known_hosts`` is the content /etc/ssh/ssh_known_hosts has once this lab's block is gone.
    """
    if controller.get('created_system_known_hosts') and known_hosts is not None and not known_hosts.strip():
        changes.make(f'remove {ssh.SYSTEM_KNOWN_HOSTS} (labctl created it)', os.unlink, ssh.SYSTEM_KNOWN_HOSTS)
    if controller.get('mounted_run_netns') and mountinfo.find_mount(net.NETNS_DIR) is not None:
        # By now this lab's namespaces are gone (or, in check mode, about to be); anybody else's keep it mounted.
        others = [name for name in os.listdir(net.NETNS_DIR) if not name.startswith(addresses.netns_name(leaving, ''))]
        if not others:
            changes.make(f'unmount {net.NETNS_DIR} (the first `ip netns add` mounted it)', run,
                         ['umount', net.NETNS_DIR], f'unmount {net.NETNS_DIR}')
    if os.path.exists(state.CONTROLLER_FILE):
        changes.make(f'remove {state.CONTROLLER_FILE}', os.unlink, state.CONTROLLER_FILE)


def command_serve(args) -> dict:
    """ansible-pull's sources for the lab's seats (serve.py): the repository over git daemon, files over HTTP."""
    require_root()
    with state.global_lock(create=False):
        lab = state.load_lab(args.lab)
        if lab is None:
            raise LabError(f'There is no lab "{args.lab}" (labctl up --lab {args.lab} creates it).')
        changes = Changes(args.check)
        if args.stop:
            serve.ensure_not_served(changes, lab)
            return {'changed': changes.changed, 'check': changes.check, 'lab': lab.name, 'changes': changes.made}
        if not args.repository:
            raise LabError('labctl serve needs --repository (the git repository the seats pull), or --stop.')
        repository = os.path.abspath(args.repository)
        serve.ensure_served(changes, lab, repository, os.path.abspath(args.files) if args.files else None)
        return {'changed': changes.changed, 'check': changes.check, 'lab': lab.name, 'changes': changes.made,
                'address': str(lab.bridge_address.ip), 'git_url': serve.git_url(lab, repository),
                'files_url': serve.files_url(lab) if args.files else None}


def command_status(args) -> dict:
    require_root()  # a host's namespaces and memory are readable by root only
    lab = state.load_lab(args.lab)
    if lab is None:
        return {'changed': False, 'lab': args.lab, 'exists': False, 'hosts': {}}
    return lab_result(lab, Changes(check=True), with_memory=True)


def command_list(args) -> dict:
    del args  # nothing to choose: every lab is listed
    labs = {lab.name: {'subnet': str(lab.subnet), 'bridge': lab.bridge, 'inventory': lab.inventory, 'releases': list(lab.releases),
                       'hosts': [record.name for record in lab.hosts_in_order()]} for lab in state.all_labs()}
    return {'changed': False, 'labs': labs}


def command_build_base(args) -> dict:
    require_root()
    with state.global_lock(create=not args.check):
        changes = Changes(args.check)
        bases = [image.ensure_base(changes, release) for release in args.releases]
        return {'changed': changes.changed, 'check': changes.check,
                'bases': {base.release: {'tarball': base.tarball, 'key': base.key, 'mirrors': list(base.mirrors)} for base in bases},
                'packages': list(image.BASE_PACKAGES), 'changes': changes.made, 'timings': changes.timings}


def lab_result(lab: Lab, changes: Changes, with_memory: bool = False) -> dict:
    hosts = {}
    for record in lab.hosts_in_order():
        entry = {'address': str(record.address.ip), 'mac': record.mac, 'netns': record.netns, 'veth': record.veth,
                 'rootfs': record.rootfs, 'release': record.release,
                 # What the host's files hold now: the same as release once `up` has run.
                 'installed_release': rootfs.installed_release(record), 'debian_version': rootfs.debian_version(record),
                 'running': host.host_running(record), 'cgroups': dict(record.cgroups),
                 'init': record.init.to_dict() if record.init else None}
        if with_memory:
            entry['memory_kib'] = host.host_memory_kib(record) if entry['running'] else 0
        hosts[record.name] = entry
    return {'changed': changes.changed, 'check': changes.check, 'lab': lab.name, 'releases': list(lab.releases), 'subnet': str(lab.subnet),
            'packages': list(lab.packages),
            'user': account.LAB_USER,
            'bridge': lab.bridge, 'inventory': lab.inventory, 'key': lab.key, 'known_hosts': lab.known_hosts,
            'hosts': hosts, 'changes': changes.made, 'timings': changes.timings}
