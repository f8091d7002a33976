# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local lab behind `scripts/labctl`: Debian hosts in Linux namespaces on this one machine, reached over SSH
as a classroom's seats are: an unprivileged account with sudo, cgroup hierarchies at /sys/fs/cgroup.

Each lab host is built by hand the way a container runtime would build it. One file per question:

    addresses.py  how a host gets its address, MAC and interface names (pure: the lab's network plan)
    net.py        the bridge, the host's network namespace and veth pair, in the kernel (ip)
    apt.py        which Debian mirror: the sources apt on this machine already uses
    image.py      the base root file system, built once with mmdebstrap and cached as a tarball
    rootfs.py     a host's own copy of the base, made into that host; removing it safely
    account.py    who logs in: the unprivileged `student` with the lab's key, and sudo for root
    ssh.py        the lab's client key, host keys, sshd's settings, known_hosts for ssh and paramiko
    cgroups.py    a seat's cgroups below labctl's own, and what the seat sees at /sys/fs/cgroup
    host.py       a host as processes: started in its namespaces and cgroups, known by PID + start time, stopped
    boot.py       `labctl _boot`: PID 1 of a new host (cgroup namespace, mounts, pivot_root, hostname, exec tini)
    inventory.py  the Ansible inventory labctl writes
    state.py      what labctl remembers (lab.json), where a lab's files are, the lock between labctls
    changes.py    check mode: every action described first, done unless --check
    commands.py   up, down, stop, status, list, build-base: the steps of each command
    cli.py        the command line and how results are printed
    system.py     running commands, reading and writing files, waiting; LabError

Everything needs only Python 3.9+, its standard library and this collection's plugins/module_utils (process
identity, namespaces, mountinfo, paths), which is where those concepts live.
"""
