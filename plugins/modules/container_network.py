#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: container_network
short_description: Attach a running ns_container container to a bridge - Docker's default bridge network, by hand
version_added: 0.4.0
description:
  - Does what Docker does for C(docker run) on its default bridge (and C(docker network connect)), with iproute2 and
    nftables, as a student would type it. A bridge on the seat (O(bridge), Docker's C(docker0)) with the first address
    of O(subnet); a veth pair per container, its host end on the bridge and its other end moved into the container's
    network namespace and named C(eth0); an address from the subnet (O(address), else the lowest free one, kept for the
    container across reruns and restarts); C(lo) and C(eth0) up and a default route through the bridge's address;
    C(net.ipv4.ip_forward=1); a masquerade rule for the subnet and a DNAT rule per O(published_ports) entry.
  - The rules live in an nftables table of the collection's own, C(table ip unboxed), made and changed only by this
    module, always whole in one atomic C(nft -f -) transaction. No other table is ever read for a change, flushed or
    edited. A table C(ip unboxed) that this module did not make is refused.
  - The container is found as M(unboxed.lab.ns_exec) finds it - its state file and its PID 1 by PID B(and) start time.
    A container whose process restarted (a new network namespace) is plumbed again on the next run, with the same
    address.
  - O(state=absent) with O(name) detaches the container (its veth, its address, its DNAT rules). The bridge and the
    table stay, even when the last container goes, unless O(remove_bridge=true). O(state=absent) without O(name)
    removes the whole bridge - every container's veth on it, the bridge, its record and rules, and, once no bridge of
    ours is left, the table and the forwarding setting as it was before (what C(reset.yml) does).
  - Returns the equivalent shell commands in RV(commands).
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the kernel's state and the records and reports exactly what a real run would change, with the commands;
        changes nothing and takes no lock.
      - A container that does not run yet (an earlier task in check mode only predicted its start) is predicted as
        attached for the first time, with a warning; a real run refuses to attach a container that does not run.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Linux only; needs root, iproute2, nsenter (util-linux) and nftables.
options:
  name:
    description:
      - The container, as named to M(unboxed.lab.ns_container). It must run, with a network namespace of its own (its
        O(unboxed.lab.ns_container#module:namespaces) list C(net)).
      - Omitted with O(state=absent), the whole bridge is removed.
    type: str
  state:
    description:
      - V(present) attaches the container (again, after a restart); V(absent) detaches it, or removes the bridge.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description:
      - Where ns_container keeps the container's state, when it was given another than the default
        C(/run/unboxed/containers/NAME).
    type: path
  bridge:
    description:
      - The bridge's name, Docker's C(docker0). 1 to 15 lower-case letters, digits and underscores. A link of that name
        that this module did not make (its C(ifalias) is not C(unboxed.lab container_network)) is refused.
    type: str
    default: unboxed0
  subnet:
    description:
      - The bridge's IPv4 subnet (C(/8) to C(/29)); the bridge gets its first host address, the gateway of the
        containers. It must not overlap a route of the seat's main routing table (other tables are not read). The
        default lies outside Docker's address pools, podman's and libvirt's networks and the local lab's C(10.213.0.0/16).
      - A bridge keeps the subnet it was made with; another one is refused until the bridge is removed.
    type: str
    default: 10.47.0.0/24
  address:
    description:
      - The container's address in O(subnet) (not the network, broadcast or bridge address, nor another container's).
        Omitted, the container keeps the address it has on this bridge, or gets the lowest free one.
    type: str
  published_ports:
    description:
      - Ports published on the seat, in C(docker run -p) syntax - C(HOST_PORT:CONTAINER_PORT), an optional C(/tcp) or
        C(/udp) (tcp by default) and an optional C(HOST_IP:) in front. Each becomes a DNAT rule for traffic that arrives
        at the seat (prerouting, not from the bridge itself) and for the seat's own traffic (output), to a local
        address of the seat, C(127.0.0.1) included.
      - A host port another container of ours publishes is refused. A DNAT rule binds no socket, so
        C(net.ipv4.ip_unprivileged_port_start) does not apply to it; what a port below 1024 needs is CAP_NET_ADMIN,
        i.e. root, which the module needs for everything it does (C(become=true)).
    type: list
    elements: str
    default: []
  remove_bridge:
    description:
      - With O(state=absent) and O(name), also remove the bridge when no container is left on it. The bridge is
        removed by O(state=absent) without O(name) in any case.
    type: bool
    default: false
  network_dir:
    description:
      - Where the records are kept - a JSON file per bridge (its subnet, each container's address and ports), the
        forwarding setting found before the first bridge, and the table's listing after the last write.
    type: path
    default: /var/lib/unboxed/networks
  lock_timeout:
    description:
      - Seconds to wait for another run working on the same O(network_dir).
    type: int
    default: 60
notes:
  - Network modes, as C(docker run --network) has them. C(host) - the container has no network namespace of its own
    (ns_container without C(net) in O(unboxed.lab.ns_container#module:namespaces)); C(none) - its own namespace and
    only C(lo), DOWN (the talk's container); C(bridge) - its own namespace attached with this module.
  - The records and the table describe the seat's network namespace the module runs in.
seealso:
  - module: unboxed.lab.ns_container
  - module: unboxed.lab.ns_exec
"""

EXAMPLES = r"""
- name: Attach the web container to the bridge and publish its port 80 as 8080 (docker run -p 8080:80)
  unboxed.lab.container_network:
    name: web
    published_ports: ['8080:80']
  register: web_network

- name: Show what to type
  ansible.builtin.debug:
    var: web_network.commands

- name: Detach a container (the bridge stays)
  unboxed.lab.container_network:
    name: client
    state: absent

- name: Remove the bridge, its rules, and the table and forwarding setting once no bridge is left
  unboxed.lab.container_network:
    bridge: unboxed0
    state: absent
"""

RETURN = r"""
commands:
  description: The shell commands that make the change (or, when nothing changes, that would make it all from nothing).
  returned: always
  type: list
  elements: str
  sample:
    - ip link add name veth-web-1a2b3c type veth peer name eth0 netns 4242
    - nsenter --target=4242 --net ip address add 10.47.0.2/24 dev eth0
    - "nft 'add rule ip unboxed output fib daddr type local tcp dport 8080 dnat to 10.47.0.2:80'"
address:
  description: The container's address, with the prefix length; null without O(name) or once detached.
  returned: always
  type: str
  sample: 10.47.0.2/24
bridge:
  description: The bridge's name.
  returned: always
  type: str
  sample: unboxed0
gateway:
  description: The bridge's address, the containers' default gateway.
  returned: always
  type: str
  sample: 10.47.0.1
subnet:
  description: The bridge's subnet.
  returned: always
  type: str
  sample: 10.47.0.0/24
ports:
  description: The container's published ports, normalized (C(HOST_IP:) only when given, the protocol always).
  returned: always
  type: list
  elements: str
  sample: [8080:80/tcp]
host_veth:
  description: The host end of the container's veth pair.
  returned: when O(name) is given
  type: str
  sample: vweb-1a2b3c
pid:
  description: The container's PID 1, whose network namespace was plumbed; null when it does not run.
  returned: always
  type: int
  sample: 4242
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: Attached web to unboxed0 as 10.47.0.2/24.
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import bridge_network


def main():
    module = AnsibleModule(argument_spec=bridge_network.argument_spec(), supports_check_mode=True)
    try:
        result = bridge_network.Network(module, module.params).run()
    except bridge_network.NetworkError as error:
        module.fail_json(msg=error.msg, **error.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
