#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ns_container
short_description: Run a process in its own Linux namespaces inside a root file system - a container built by hand
version_added: 0.1.0
description:
  - Starts O(command) as PID 1 of new Linux namespaces with O(rootfs) as its root directory, the way the talk does it by
    hand with C(unshare --fork --pid --net --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null),
    and keeps it running in the background after the task and the SSH session have ended.
  - The container runs detached, in a session of its own, with its standard input from C(/dev/null) and its output
    appended to a log file in its state directory (RV(log_path)).
  - The task returns once the command has begun its work - it waits for something (a read, a sleep, a child) or has used
    some CPU time of its own (a busy loop). A command that ends before that (a shell printing an error and exiting, a
    program refusing its arguments) fails the task with its exit code and the end of its output, however slowly a loaded
    seat runs it. One that waits first (a shell waiting for a child that fails, a program resolving a name) or spends
    more CPU starting (an interpreter importing a framework) and then ends is reported started, as C(docker run -d)
    reports it; the next run finds it stopped and starts it again.
  - The module tracks the process that is PID 1 inside the container (the child of C(unshare), not C(unshare) itself) by
    its PID B(and) its start time from C(/proc/PID/stat), as runc does. A recorded PID whose start time differs belongs to
    another process that reused the number, and is never signalled. A zombie does not count as running.
  - It is idempotent. With O(state=started), a running container with the same spec is left alone; a changed spec
    (O(rootfs), O(command), O(namespaces), O(hostname), O(mount_proc), O(root_method), O(env), O(workdir),
    O(capabilities), O(no_new_privs), O(seccomp), O(memory), O(pids_limit), O(cpus), O(cpu_shares), O(cgroup_parent),
    O(userns_remap), O(volumes))
    restarts it and the diff shows what changed; a container that died is started again.
  - A running container whose root is no longer what is mounted at O(rootfs) - the overlay was unmounted and mounted
    again behind its back, and the container runs on in the old, detached one, where its writes no longer reach the
    live mount - is restarted on the live mount (RV(msg) says C(its root file system was remounted)). It compares the
    device and inode of C(/proc/PID/root) with those of O(rootfs) on the host. When nothing is mounted at O(rootfs)
    any more, the task fails and says that the container still runs.
  - A run that is killed at any instant leaves no container untracked. Before it starts C(unshare), the module records
    the exact command line it runs; a later run that finds this record without a PID looks for a process with that
    command line whose output goes to this container's log file, and tracks it again (RV(msg) says
    C(tracked again)) or, if the spec changed, restarts it - it never starts a second container beside it.
  - Two runs at once for the same container (two C(ansible-playbook) runs, say) are serialised; each holds an exclusive
    lock for the container's name (in C(/run/unboxed/locks)) from reading the state to writing it, waiting at most
    O(lock_timeout) seconds for another run to finish. Check mode takes no lock.
  - B(A container started by hand is adopted, a wrong one replaced) (O(adopt), default V(true)). With O(state=started)
    and no running recorded container, the module looks in C(/proc) for containers whose root directory is O(rootfs)
    (the same device and inode, not the same path string) that no record of this module owns - PID 1 of a PID
    namespace of its own, or a process of the seat's PID namespace in another namespace of its own (C(unshare) without
    C(--fork)). It compares each with the spec - the command line exactly, each namespace (a requested one differs from
    the module's own, any other equals it), PID 1 of its PID namespace when C(pid) is requested, with O(mount_proc) a
    C(/proc) of its own (C(/proc/PID/root/proc/1/cmdline) is the command), O(root_method) (whether its mount
    namespace's root is the seat's, as after C(chroot), or O(rootfs), as after C(pivot_root)), O(hostname) (read in its
    UTS namespace), O(workdir) (its working directory), the variables of O(env) (others, which a shell adds, are not
    compared), the capability bounding set, C(no_new_privs), no seccomp filter, and with C(user) the uid map. A
    matching container is adopted - its PID, start time and launcher (the C(unshare) that forked it) are recorded as if
    the module had started it (RV(action) V(adopted)); the next run changes nothing. Several matching - the oldest is
    adopted, the others are stopped. When none matches, a container that runs O(command) and is confined no more than
    the spec asks is a wrong try at it - it is stopped (by its PID and start time, through a pidfd; SIGTERM, SIGKILL
    after O(stop_timeout), or SIGKILL at once for a PID 1 that does not handle SIGTERM, which the kernel would drop),
    its C(unshare) is waited for, and the spec's container is started (RV(replaced) says which and why). Other
    containers on O(rootfs) and processes that are no containers (a shell chrooted into it) are left alone, with a
    warning. A spec with confinement or limits (O(capabilities), O(seccomp), O(no_new_privs), O(preset), O(memory),
    O(pids_limit), O(cpus), O(cpu_shares), O(cgroup_parent)) adopts and replaces nothing - its seccomp filter and
    cgroups cannot be recognised on a process started by hand.
  - With O(state=absent) and O(rootfs) given, the containers started by hand on O(rootfs) (those a start would adopt or
    replace, whatever their spec) are stopped too (RV(stopped_by_hand)).
  - Everything is validated before anything is touched, and each error names the option and the reason.
  - B(Several containers, one task) (O(containers)) - as C(docker compose up), the containers of a slide are checked
    together and started in one module run, each exactly as a task of its own would.
  - B(What this isolates.) Each namespace in O(namespaces) gives the container its own view of one kernel resource -
    C(pid) its own process tree (it is PID 1 and sees only its descendants), C(net) its own network stack (only a
    loopback interface, down), C(mount) its own mount table, C(uts) its own hostname, C(ipc) its own System V IPC and
    POSIX message queues, C(user) its own user and group IDs, C(cgroup) its own view of the cgroup tree.
  - B(What it limits and confines, when asked.) O(memory), O(pids_limit), O(cpus) and O(cpu_shares) put the container
    in cgroups of its own (C(PARENT/unboxed-NAME), below the cgroup of the process that runs the module unless
    O(cgroup_parent) names another), as C(docker run --memory --pids-limit --cpus --cpu-shares) do, on cgroup v1, v2 or
    both (hybrid). The launcher joins them before it executes C(unshare), so PID 1 and everything it starts are limited
    from their first instruction; they are removed when the container stops or is removed, and a later run removes
    those a killed container left (RV(msg) says C(cleaned up)).
  - O(capabilities) reduces the bounding, permitted, effective, inheritable and ambient capability sets;
    O(no_new_privs) sets C(PR_SET_NO_NEW_PRIVS); O(seccomp) loads a seccomp filter - Docker's default profile, or
    a profile in Docker's JSON format - compiled on the host with libseccomp. O(preset=docker) is C(docker run) with
    no flags - Docker's 14 capabilities, Docker's seccomp profile, C(pivot_root), O(no_new_privs=false). These need
    O(root_method=pivot_root) - the stage that pivots applies them just before it executes O(command), in runc's
    order. RV(confinement.cap_eff) is read from C(/proc/PID/status) of the running container.
  - B(What it does not isolate.) Without those options (the talk's container), there are no cgroup limits (the
    container can use all CPU, memory and PIDs), no capability dropping (root inside is root with every capability,
    unless O(namespaces) has C(user)) and no seccomp filter - root in such a container can, for example, create a device
    node for the host's disk and mount it. With them, still missing compared to Docker are the devices cgroup (Docker
    lets a container create device nodes with C(CAP_MKNOD), which O(preset=docker) keeps, but not open them; here
    root inside can read and write a block device node it creates, though not mount it - mounting needs
    C(CAP_SYS_ADMIN), which Docker's set lacks), read-only and masked paths in C(/proc) and C(/sys), the AppArmor or
    SELinux profile, and any network interface other than loopback. C(docs/security.md) of the collection compares
    each line with Docker, each shown by a test. It is a lesson in how containers work, not a sandbox.
  - B(chroot or pivot_root.) With O(root_method=chroot), as in the talk, the container's root directory is changed
    but the host's whole file system stays mounted in its mount namespace, one well-known trick away (a root process
    calls chroot() again into a subdirectory, then walks up with C(..)). With O(root_method=pivot_root), as runc and
    Docker do, O(rootfs) is bound onto itself in the new mount namespace, made the root with C(pivot_root), and the old
    root is detached, so that no path leads back to the host's files. Neither drops a capability, sets a seccomp filter
    or C(no_new_privs) by itself (O(capabilities), O(seccomp), O(no_new_privs) and O(preset) do, with V(pivot_root));
    C(docs/security.md) of the collection compares both, each line shown by a test.
  - B(Default changed in 0.2.0.) O(root_method) defaults to V(pivot_root). The talk's slide, whose lesson is the
    chroot escape, sets O(root_method=chroot) explicitly. A container started by an older version with the old
    default (V(chroot)) and run again without O(root_method) is restarted with V(pivot_root); the diff shows it.
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Nothing is started, stopped, written or removed; the reported C(changed) is what the real run would report.
      - The seccomp profile is read and compiled and the cgroups are planned (read only), so that check mode refuses
        what the real run would refuse, and returns the RV(cgroup) and RV(setup_commands) a start would use.
      - An O(rootfs) that does not exist yet, or is an empty directory (an overlay's merged directory before the overlay
        is mounted), is a warning in check mode and a start is predicted - in a C(--check) run of a whole playbook the
        task that builds or mounts it has not run either. A real run fails while it is not a root file system.
      - Likewise a O(userns_remap) user, its ranges or C(newuidmap) that do not exist yet are a warning in check mode
        (the spec in the diff then has no remap); a real run fails while they are missing.
  diff_mode:
    support: full
    details: Before and after show the container's state, its PID and its spec.
  platform:
    platforms: posix
    details: Linux only (namespaces, C(/proc)); needs root and C(unshare) from util-linux; O(seccomp) needs libseccomp (Debian's C(libseccomp2)).
options:
  name:
    description:
      - Name of the container. Names its state directory, so it must be safe as a file name (letters, digits, C(.),
        C(_), C(-); at most 64 characters).
      - Required, unless O(containers) lists the containers (then each item has its own).
    type: str
  rootfs:
    description:
      - The directory that becomes the container's C(/), for example the merged directory of an overlay
        (C(/overlay/merged)). Must be absolute, must not be C(/) or another system directory - neither as written nor
        through a symbolic link - and must contain the program of O(command).
      - The module never writes to it or removes anything from it, but for the mount point of a volume (O(volumes))
        that is missing.
      - Required when O(state=started) or O(state=restarted); with O(state=absent) it names where containers started
        by hand are stopped too (O(adopt)).
    type: path
  command:
    description:
      - The container's PID 1 and its arguments, as a list (C([tail, -f, /dev/null])). The program is looked up in the
        container's C(PATH) inside O(rootfs).
      - Required when O(state=started) or O(state=restarted).
    type: list
    elements: str
  namespaces:
    description:
      - The namespaces the container gets for itself; all others are shared with the host.
      - The talk's container uses C(pid), C(net) and C(mount).
      - C(user) maps root outside to root inside (C(unshare --map-root-user)), unless O(userns_remap) maps it to an
        unprivileged range.
    type: list
    elements: str
    choices: [pid, net, mount, uts, ipc, user, cgroup]
    default: [pid, net, mount]
  hostname:
    description:
      - Hostname inside the container. Needs C(uts) in O(namespaces) - without its own UTS namespace the container
        would rename the host.
    type: str
  mount_proc:
    description:
      - Mount a new C(proc) file system at C(/proc) inside the container, so that C(ps) shows the container's own
        processes (C(unshare --mount-proc)). It is mounted in the container's mount namespace only; the host does not
        see it.
      - Needs C(pid) and C(mount) in O(namespaces), and a C(proc) directory in O(rootfs).
      - When not set, it is V(true) if O(namespaces) has both C(pid) and C(mount), and V(false) otherwise.
    type: bool
  root_method:
    description:
      - How the container's root directory is set.
      - V(chroot) (as in the talk) changes the root directory only; the host's mounts stay in the container's mount
        namespace.
      - V(pivot_root) binds O(rootfs) onto itself, makes it the root of the new mount namespace with C(pivot_root) and
        detaches the old root. Needs C(mount) in O(namespaces).
      - The default is V(pivot_root) (it was V(chroot) before 0.2.0). Set V(chroot) to show the escape, as the talk does.
    type: str
    choices: [chroot, pivot_root]
    default: pivot_root
  env:
    description:
      - Environment variables for the container's command. It starts with a clean environment (C(PATH) as Docker
        sets it and C(HOME=/root)), not with the environment of the Ansible module; these are added to it.
    type: dict
    default: {}
  workdir:
    description:
      - Working directory of the command, a directory inside O(rootfs) (absolute, as seen from inside). Default C(/).
    type: str
  state:
    description:
      - V(started) makes sure the container runs with this spec; it starts or restarts it only when needed.
      - V(stopped) stops it and keeps its state directory (and its log).
      - V(restarted) always stops (if running) and starts it again.
      - V(absent) stops it and removes its state directory. O(rootfs) is never touched.
    type: str
    choices: [started, stopped, restarted, absent]
    default: started
  stop_timeout:
    description:
      - Seconds to wait after C(SIGTERM) before sending C(SIGKILL).
      - A process that is PID 1 of its own PID namespace ignores C(SIGTERM) unless it installed a handler for it
        (C(tail -f /dev/null) does not), so such a container is stopped by C(SIGKILL) after this time.
    type: int
    default: 10
  state_dir:
    description:
      - The container's own state directory, holding C(state.json) and C(container.log).
      - Default C(/run/unboxed/containers/NAME). C(/run) is a tmpfs, so the record is gone after a reboot, as are the
        container's processes.
      - O(state=absent) removes only the files the module created there, and the directory if it is then empty.
      - Refused when it is, or leads through a symbolic link to, a system directory (C(/media), C(/etc)...), decided
        the same way for every path in this collection.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another run that works on the same container (same O(name)) to finish, before failing
        with a message naming that run. V(0) fails at once when another run holds the lock.
    type: int
    default: 60
  preset:
    description:
      - V(docker) starts the container as C(docker run) with no flags would - O(capabilities=docker),
        O(seccomp=docker), O(root_method=pivot_root) and O(no_new_privs=false). An option set explicitly overrides the
        preset's value, except O(root_method=chroot), which is refused (confinement needs pivot_root).
      - V(none) changes nothing - every capability, no seccomp filter (the talk's container).
    type: str
    choices: [none, docker]
    default: none
  capabilities:
    description:
      - The capabilities root inside the container keeps; every other is removed from its bounding, permitted,
        effective, inheritable and ambient sets, so that no program it executes gets it back.
      - V(all) keeps every capability (the talk's container; the default without O(preset)). V(docker) is Docker's
        default set of 14 (C(CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
        SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP), C(CapEff 00000000a80425fb)); V(none) or V([]) keeps none.
      - Names from capabilities(7), with or without C(CAP_) and in any case (V(net_admin), V(CAP_NET_ADMIN)); with
        V(docker) they are added to Docker's set, as C(docker run --cap-add) does (V([docker, NET_ADMIN])).
      - Anything but V(all) needs O(root_method=pivot_root).
    type: list
    elements: str
  no_new_privs:
    description:
      - Set C(no_new_privs) (C(prctl(PR_SET_NO_NEW_PRIVS))) for the container's PID 1 and everything it starts;
        set-user-ID programs and file capabilities no longer raise privileges. C(NoNewPrivs 1) in C(/proc/1/status).
      - Docker leaves it off unless C(--security-opt no-new-privileges) is given; so does O(preset=docker).
      - V(true) needs O(root_method=pivot_root). Not set means V(false).
    type: bool
  seccomp:
    description:
      - V(unconfined) (the default without O(preset)) applies no seccomp filter.
      - V(docker) applies Docker's default profile (moby C(profiles/seccomp/default.json), shipped with the collection) -
        an allow-list that fails everything else with C(EPERM), with argument filters for C(clone) and C(personality)
        and the parts that depend on the container's capabilities (e.g. C(mount), C(unshare) only with
        C(CAP_SYS_ADMIN)), exactly as Docker reduces it for this host's architecture and kernel.
      - An absolute path on the managed host to a profile in Docker's JSON format (C(defaultAction),
        C(defaultErrnoRet), C(architectures) or C(archMap), C(syscalls) with C(names), C(action), C(errnoRet), C(args)
        and C(includes)/C(excludes) by C(caps), C(arches) and C(minKernel)). A profile that is not JSON, names an unknown
        action or operator, or a system call libseccomp knows on no architecture is refused before anything starts.
        A call Docker's own profile lists that this host's libseccomp is too old to know is skipped, as runc does.
        The profile is read when the container starts; edit it and use O(state=restarted) to apply the new version.
      - Anything but V(unconfined) needs O(root_method=pivot_root).
    type: str
  memory:
    description:
      - Memory limit, in Docker's units (V(64m), V(1g), V(512k), V(1048576); binary, case-insensitive), at least 6m.
        cgroup v2 C(memory.max), v1 C(memory.limit_in_bytes); swap as Docker's default (as much again).
      - A process that goes beyond it is killed by the kernel's OOM killer inside the container (RV(usage.oom_kills)).
    type: raw
  pids_limit:
    description:
      - The most processes (and threads) the container may have at once (C(pids.max)), as C(docker run --pids-limit).
    type: int
  cpus:
    description:
      - CPU quota as C(docker run --cpus) (V(0.5) - half a CPU), a quota of C(cpus * 100000) microseconds per period of
        100000 (v2 C(cpu.max), v1 C(cpu.cfs_quota_us)). At most the CPUs available to the module's process.
    type: raw
  cpu_shares:
    description:
      - Relative CPU weight as C(docker run --cpu-shares), 2 to 262144 (1024 is the default weight). v1 C(cpu.shares),
        v2 C(cpu.weight), converted as runc does.
    type: int
  cgroup_parent:
    description:
      - The cgroup below which the container's cgroup C(unboxed-NAME) is made, as an absolute cgroup path as
        C(/proc/self/cgroup) writes them (V(/unboxed)), the same in every hierarchy; missing directories are created.
      - Default - the cgroup of the process that runs the module, per hierarchy, so that a container never escapes the
        limits its starter runs under. Over SSH on a systemd host that is the login session's scope, which holds
        processes; cgroup v2 allows no cgroup with limits below it ("no internal processes"), and the module refuses,
        naming this option. Name a parent of the container's own there, as Docker's cgroupfs driver uses C(/docker) -
        the C(cgroups) role of this collection uses V(/unboxed).
      - Only used when the container gets cgroups, that is with O(memory), O(pids_limit), O(cpus), O(cpu_shares) or
        O(cgroup_parent) itself (then it is placed there without limits).
    type: str
  userns_remap:
    description:
      - Like dockerd's C(--userns-remap) - the name of a user whose B(first) range in C(/etc/subuid) and C(/etc/subgid)
        the container's root maps to - container uid and gid C(0) to C(count - 1) are host C(start) to
        C(start + count - 1). C(id -u) inside says 0; C(ps) on the seat shows the mapped uid; a root-only file of the
        seat stays closed to it.
      - Implies C(user) in O(namespaces) (created first, owning the others). The mapping is made by C(newuidmap) and
        C(newgidmap) (package C(uidmap)), called by C(unshare --map-users --map-groups); C(unshare) runs as that user
        (C(setpriv --reuid --regid)) so that they grant exactly that user's ranges, and then becomes root of the new
        namespace (C(--setuid=0 --setgid=0)). RV(shell_command) is the whole line, as a student types it.
      - The root file system must already belong to the mapped root (C(start:start), e.g. the remapped layers of the
        role C(userns)) and be reachable by it, as the host paths of O(volumes) must be.
      - A missing user, range, file or program is an error naming this option; nothing is changed. Part of the spec
        (a change restarts the container).
    type: str
  userns_remap_root:
    description:
      - With O(userns_remap) and O(overlay), where the shifted copies of O(overlay.lowerdirs) are kept - below
        C(ROOT/UID.GID/), as Docker keeps a remapped daemon's layers in C(/var/lib/docker/UID.GID/) - as
        O(unboxed.lab.layer_remap#module:root), with the code of M(unboxed.lab.layer_remap).
      - Before the overlay is mounted, each lower layer is copied shifted into the remap user's range when its copy is
        missing or out of date (a rerun finds them and copies nothing), and O(overlay.upperdir), O(overlay.workdir) and
        O(rootfs) - with their common parent when it holds nothing else - are made (or given) to the mapped root
        (C(UID:GID), 0755); the overlay then mounts the copies, and the container starts on them. Check mode predicts
        the copies, the mount and the start.
      - The copies belong to the remap user, shared by its containers, and are never removed by this module (not by
        O(state=absent) either; M(unboxed.lab.layer_remap) with O(unboxed.lab.layer_remap#module:state=absent) removes
        them).
    type: path
    default: /var/lib/unboxed/remap
  userns_remap_create:
    description:
      - With O(userns_remap) and O(overlay), make the remap user and its subordinate ranges when missing, as
        C(dockerd --userns-remap=default) makes C(dockremap) - as O(unboxed.lab.layer_remap#module:create_user).
        V(false) - a missing user or range is an error naming O(userns_remap) (a warning in check mode).
    type: bool
    default: false
  volumes:
    description:
      - Bind mounts, in Docker's C(-v HOST:CONTAINER[:ro]) syntax (absolute paths, C(:ro) read-only, C(:rw) the default).
      - They are made in the container's own mount namespace after C(unshare) made it and before the root changes, so
        that nothing appears on the seat's mount table. With O(userns_remap) they are made by the mapped root, which
        looks the host path up as its uid on the seat - a path below a directory closed to others cannot be given.
      - A missing CONTAINER path is created in O(rootfs) (an empty directory, or an empty file for a file), owned by
        the container's root, when its parent is a real directory there; a path through a symbolic link, or whose
        parent is missing, is an error naming this option. Host paths are checked like every path option. Part of the
        spec.
    type: list
    elements: str
    default: []
  adopt:
    description:
      - With O(state=started) and no running container recorded, adopt a matching container started by hand on
        O(rootfs), and replace a wrong try at it (see the description for what is compared); with O(state=absent) and
        O(rootfs), stop the containers started by hand there too.
      - V(false) starts the container beside whatever runs on O(rootfs), as earlier versions did.
    type: bool
    default: true
  network:
    description:
      - Attach the container to a bridge in this same module run, as C(docker run --network bridge -p 8080:80) does -
        the bridge, a veth pair (its other end the container's C(eth0)), an address, a default route, IP forwarding, NAT
        and the O(network.published_ports) - with the code of M(unboxed.lab.container_network), which does the same for
        a container that runs already (C(docker network connect)). Network mode C(bridge); without this option a
        container with C(net) in O(namespaces) has only C(lo) (mode C(none)).
      - Needs C(net) in O(namespaces).
      - With O(state=started) or O(state=restarted), the container is attached once it runs; a rerun finds it running and
        attached and changes nothing. A container that was restarted (a new network namespace) is plumbed again, with
        the same address.
      - With O(state=stopped) or O(state=absent), its address, veth pair and published ports are freed, as Docker frees
        them when a container goes; the bridge and the other containers stay (M(unboxed.lab.container_network) with
        O(unboxed.lab.container_network#module:state=absent) and no name removes the bridge).
      - An attachment that fails (a subnet that overlaps the seat's routes, a host port another container publishes,
        nftables not installed - the message then says C(install nftables)) fails the task with the attachment's
        message, which says that the container runs; the next run attaches it.
    type: dict
    suboptions:
      bridge:
        description:
          - The bridge, Docker's C(docker0), as O(unboxed.lab.container_network#module:bridge) - made when missing, with
            the first address of O(network.subnet).
        type: str
        default: unboxed0
      subnet:
        description: The bridge's IPv4 subnet, as O(unboxed.lab.container_network#module:subnet).
        type: str
        default: 10.47.0.0/24
      address:
        description:
          - The container's address in the subnet, as O(unboxed.lab.container_network#module:address). Omitted, it
            keeps the address it has on this bridge, or gets the lowest free one.
        type: str
      published_ports:
        description:
          - Ports published on the seat in C(docker run -p) syntax (C([8080:80])), as
            O(unboxed.lab.container_network#module:published_ports).
        type: list
        elements: str
        default: []
      network_dir:
        description:
          - Where the records of the bridges are kept, as O(unboxed.lab.container_network#module:network_dir) - the same
            directory for every container of a bridge.
        type: path
        default: /var/lib/unboxed/networks
  overlay:
    description:
      - The container's layers, mounted as an overlay at O(rootfs) in this same module run before the container starts,
        as C(docker run) mounts the image's layers and the container's own writable layer - with the code of
        M(unboxed.lab.overlay_mount) (without its fstab - the overlay lives as long as the container is up).
      - Needs O(rootfs), the mount point (the overlay's merged directory).
      - With O(state=started) or O(state=restarted), the overlay is mounted first (a mount point with other layers is
        mounted again, which is refused while a process uses them), then the container is started; a rerun finds the
        overlay mounted and the container running and changes nothing. Check mode predicts both.
      - With O(state=stopped) or O(state=absent), the container is stopped first, then its overlay is unmounted - as
        Docker unmounts a container's layers when it stops (C(docker start) mounts them again). Only this container's
        overlay is unmounted (the same O(overlay.upperdir), or without one the same lower layers); another one at
        O(rootfs) is left mounted, with a warning. The upper and work directories and the layers are never removed.
      - A O(rootfs) that is a mount point of another file system, or layers another live overlay uses, are refused with
        M(unboxed.lab.overlay_mount)'s message naming the option (C(overlay.upperdir)); nothing is started.
    type: dict
    suboptions:
      lowerdirs:
        description:
          - The image's layers, top layer first, as O(unboxed.lab.overlay_mount#module:lowerdirs).
          - Needed to mount (O(state=started), O(state=restarted)); with a single lower layer, O(overlay.upperdir) is
            needed too.
        type: list
        elements: path
      upperdir:
        description:
          - The container's own writable layer, Docker's per-container rw layer, as
            O(unboxed.lab.overlay_mount#module:upperdir). Never removed by this module - it is the container's data.
        type: path
      workdir:
        description:
          - overlayfs' work directory, empty, on the file system of O(overlay.upperdir), as
            O(unboxed.lab.overlay_mount#module:workdir).
        type: path
      options:
        description: Further mount options, one per item, as O(unboxed.lab.overlay_mount#module:options).
        type: list
        elements: str
        default: []
      create_dirs:
        description: Create missing layer directories and the mount point, as O(unboxed.lab.overlay_mount#module:create_dirs).
        type: bool
        default: true
  containers:
    description:
      - Several containers in one module run, as C(docker compose up) starts the services of a compose file - each item
        takes the options of one container (every option above but O(lock_timeout), which is the module's), with the
        same defaults. Not with O(name) nor any other option of one container.
      - Every item is checked before anything changes - the request, then each container's record, root file system
        and processes, with every lock taken (in the order of the names) - and each problem names the item and its
        option (C(containers[1].rootfs)). Then each is brought to its state, in the order of the list.
      - The result lists each container's result in RV(containers), in order; the task is changed when any is. A
        failure says which item failed and what the items before it did (they stay as they are now).
    type: list
    elements: dict
    suboptions:
      name:
        description: As O(name) - every item needs one, and each its own.
        type: str
        required: true
      rootfs:
        description: As O(rootfs).
        type: path
      command:
        description: As O(command).
        type: list
        elements: str
      namespaces:
        description: As O(namespaces).
        type: list
        elements: str
        choices: [pid, net, mount, uts, ipc, user, cgroup]
        default: [pid, net, mount]
      hostname:
        description: As O(hostname).
        type: str
      mount_proc:
        description: As O(mount_proc).
        type: bool
      root_method:
        description: As O(root_method).
        type: str
        choices: [chroot, pivot_root]
        default: pivot_root
      env:
        description: As O(env).
        type: dict
        default: {}
      workdir:
        description: As O(workdir).
        type: str
      state:
        description: As O(state).
        type: str
        choices: [started, stopped, restarted, absent]
        default: started
      stop_timeout:
        description: As O(stop_timeout).
        type: int
        default: 10
      state_dir:
        description: As O(state_dir).
        type: path
      preset:
        description: As O(preset).
        type: str
        choices: [none, docker]
        default: none
      capabilities:
        description: As O(capabilities).
        type: list
        elements: str
      no_new_privs:
        description: As O(no_new_privs).
        type: bool
      seccomp:
        description: As O(seccomp).
        type: str
      memory:
        description: As O(memory).
        type: raw
      pids_limit:
        description: As O(pids_limit).
        type: int
      cpus:
        description: As O(cpus).
        type: raw
      cpu_shares:
        description: As O(cpu_shares).
        type: int
      cgroup_parent:
        description: As O(cgroup_parent).
        type: str
      adopt:
        description: As O(adopt).
        type: bool
        default: true
      userns_remap:
        description: As O(userns_remap).
        type: str
      userns_remap_root:
        description: As O(userns_remap_root).
        type: path
        default: /var/lib/unboxed/remap
      userns_remap_create:
        description: As O(userns_remap_create).
        type: bool
        default: false
      volumes:
        description: As O(volumes).
        type: list
        elements: str
        default: []
      network:
        description: As O(network).
        type: dict
        suboptions:
          bridge:
            description:
              - The bridge, Docker's C(docker0), as O(unboxed.lab.container_network#module:bridge) - made when missing, with
                the first address of O(network.subnet).
            type: str
            default: unboxed0
          subnet:
            description: The bridge's IPv4 subnet, as O(unboxed.lab.container_network#module:subnet).
            type: str
            default: 10.47.0.0/24
          address:
            description:
              - The container's address in the subnet, as O(unboxed.lab.container_network#module:address). Omitted, it
                keeps the address it has on this bridge, or gets the lowest free one.
            type: str
          published_ports:
            description:
              - Ports published on the seat in C(docker run -p) syntax (C([8080:80])), as
                O(unboxed.lab.container_network#module:published_ports).
            type: list
            elements: str
            default: []
          network_dir:
            description:
              - Where the records of the bridges are kept, as O(unboxed.lab.container_network#module:network_dir) - the same
                directory for every container of a bridge.
            type: path
            default: /var/lib/unboxed/networks
      overlay:
        description: As O(overlay).
        type: dict
        suboptions:
          lowerdirs:
            description:
              - The image's layers, top layer first, as O(unboxed.lab.overlay_mount#module:lowerdirs).
              - Needed to mount (O(state=started), O(state=restarted)); with a single lower layer, O(containers[].overlay.upperdir) is
                needed too.
            type: list
            elements: path
          upperdir:
            description:
              - The container's own writable layer, Docker's per-container rw layer, as
                O(unboxed.lab.overlay_mount#module:upperdir). Never removed by this module - it is the container's data.
            type: path
          workdir:
            description:
              - overlayfs' work directory, empty, on the file system of O(containers[].overlay.upperdir), as
                O(unboxed.lab.overlay_mount#module:workdir).
            type: path
          options:
            description: Further mount options, one per item, as O(unboxed.lab.overlay_mount#module:options).
            type: list
            elements: str
            default: []
          create_dirs:
            description: Create missing layer directories and the mount point, as O(unboxed.lab.overlay_mount#module:create_dirs).
            type: bool
            default: true
notes:
  - Requires root. Run the task with C(become=true).
  - Without C(pid) in O(namespaces), stopping signals only the command's process; processes it started may keep
    running.
  - "When a container is killed with C(SIGKILL), C(unshare) from util-linux 2.38 (Debian 12) writes
    C(unshare: sigprocmask unblock failed: Invalid argument) to the log as it exits - it cannot re-raise
    C(SIGKILL) on itself. It is harmless."
  - The returned RV(shell_command) is the equivalent shell command, as typed in the talk, for reading and copying.
    It is returned under this name because O(command) is already an option.
  - This machine's kind of host (cgroup v1 controllers beside a v2 hierarchy without them, "hybrid") and Debian 12's
    (cgroup v2 only) are both handled; C(docs/security.md) says what the tests show on which.
seealso:
  - module: unboxed.lab.overlay_mount
  - module: unboxed.lab.chroot_exec
  - name: unshare(1)
    description: The util-linux program that creates the namespaces.
    link: https://man7.org/linux/man-pages/man1/unshare.1.html
  - name: Docker's default seccomp profile
    description: The profile O(seccomp=docker) applies, and how Docker reads a profile.
    link: https://docs.docker.com/engine/security/seccomp/
  - name: capabilities(7)
    description: The capability sets O(capabilities) reduces.
    link: https://man7.org/linux/man-pages/man7/capabilities.7.html
  - name: pivot_root(2)
    description: Why pivot_root and not chroot, and the pivot_root(".", ".") idiom.
    link: https://man7.org/linux/man-pages/man2/pivot_root.2.html
"""

EXAMPLES = r"""
- name: Run the talk's container on the overlay (PID, network and mount namespaces, chroot as typed in the talk)
  unboxed.lab.ns_container:
    name: talk
    rootfs: /overlay/merged
    command: [tail, -f, /dev/null]
    root_method: chroot
  become: true

- name: A container with its own hostname, entered with pivot_root (the default)
  unboxed.lab.ns_container:
    name: web
    rootfs: /overlay/merged
    command: [sh, -c, "while true; do sleep 1; done"]
    namespaces: [pid, net, mount, uts, ipc]
    hostname: web01
    env:
      GREETING: hello
  become: true
  register: web

- name: Show how to type it by hand
  ansible.builtin.debug:
    msg: "{{ web.shell_command }}"

- name: The same container as Docker would start it by default, with limits a student can watch bite
  unboxed.lab.ns_container:
    name: confined
    rootfs: /overlay/merged
    command: [tail, -f, /dev/null]
    preset: docker
    memory: 64m
    pids_limit: 64
    cpus: 0.5
  become: true
  register: confined

- name: Show Docker's CapEff mask, the cgroups and how to make them by hand
  ansible.builtin.debug:
    msg:
      - "CapEff {{ confined.confinement.cap_eff }} (Docker's is 00000000a80425fb)"
      - "{{ confined.setup_commands }}"
      - "memory in use: {{ confined.usage.memory_current }}"

- name: Docker's capabilities plus NET_ADMIN, no_new_privs, and a profile of our own that forbids mkdir
  unboxed.lab.ns_container:
    name: strict
    rootfs: /overlay/merged
    command: [tail, -f, /dev/null]
    capabilities: [docker, NET_ADMIN]
    no_new_privs: true
    seccomp: /etc/unboxed/no-mkdir.json
  become: true

- name: Adopt the talk's container if a student started it by hand (the same PID afterwards), else start it
  unboxed.lab.ns_container:
    name: talk
    rootfs: /overlay/merged
    command: [tail, -f, /dev/null]
    root_method: chroot
  become: true
  register: talk

- name: Say what was replaced (a container without --net, say)
  ansible.builtin.debug:
    msg: "{{ talk.action }}; replaced {{ talk.replaced | map(attribute='pid') | list }}: {{ talk.replaced | map(attribute='why') | list }}"

- name: Stop the talk's container and any started by hand on its root (a reset)
  unboxed.lab.ns_container:
    name: talk
    rootfs: /overlay/merged
    state: absent
  become: true

- name: Root inside is nobody outside - the remap user's first subordinate range, as dockerd --userns-remap
  unboxed.lab.ns_container:
    name: remapped
    rootfs: /var/lib/unboxed/remap/merged
    command: [tail, -f, /dev/null]
    root_method: chroot
    userns_remap: unboxed-remap
    volumes:
      - /srv/class/notes:/notes:ro
  become: true
  register: remapped

- name: Show the mapping
  ansible.builtin.debug:
    msg: "uid_map {{ remapped.userns.uid_map }}; by hand: {{ remapped.shell_command }}"

- name: docker run -d --name web --network bridge -p 8080:80 - started and attached in one module run
  unboxed.lab.ns_container:
    name: web
    rootfs: /overlay/merged
    command: [sh, -c, "while true; do sleep 1; done"]
    namespaces: [pid, net, mount, uts, ipc]
    network:
      bridge: unboxed0
      published_ports: ['8080:80']
  become: true
  register: web_on_bridge

- name: Show its address and what to type
  ansible.builtin.debug:
    msg: "{{ [web_on_bridge.network.address] + web_on_bridge.commands }}"

- name: Two containers in one module run, as docker compose up - every item checked before the first starts
  unboxed.lab.ns_container:
    containers:
      - name: web
        rootfs: /overlay/merged
        command: [sh, -c, "while true; do sleep 1; done"]
        namespaces: [pid, net, mount, uts, ipc]
        hostname: web
      - name: client
        rootfs: /overlay/merged
        command: [tail, -f, /dev/null]
  become: true
  register: services

- name: Show what each did
  ansible.builtin.debug:
    msg: "{{ services.containers | map(attribute='msg') | list }}"

- name: docker run on the image's layers - the container's overlay mounted at its rootfs, then started, in one module run
  unboxed.lab.ns_container:
    name: talk
    rootfs: /overlay/merged
    command: [tail, -f, /dev/null]
    overlay:
      lowerdirs: [/overlay/layer2, /overlay/layer1]
      upperdir: /overlay/upper
      workdir: /overlay/work
  become: true

- name: docker rm -f talk - stopped, then its overlay unmounted (upper and work, its data, stay)
  unboxed.lab.ns_container:
    name: talk
    rootfs: /overlay/merged
    overlay:
      upperdir: /overlay/upper
      workdir: /overlay/work
    state: absent
  become: true

- name: docker run on a --userns-remap daemon - layers shifted, overlay mounted, container started, in one module run
  unboxed.lab.ns_container:
    name: remapped
    rootfs: /overlay/userns/merged
    command: [tail, -f, /dev/null]
    namespaces: [pid, mount]
    userns_remap: dockremap
    userns_remap_create: true
    overlay:
      lowerdirs: [/overlay/lower2-app, /overlay/lower1-base]
      upperdir: /overlay/userns/upper
      workdir: /overlay/userns/work
  become: true

- name: Stop it but keep its log
  unboxed.lab.ns_container:
    name: web
    state: stopped
    stop_timeout: 5
  become: true

- name: Remove it (the root file system stays as it is)
  unboxed.lab.ns_container:
    name: web
    state: absent
  become: true
"""

RETURN = r"""
name:
  description: The container's name.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: talk
state:
  description:
    - The container's state after the task. V(started) - its process runs; V(stopped) - its state directory is recorded
      but no process runs; V(absent) - nothing is recorded.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: started
pid:
  description: PID (as seen from the host) of the container's PID 1, or null when it does not run (also in check mode before a start).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: int
  sample: 48211
started_at:
  description: When the container's process started (UTC, ISO 8601), from its start time in C(/proc/PID/stat).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: '2026-11-28T23:40:01Z'
namespaces:
  description:
    - For each namespace type, the container's namespace inode, the host's (the module's own process), and whether
      they differ. Empty when no container process runs.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: dict
  sample:
    pid: {inode: 4026532301, host_inode: 4026531836, isolated: true}
    net: {inode: 4026532304, host_inode: 4026531840, isolated: true}
    mount: {inode: 4026532300, host_inode: 4026531841, isolated: true}
    uts: {inode: 4026531838, host_inode: 4026531838, isolated: false}
    ipc: {inode: 4026531839, host_inode: 4026531839, isolated: false}
    user: {inode: 4026531837, host_inode: 4026531837, isolated: false}
    cgroup: {inode: 4026531835, host_inode: 4026531835, isolated: false}
rootfs:
  description: The container's root file system - as requested, else as recorded (with O(state=absent), of the container just removed).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: /overlay/merged
command:
  description: The container's command as an argument list, from the request or the record like RV(rootfs).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: list
  elements: str
  sample: [tail, -f, /dev/null]
hostname:
  description: The hostname set inside the container, or null.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: web01
root_method:
  description: How the root directory was set (V(chroot) or V(pivot_root)).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: pivot_root
log_path:
  description: The file that receives the container's standard output and error, and the module's start and stop lines.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: /run/unboxed/containers/talk/container.log
state_dir:
  description: The container's state directory.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: /run/unboxed/containers/talk
shell_command:
  description:
    - The equivalent shell command, as typed in the talk. Shown with program names as found in C(PATH); the module runs
      the same argument list with absolute paths.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: unshare --fork --pid --net --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null
msg:
  description: What the task did, or would do in check mode, and why; with O(containers), each container's in turn.
  returned: always
  type: str
  sample: "Restarted: command, env changed."
cgroup:
  description:
    - The container's cgroups - in use while it runs, else those a start would make - or null when it has none (no limit
      asked for). C(layout) is the host's (V(unified) - v2 only, V(hybrid) - v1 controllers beside v2, V(legacy)); each
      of C(hierarchies) has its version, its path (as C(/proc/PID/cgroup) shows it), its directory and its controllers.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: dict
  sample:
    layout: hybrid
    cgroup_parent: null
    hierarchies:
      - {hierarchy: pids, version: 1, path: /unboxed-web, directory: /sys/fs/cgroup/pids/unboxed-web, controllers: [pids]}
      - {hierarchy: unified, version: 2, path: /unboxed-web, directory: /sys/fs/cgroup/unified/unboxed-web, controllers: []}
    limits: {memory: null, pids_limit: 64, cpus: null, cpu_quota_us: null, cpu_period_us: null, cpu_shares: null}
usage:
  description:
    - What the running container's cgroups count - memory in use and its peak (bytes), processes, OOM kills, CPU
      periods throttled and the time throttled. Each is null where this host cannot tell (no such controller, or the
      container is not running or has no cgroups).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: dict
  contains:
    memory_current:
      description: Memory in use by the container's processes, in bytes.
      type: int
    memory_peak:
      description: The most memory they used at once, in bytes.
      type: int
    pids_current:
      description: Processes (and threads) in the container's cgroup, C(unshare) included.
      type: int
    oom_kills:
      description: Processes the kernel's OOM killer killed in the container's cgroup because of O(memory).
      type: int
    cpu_nr_throttled:
      description: Periods in which the container used up its O(cpus) quota and had to wait.
      type: int
    cpu_throttled_usec:
      description: The time it waited so, in microseconds.
      type: int
  sample: {memory_current: 851968, memory_peak: 7073792, pids_current: 2, oom_kills: 0, cpu_nr_throttled: null,
           cpu_throttled_usec: null}
setup_commands:
  description:
    - The shell commands that make the container's cgroups by hand before the launch, as a student types them - the
      directories, the limits, then C(echo $$ > .../cgroup.procs) so that what the shell starts next is inside. Empty
      when the container has no cgroups.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: list
  elements: str
  sample:
    - mkdir /sys/fs/cgroup/pids/unboxed-web
    - echo 64 > /sys/fs/cgroup/pids/unboxed-web/pids.max
    - echo $$ > /sys/fs/cgroup/pids/unboxed-web/cgroup.procs
confinement:
  description:
    - The container's confinement. C(capabilities) - the capabilities it keeps (sorted by number; every one the kernel
      knows when nothing is dropped); C(cap_eff) - the effective set of its PID 1, read from C(/proc/PID/status)
      (null when it does not run); C(no_new_privs) and C(seccomp) - as asked; C(seccomp_mode) - the C(Seccomp) line of
      C(/proc/PID/status) (2 - a filter is loaded, 0 - none; null when it does not run).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: dict
  contains:
    capabilities:
      description: The capabilities it keeps, by name.
      type: list
      elements: str
    cap_eff:
      description: The effective capability set of its PID 1 as C(/proc/PID/status) shows it (16 hex digits).
      type: str
    no_new_privs:
      description: Whether C(no_new_privs) was asked for.
      type: bool
    seccomp:
      description: The seccomp profile asked for (V(unconfined), V(docker) or a path).
      type: str
    seccomp_mode:
      description: The C(Seccomp) line of C(/proc/PID/status) of its PID 1.
      type: int
  sample:
    capabilities: [CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP,
                   CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_CHROOT, CAP_MKNOD, CAP_AUDIT_WRITE, CAP_SETFCAP]
    cap_eff: 00000000a80425fb
    no_new_privs: false
    seccomp: docker
    seccomp_mode: 2
action:
  description:
    - What the task did (or would do in check mode) - V(started), V(restarted), V(adopted) (a container started by hand
      is recorded as this one), V(replaced) (started, after stopping a wrong one started by hand), V(tracked) (found
      again after an interrupted run), V(stopped), V(removed), V(cleaned) - or null when nothing changed.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: str
  sample: adopted
userns:
  description:
    - The running container's ID mappings as C(/proc/PID/uid_map) and C(gid_map) show them (padding removed), or null
      when it has no user namespace of its own (or does not run).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: dict
  contains:
    uid_map:
      description: C(INSIDE OUTSIDE COUNT) - container uid 0 is host uid OUTSIDE.
      type: str
    gid_map:
      description: The same for groups.
      type: str
  sample: {uid_map: 0 100000 65536, gid_map: 0 100000 65536}
replaced:
  description:
    - The containers started by hand on O(rootfs) that were stopped (in check mode - would be) to start or adopt this
      one - their PID, command line, and why, the first difference from the spec in words a student understands.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: list
  elements: dict
  sample: [{pid: 4242, command: [tail, -f, /dev/null], why: "shares the seat's network namespace (no --net)"}]
stopped_by_hand:
  description: With O(state=absent) and O(rootfs), the containers started by hand there that were stopped (or would be), as in RV(replaced).
  returned: without O(containers) (with it, in each item of RV(containers))
  type: list
  elements: dict
  sample: [{pid: 4242, command: [tail, -f, /dev/null], why: started by hand on /overlay/merged, stopped with state=absent}]
stop_signal:
  description: The signal that ended the container when this task stopped it - V(SIGKILL) shows that PID 1 ignored V(SIGTERM).
  returned: when the task stopped a running container (not in check mode)
  type: str
  sample: SIGKILL
network:
  description:
    - With O(network), the attachment's result - as M(unboxed.lab.container_network) returns it - after the container's
      start (or stop).
  returned: when O(network) is given (with O(containers), in the items that have it)
  type: dict
  contains:
    changed:
      description: Whether the attachment changed anything.
      type: bool
    msg:
      description: What it did, in words (also at the end of RV(msg)).
      type: str
    address:
      description: The container's address with its prefix length; null once detached.
      type: str
    bridge:
      description: The bridge.
      type: str
    gateway:
      description: The bridge's address, the container's default gateway.
      type: str
    subnet:
      description: The bridge's subnet.
      type: str
    ports:
      description: The published ports, normalized (C(8080:80/tcp)).
      type: list
      elements: str
    host_veth:
      description: The host end of the container's veth pair.
      type: str
    pid:
      description: The PID whose network namespace was plumbed; null in check mode before a start.
      type: int
    commands:
      description: The shell commands of the attachment (when nothing changes, the whole plumbing).
      type: list
      elements: str
  sample:
    changed: true
    msg: Attached web to unboxed0 as 10.47.0.2/24, publishing 8080:80/tcp.
    address: 10.47.0.2/24
    bridge: unboxed0
    gateway: 10.47.0.1
    subnet: 10.47.0.0/24
    ports: [8080:80/tcp]
    host_veth: vweb-1a2b3c
    pid: 4242
    commands: [ip link add name vweb-1a2b3c type veth peer name eth0 netns 4242]
overlay:
  description:
    - With O(overlay), the overlay's result - as M(unboxed.lab.overlay_mount) returns it - mounted before the
      container's start, or unmounted after its stop.
    - Null with O(state=stopped) or O(state=absent) when the overlay at O(rootfs) is not this container's (left mounted).
  returned: when O(overlay) is given (with O(containers), in the items that have it)
  type: dict
  contains:
    changed:
      description: Whether the overlay was mounted, mounted again or unmounted.
      type: bool
    path:
      description: The mount point, O(rootfs).
      type: str
    lowerdirs:
      description: The lower layers, top first.
      type: list
      elements: str
    upperdir:
      description: The writable layer.
      type: str
    workdir:
      description: The work directory.
      type: str
    options:
      description: The mount options asked for.
      type: list
      elements: str
    mounted:
      description: Whether the overlay is mounted after the task.
      type: bool
    actions:
      description: What was done (or would be in check mode), in words; empty when nothing was.
      type: list
      elements: str
    command:
      description: The equivalent C(mount -t overlay) command (C(umount) when unmounting).
      type: str
    current:
      description: The overlay that was mounted at O(rootfs) before the task, or null.
      type: dict
  sample:
    changed: true
    path: /overlay/merged
    lowerdirs: [/overlay/layer2, /overlay/layer1]
    upperdir: /overlay/upper
    workdir: /overlay/work
    options: []
    mounted: true
    actions: [mount]
    command: mount -t overlay overlay -o lowerdir=/overlay/layer2:/overlay/layer1,upperdir=/overlay/upper,workdir=/overlay/work /overlay/merged
    current: null
remap_layers:
  description:
    - With O(userns_remap) and O(overlay), the shifted layers' result - as M(unboxed.lab.layer_remap) returns it - made
      before the overlay is mounted.
  returned: with O(userns_remap) and O(overlay) and O(state=started) or O(state=restarted) (with O(containers), in the items that have them)
  type: dict
  contains:
    changed:
      description: Whether a copy, a directory or the account was made or updated.
      type: bool
    uid_start:
      description: The mapped root's uid on the seat (the first of the range).
      type: int
    gid_start:
      description: The mapped root's gid on the seat.
      type: int
    count:
      description: The size of the range.
      type: int
    copies:
      description: One per lower layer, in the order of O(overlay.lowerdirs) - C(dest) is the shifted copy the overlay mounts.
      type: list
      elements: dict
    directories:
      description: The container's directories given to the mapped root, each with its C(action) (create, chown, none).
      type: list
      elements: dict
    account:
      description: With O(userns_remap_create), the account as M(unboxed.lab.remap_account) returns it; else null.
      type: dict
    newuidmap:
      description: Whether newuidmap and newgidmap are installed.
      type: bool
    commands:
      description: The shell commands of the copies, the directories and the account (first in RV(commands)).
      type: list
      elements: str
  sample:
    changed: false
    uid_start: 165536
    gid_start: 165536
    count: 65536
    copies: [{src: /overlay/lower1-base, dest: /var/lib/unboxed/remap/165536.165536/lower1-base}]
    directories: [{path: /overlay/userns/upper, action: none}]
    account: null
    newuidmap: true
    commands: []
commands:
  description:
    - The whole container by hand, in order - with O(userns_remap) and O(overlay) the shifted layers' commands
      (RV(remap_layers.commands)), with O(overlay) the overlay's mount (RV(overlay.command)), then
      RV(setup_commands), RV(shell_command), then with O(network) the attachment's commands (RV(network.commands)),
      and with O(overlay) the overlay's unmount when a stop unmounted it.
  returned: without O(containers) (with it, in each item of RV(containers))
  type: list
  elements: str
  sample:
    - unshare --fork --pid --net --mount --uts --ipc --mount-proc=/overlay/merged/proc chroot /overlay/merged tail -f /dev/null
    - ip link add name vweb-1a2b3c type veth peer name eth0 netns 4242
containers:
  description:
    - With O(containers), the result of each container, in the order of the list - each a dictionary with the keys a
      task of one container returns (RV(name), RV(state), RV(pid), RV(msg), RV(action), RV(shell_command)...) and
      C(changed). C(--diff) shows each container's diff in turn.
    - When an item fails, the results of the items before it, then the failed item's (C(failed), C(msg) and what is
      known of it); the items after it were not touched.
  returned: with O(containers)
  type: list
  elements: dict
  sample:
    - {name: web, changed: true, state: started, pid: 4242, action: started, msg: "Started: no container was recorded."}
    - {name: client, changed: false, state: started, pid: 4250, action: null,
       msg: "Nothing to do: it runs with this spec (PID 4250)."}
failed_index:
  description: With O(containers), the place in the list of the container that failed.
  returned: when an item of O(containers) failed
  type: int
  sample: 1
"""

import contextlib
import copy
import os
import pwd
import signal
import socket
import sys
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import bridge_network
from ansible_collections.unboxed.lab.plugins.module_utils import cgroups
from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import environ
from ansible_collections.unboxed.lab.plugins.module_utils import idmap
from ansible_collections.unboxed.lab.plugins.module_utils import layer_shift
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import namespaces as ns_utils
from ansible_collections.unboxed.lab.plugins.module_utils import netdev
from ansible_collections.unboxed.lab.plugins.module_utils import overlay as overlay_utils
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import process

STATES = ('started', 'stopped', 'restarted', 'absent')
# docker = `docker run` without flags: Docker's capabilities and seccomp profile, pivot_root, no_new_privs off.
PRESETS = ('none', 'docker')
# How long the launch may take to reach the command (unshare, mounting /proc, chroot or pivot_root).
START_TIMEOUT = 15.0
# How long a SIGKILLed process may take to disappear (it must first leave uninterruptible sleep).
KILL_TIMEOUT = 10.0
POLL_INTERVAL = 0.02
# How long a veth of the container's previous network namespace may take to go once that namespace has gone.
STALE_LINK_TIMEOUT = 3.0


def network_options() -> dict:
    """The suboptions of O(network): the attach options of container_network (bridge_network's, one source for both),
    and where the records are kept."""
    options = copy.deepcopy(bridge_network.OPTION_SPEC)
    options.update(network_dir=dict(type='path', default=netdev.NETWORK_DIR))
    return options


def container_options(name_required: bool = True) -> dict:
    """The options of one container: the module's own, and those of each item of O(containers)."""
    return dict(
        name=dict(type='str', required=name_required),
        rootfs=dict(type='path'),
        command=dict(type='list', elements='str'),
        namespaces=dict(type='list', elements='str', choices=list(ns_utils.NAMESPACE_TYPES),
                        default=list(container.DEFAULT_NAMESPACES)),
        hostname=dict(type='str'),
        mount_proc=dict(type='bool'),
        root_method=dict(type='str', choices=list(container.ROOT_METHODS), default=container.DEFAULT_ROOT_METHOD),
        env=dict(type='dict', default={}),
        workdir=dict(type='str'),
        state=dict(type='str', choices=list(STATES), default='started'),
        stop_timeout=dict(type='int', default=10),
        state_dir=dict(type='path'),
        preset=dict(type='str', choices=list(PRESETS), default='none'),
        capabilities=dict(type='list', elements='str'),
        no_new_privs=dict(type='bool'),
        seccomp=dict(type='str'),
        memory=dict(type='raw'),
        pids_limit=dict(type='int'),
        cpus=dict(type='raw'),
        cpu_shares=dict(type='int'),
        cgroup_parent=dict(type='str'),
        adopt=dict(type='bool', default=True),
        userns_remap=dict(type='str'),
        userns_remap_root=dict(type='path', default=layer_shift.argument_spec()['root']['default']),
        userns_remap_create=dict(type='bool', default=False),
        volumes=dict(type='list', elements='str', default=[]),
        network=dict(type='dict', options=network_options()),
        overlay=dict(type='dict', options=copy.deepcopy(overlay_utils.OPTION_SPEC)),
    )


def argument_spec():
    """One container's options (name then not required), or several containers as O(containers) - each item the
    options of one container - and what is module-wide."""
    spec = container_options(name_required=False)
    spec.update(
        containers=dict(type='list', elements='dict', options=container_options()),
        lock_timeout=dict(type='int', default=60),
    )
    return spec


def constraints():
    """What AnsibleModule checks for us: one container (name) or several (containers), not both - the options of one
    container go into each item of containers. What a start needs (rootfs, command) request_problems() says, naming
    the item."""
    return dict(required_one_of=[('name', 'containers')],
                mutually_exclusive=[('containers', option) for option in container_options()])


class ContainerFailure(Exception):
    """A container that cannot be (or was not) brought to its state: the message, and the result's fields."""

    def __init__(self, msg: str, **fields):
        super().__init__(msg)
        self.msg = msg
        self.fields = {key: value for key, value in fields.items() if key != 'msg'}


def effective_mount_proc(params) -> bool:
    if params['mount_proc'] is not None:
        return params['mount_proc']
    return 'pid' in params['namespaces'] and 'mount' in params['namespaces']


def state_dir_of(params) -> str:
    return paths.normalize(params['state_dir']) if params['state_dir'] else container.default_state_dir(params['name'])


def effective_confinement(params) -> confine.Confinement:
    """The confinement asked for: explicit options first, then the preset's (docker: Docker's defaults)."""
    docker = params['preset'] == 'docker'
    capabilities = params['capabilities']
    if capabilities is None:
        capabilities = [confine.DOCKER] if docker else [confine.ALL]
    seccomp = params['seccomp'] or (confine.DOCKER_PROFILE if docker else confine.UNCONFINED)
    return confine.Confinement.build(capabilities=capabilities, no_new_privs=bool(params['no_new_privs']), seccomp=seccomp)


def effective_limits(params):
    """(cgroups.Limits or None, problems), each problem naming its option."""
    return cgroups.parse_limits(params['memory'], params['pids_limit'], params['cpus'], params['cpu_shares'])


def confinement_problems(params) -> list[str]:
    """What is wrong with capabilities, no_new_privs, seccomp and preset, as written (the profile's content is read
    later, from the managed host)."""
    problems = confine.capabilities_problems('capabilities', params['capabilities'])
    seccomp = params['seccomp']
    if seccomp is not None and seccomp not in (confine.UNCONFINED, confine.DOCKER_PROFILE) and not seccomp.startswith('/'):
        problems.append(f'seccomp must be "{confine.UNCONFINED}", "{confine.DOCKER_PROFILE}" (Docker\'s default profile) '
                        f'or an absolute path to a profile in Docker\'s JSON format on the managed host, got "{seccomp}".')
    if problems:
        return problems
    confined = [name for name, value in (('capabilities', params['capabilities'] is not None
                                          and confine.resolve_capabilities(params['capabilities']) is not None),
                                         ('no_new_privs', bool(params['no_new_privs'])),
                                         ('seccomp', seccomp not in (None, confine.UNCONFINED))) if value]
    if params['root_method'] == 'chroot':
        if params['preset'] == 'docker':
            problems.append('preset docker needs root_method pivot_root (Docker pivots into the root file system), '
                            'got root_method chroot: leave root_method out, or drop the preset.')
        elif confined:
            problems.append(f'{", ".join(confined)} need root_method pivot_root, got chroot: confinement is applied by '
                            f'the pivot_root stage, and a chrooted container keeps the host\'s files one escape away. '
                            f'Leave root_method out (pivot_root is the default), or drop {", ".join(confined)}.')
    return problems


def request_problems(params, prefix: str = '') -> list[str]:
    """Problems visible from the request alone, before looking at any file or process, each naming its option as
    ``prefix`` + option ('containers[N].' for an item of O(containers)). Pure."""
    # rootfs is checked by the container and by the overlay mounted there: say each problem once.
    return [prefix + problem for problem in dict.fromkeys(container_problems(params))]


def mounting_overlay(params) -> bool:
    """Whether this run mounts O(overlay) at O(rootfs) (before the start), rather than unmounting it (after the stop)."""
    return params['state'] in ('started', 'restarted')


def overlay_params(params) -> dict:
    """overlay_mount's options for this container's O(overlay): mounted at O(rootfs) for a start, unmounted when the
    container stops or goes (Docker unmounts a container's layers when it stops). No persist key: no fstab is touched."""
    layers = params['overlay']
    result = {option: layers.get(option) for option in overlay_utils.OPTION_SPEC}
    result.update(path=params['rootfs'], state='mounted' if mounting_overlay(params) else 'unmounted',
                  lock_timeout=params.get('lock_timeout'))
    return result


# layer_remap's options as ns_container calls them, for the messages of layer_shift.
SHIFT_NAMES = {'src': 'overlay.lowerdirs', 'user': 'userns_remap', 'root': 'userns_remap_root',
               'create_user': 'userns_remap_create', 'directories': 'overlay directories'}


def remapping_layers(params) -> bool:
    """Whether this run shifts O(overlay.lowerdirs) into the remap user's range before mounting them (docker run on a
    --userns-remap daemon)."""
    return params.get('userns_remap') is not None and params.get('overlay') is not None and mounting_overlay(params)


def container_directories(params) -> list[str]:
    """The remapped container's own directories, made (or chowned) for the mapped root before the mount: upperdir,
    workdir and rootfs - and their common parent first, when they share one that holds nothing else (it is then the
    container's own directory, as Docker's /var/lib/docker/UID.GID/overlay2/ID; a shared one such as /tmp is never
    given away)."""
    layers = params['overlay']
    own = [paths.normalize(directory) for directory in (layers.get('upperdir'), layers.get('workdir'), params['rootfs'])
           if directory]
    parents = {os.path.dirname(directory) for directory in own}
    if len(own) == 3 and len(parents) == 1:
        parent = parents.pop()
        try:
            others = set(os.listdir(parent)) - {os.path.basename(directory) for directory in own}
        except FileNotFoundError:
            others = set()
        except OSError:
            others = {None}
        if not others:
            own.insert(0, parent)
    return own


def shift_params(params, directories: list) -> dict:
    """layer_remap's options (layer_shift's) for this container's remapped layers."""
    return dict(user=params['userns_remap'], src=params['overlay'].get('lowerdirs'), root=params.get('userns_remap_root'),
                directories=directories, create_user=bool(params.get('userns_remap_create')), state='present',
                lock_timeout=params.get('lock_timeout'))


def remap_layers_problems(params) -> list[str]:
    """What is wrong with the remapped layers as written: layer_shift says, naming ns_container's options."""
    if params.get('userns_remap_create') and (params.get('userns_remap') is None or params.get('overlay') is None):
        return ['userns_remap_create needs userns_remap and overlay: the remap user is made (when missing) by the run that '
                'shifts the overlay\'s layers into its range. Give both, or leave userns_remap_create out.']
    if not remapping_layers(params) or not params['overlay'].get('lowerdirs'):
        return []
    # The container's directories are checked by overlay.py (overlay.upperdir, overlay.workdir, rootfs).
    return layer_shift.request_problems(shift_params(params, []), names=SHIFT_NAMES)


def overlay_problems(params) -> list[str]:
    """What is wrong with O(overlay) as written: overlay.py says, naming overlay.OPTION and the mount point rootfs."""
    if params.get('overlay') is None:
        return []
    if params['rootfs'] is None:
        return ['overlay needs rootfs: the overlay is mounted at the container\'s root file system (as docker run mounts '
                'the container\'s layers), give the directory to mount it at (e.g. /overlay/merged).']
    return overlay_utils.request_problems(overlay_params(params), prefix='overlay.', path_option='rootfs')


# What a start needs, in the words of the message that says it is missing.
NEEDED_TO_START = {'rootfs': 'its root file system (the directory that becomes its /, such as /overlay/merged)',
                   'command': 'its PID 1, as an argument list such as [tail, -f, /dev/null]'}


def container_problems(params) -> list[str]:
    problems = []
    problem = container.name_problem(params['name'])
    if problem:
        problems.append(problem)
    if params['state_dir']:
        # paths.py decides, for every module, which paths may be used - as written and as the kernel resolves them.
        problem = paths.absolute_path_problem('state_dir', params['state_dir']) or \
            paths.system_directory_problem('state_dir', params['state_dir'])
        if problem:
            problems.append(problem)
    if params['stop_timeout'] < 0:
        problems.append(f'stop_timeout must be 0 or more seconds, got {params["stop_timeout"]}.')
    if params.get('lock_timeout') is not None and params['lock_timeout'] < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    problems.extend(network_problems(params))
    problems.extend(overlay_problems(params))
    problems.extend(remap_layers_problems(params))
    if params['state'] not in ('started', 'restarted'):
        if params['rootfs'] is not None:
            # state=absent with rootfs: the containers started by hand there are stopped too (adopt).
            problem = paths.root_directory_problem('rootfs', params['rootfs'])
            if problem:
                problems.append(problem)
        return problems

    missing = [option for option in NEEDED_TO_START if params[option] is None]
    if missing:
        return problems + [f'{option} is missing: state={params["state"]} starts the container, which needs '
                           f'{NEEDED_TO_START[option]}.' for option in missing]
    namespaces = set(params['namespaces'])
    rootfs = params['rootfs']
    problem = paths.root_directory_problem('rootfs', rootfs)
    if problem:
        problems.append(problem)

    command = params['command']
    if not command or not command[0]:
        problems.append('command must name the program to run as the container\'s PID 1, e.g. [tail, -f, /dev/null].')
    else:
        if len(command) == 1 and len(command[0].split()) > 1:
            problems.append(f'command is an argument list, and "{command[0]}" is one argument with spaces in it: '
                            f'write it as a list, e.g. {command[0].split()} (nothing is run through a shell).')
        if any('\0' in arg for arg in command):
            problems.append('command contains a NUL byte, which no program argument can hold.')

    if params['hostname'] is not None:
        if 'uts' not in namespaces:
            problems.append(f'hostname "{params["hostname"]}" needs "uts" in namespaces: without its own UTS namespace '
                            f'the container would rename the host.')
        problem = container.hostname_problem(params['hostname'])
        if problem:
            problems.append(problem)
    if params['mount_proc'] and not {'pid', 'mount'} <= namespaces:
        missing = ' and '.join(f'"{name}"' for name in ('pid', 'mount') if name not in namespaces)
        problems.append(f'mount_proc needs {missing} in namespaces: a new /proc shows the processes of a new PID '
                        f'namespace, and it must be mounted in a mount namespace of its own so the host\'s /proc stays '
                        f'intact. Add {missing} to namespaces, or set mount_proc: false.')
    if params['root_method'] == 'pivot_root' and 'mount' not in namespaces:
        default = ' (the default)' if container.DEFAULT_ROOT_METHOD == 'pivot_root' else ''
        problems.append(f'root_method pivot_root{default} needs "mount" in namespaces: pivot_root changes the root of the '
                        f'whole mount namespace, which must be the container\'s own, not the host\'s. Add "mount" to '
                        f'namespaces, or set root_method: chroot (which leaves the host\'s files one chroot() escape away).')
    if params['workdir'] is not None and not params['workdir'].startswith('/'):
        problems.append(f'workdir is a path inside the container and must be absolute, got "{params["workdir"]}".')
    problems.extend(environ.env_name_problems('env', params['env']))
    if params['userns_remap'] is not None:
        problem = idmap.name_problem('userns_remap', params['userns_remap'])
        if problem:
            problems.append(problem)
    volumes, volume_problems = container.parse_volumes(params['volumes'])
    problems.extend(volume_problems)
    for volume in volumes:
        # Host paths go through paths.py like every other path option.
        problem = paths.system_directory_problem('volumes', volume.host)
        if problem:
            problems.append(problem)
    problems.extend(confinement_problems(params))
    problems.extend(effective_limits(params)[1])
    problem = cgroups.cgroup_parent_problem(params['cgroup_parent'])
    if problem:
        problems.append(problem)
    return problems


def network_problems(params) -> list[str]:
    """What is wrong with O(network) as written: the attach options (bridge_network says, naming network.OPTION), where
    the records go, and a network namespace of its own to attach."""
    network = params.get('network')
    if network is None:
        return []
    attach = {option: network[option] for option in bridge_network.OPTION_SPEC}
    problems = bridge_network.request_problems(attach, prefix='network.')
    if network.get('network_dir'):
        problem = paths.absolute_path_problem('network.network_dir', network['network_dir']) or \
            paths.system_directory_problem('network.network_dir', network['network_dir'])
        if problem:
            problems.append(problem)
    if params['state'] in ('started', 'restarted') and 'net' not in params['namespaces']:
        problems.append('network needs "net" in namespaces: a container without a network namespace of its own shares '
                        'the seat\'s (network mode host) and has nothing to attach to a bridge. Add "net" to namespaces, '
                        'or leave network out.')
    return problems


def desired_spec(params, remap: container.Remap | None = None) -> container.ContainerSpec:
    return container.ContainerSpec.build(
        rootfs=params['rootfs'], command=params['command'], namespaces=params['namespaces'],
        hostname=params['hostname'], mount_proc=effective_mount_proc(params), root_method=params['root_method'],
        env=params['env'], workdir=params['workdir'], confinement=effective_confinement(params),
        limits=effective_limits(params)[0], cgroup_parent=params['cgroup_parent'], userns_remap=remap,
        volumes=container.parse_volumes(params['volumes'])[0],
    )


def read_remap(user: str) -> tuple:
    """(container.Remap or None, problems) for userns_remap: the account, its first subordinate ranges."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        account = None
    texts = []
    for path in (container.SUBUID_FILE, container.SUBGID_FILE):
        try:
            with open(path, encoding='utf-8', errors='replace') as handle:
                texts.append(handle.read())
        except FileNotFoundError:
            texts.append(None)
    return container.resolve_remap(user, account, *texts)


def remap_problems(spec: container.ContainerSpec) -> list[str]:
    """With userns_remap: the rootfs must belong to the mapped root and be reachable by it."""
    remap = spec.userns_remap
    if remap is None:
        return []
    problems = []
    info = os.stat(spec.rootfs)
    if (info.st_uid, info.st_gid) != (remap.uid_start, remap.gid_start):
        problems.append(f'userns_remap: rootfs {spec.rootfs} belongs to {info.st_uid}:{info.st_gid}, not to the '
                        f'container\'s root as the seat sees it ({remap.uid_start}:{remap.gid_start}, {remap.user}\'s '
                        f'first range): inside, / would belong to nobody. Use a root file system shifted into that '
                        f'range (the role userns of this collection makes one from the image\'s layers).')
    blocked = container.unreachable_for(remap.uid_start, remap.gid_start, spec.rootfs)
    if blocked:
        problems.append(f'userns_remap: the container\'s root is uid {remap.uid_start} on the seat and cannot reach '
                        f'rootfs {spec.rootfs}: it may not pass {blocked}. Put the root file system where every user '
                        f'may pass (as /overlay), or open that directory (chmod o+x).')
    return problems


def volume_problems(spec: container.ContainerSpec) -> list[str]:
    """Each volume's host path must exist (and be reachable by a remapped root, which looks it up); its container path
    must be a real directory or file inside the rootfs - or be missing, with its parent there, to be created."""
    problems = []
    for volume in spec.volumes:
        if not os.path.exists(volume.host):
            problems.append(f'volumes: the host path {volume.host} (of {volume.text()}) does not exist.')
            continue
        if spec.userns_remap is not None:
            remap = spec.userns_remap
            blocked = container.unreachable_for(remap.uid_start, remap.gid_start, os.path.dirname(volume.host))
            if blocked:
                problems.append(f'volumes: {volume.host} is bound by the container\'s root, which is uid '
                                f'{remap.uid_start} on the seat (userns_remap) and may not pass {blocked} to find it. '
                                f'Give a path every user may pass to.')
        target, problem = volume_target(spec.rootfs, volume)
        if problem:
            problems.append(problem)
    return problems


def volume_target(rootfs: str, volume: container.Volume) -> tuple:
    """(host path of the container path, problem). mount follows symbolic links on the host: no component may be one."""
    parent_inside = os.path.dirname(volume.inside)
    parent, problem = paths.mount_target_inside(rootfs, parent_inside, 'volumes')
    if problem:
        return parent, f'{problem} ({volume.text()}; only the last component of a container path is created)'
    target = os.path.join(parent, os.path.basename(volume.inside))
    if not os.path.lexists(target):
        return target, None
    if os.path.islink(target):
        return target, (f'volumes: {target} is a symbolic link (to {os.readlink(target)}): mount would follow it on the '
                        f'host. Make {volume.inside} a real directory or file inside the root.')
    if os.path.isdir(volume.host) != os.path.isdir(target):
        kinds = ('a directory', 'a file')
        return target, (f'volumes: {volume.host} is {kinds[not os.path.isdir(volume.host)]} and {target} is '
                        f'{kinds[not os.path.isdir(target)]}: a bind mount needs the same kind on both sides.')
    return target, None


def rootfs_not_built(rootfs: str) -> str | None:
    """Why ``rootfs`` is no root file system yet - missing, or an empty directory (an overlay's merged directory before
    the overlay is mounted) - or None. In check mode an earlier task of the same run may still build it."""
    if not os.path.lexists(rootfs):
        return 'does not exist yet'
    if os.path.isdir(rootfs) and not os.listdir(rootfs):
        return 'is an empty directory (as an overlay\'s merged directory is before the overlay is mounted)'
    return None


def filesystem_problems(spec: container.ContainerSpec, state_dir: str) -> list[str]:
    """Problems with the root file system and the state directory, as they are on disk now."""
    rootfs = spec.rootfs
    if not os.path.exists(rootfs):
        return [f'rootfs {rootfs} does not exist: build or mount the root file system first '
                f'(for example with unboxed.lab.overlay_mount).']
    if not os.path.isdir(rootfs):
        return [f'rootfs {rootfs} is not a directory.']
    if not os.listdir(rootfs):
        return [f'rootfs {rootfs} is an empty directory, not a root file system: is the overlay mounted? Build or mount '
                f'the root file system first (for example with unboxed.lab.overlay_mount).']
    problems = []
    search_path = dict(spec.env).get('PATH', environ.DEFAULT_PATH)
    program = spec.command[0]
    if not paths.find_program_inside(rootfs, program, search_path):
        where = program if '/' in program else f'{program} (searched in PATH={search_path})'
        problems.append(f'command: {where} not found inside {rootfs}. The container runs with {rootfs} as its "/", so '
                        f'the program must exist in that root file system, not only on the host. Is {rootfs} really a '
                        f'root file system (is the overlay mounted)?')
    if spec.mount_proc:
        target = paths.resolve_inside(rootfs, '/proc')
        if not target or not os.path.isdir(target):
            problems.append(f'mount_proc needs a directory {rootfs}/proc to mount the container\'s /proc on, and there '
                            f'is none (the module never writes to rootfs): create it, or set mount_proc: false.')
    if spec.workdir is not None:
        target = paths.resolve_inside(rootfs, spec.workdir)
        if not target or not os.path.isdir(target):
            problems.append(f'workdir {spec.workdir} is not a directory inside {rootfs}.')
    if paths.is_inside(os.path.realpath(state_dir), os.path.realpath(rootfs)):
        problems.append(f'state_dir {state_dir} lies inside rootfs {rootfs}: the container would see its own state and '
                        f'log, and the module never writes to rootfs. Choose a directory outside it.')
    problems += remap_problems(spec)
    problems += volume_problems(spec)
    return problems


def state_dir_problem(state_dir: str) -> str | None:
    """state_dir, once known to be absolute and not a system directory, must be (or become) a directory."""
    if os.path.lexists(state_dir) and not os.path.isdir(state_dir):
        return f'state_dir {state_dir} exists and is not a directory.'
    return None


def diff_view(status: str, pid, spec: container.ContainerSpec | None) -> dict:
    """The container as --diff shows it: its state, its PID and its spec."""
    if status == 'absent':
        return {'state': 'absent'}
    view = {'state': status, 'pid': pid}
    if spec is not None:
        view.update(spec.to_dict())
    return view


# What check mode predicts for the container's state after each action.
PREDICTED_STATUS = {'start': 'started', 'restart': 'started', 'track': 'started', 'stop': 'stopped', 'remove': 'absent',
                    'clean': 'stopped', 'adopt': 'started', 'replace': 'started'}
# The result's `action`, per action.
ACTION_WORDS = {'start': 'started', 'restart': 'restarted', 'track': 'tracked', 'stop': 'stopped', 'remove': 'removed',
                'clean': 'cleaned', 'adopt': 'adopted', 'replace': 'replaced'}


def adoptable(spec: container.ContainerSpec) -> bool:
    """Whether a container of this spec can be adopted: one without confinement or limits, since neither a seccomp
    filter nor the module's own cgroups can be recognised on a process started by hand."""
    return not spec.confinement.confined and not spec.wants_cgroup


class NsContainer:
    """read the recorded and live state -> compare with the request -> act only on the difference."""

    def __init__(self, module, params: dict, label: str = '', prefix: str = ''):
        self.module = module
        # Put before the option names of messages that come from the APIs (overlay.py): 'containers[1].' or ''.
        self.prefix = prefix
        # O(overlay): its result in this run (overlay.py's), and whether the rootfs checks wait for its mount.
        self.overlay_result = None
        self.rootfs_checks_deferred = False
        # With userns_remap and O(overlay): layer_shift's result, and whether the remap user is read after it (made then).
        self.remap_result = None
        self.remap_deferred = False
        # One container's options: the module's own, or one item of O(containers) (with the module-wide lock_timeout).
        self.params = params
        self.name = self.params['name']
        # Said before each warning and failure of an item of O(containers) ('containers[1] (client): '), else ''.
        self.label = label
        self.state_dir = None
        self.log_path = None
        self.desired = None
        self.recorded_state = None
        self.recorded = None
        self.state_file_error = None
        self.identity = None
        # A container an interrupted run started but did not record (container.Launched), found by what it is.
        self.launched = None
        self.acted = False
        self.stop_signal = None
        self.reason = ''
        # The container's cgroups as recorded (cgroups.Plan), and as the request would make them (check mode, result).
        self.recorded_cgroup = None
        self.desired_cgroup = None
        # Where it goes wrong with the seccomp profile (compiled once, on the host, before anything starts).
        self.launch_confinement = None
        # Containers started by hand on the rootfs (container.Candidate): adopted, replaced, or stopped by state=absent.
        self.adopted = None
        self.to_replace = []
        self.replaced = []
        self.stopped_by_hand = []

    # ---- reading -------------------------------------------------------------------------------------------------

    def load(self):
        """The recorded state, and whether its process still runs (same PID, same start time, no zombie)."""
        self.state_dir = state_dir_of(self.params)
        self.log_path = container.log_file_path(self.state_dir)
        try:
            self.recorded_state = container.read_state(self.state_dir)
        except container.StateFileError as error:
            self.state_file_error = str(error)
        self.recorded = container.recorded_spec(self.recorded_state)
        self.recorded_cgroup = recorded_cgroup(self.recorded_state)
        identity = container.recorded_process(self.recorded_state)
        self.identity = identity if process.is_running(identity) else None
        if self.identity is None:
            self.launched = self.find_interrupted_launch()
            if self.launched is not None:
                self.identity = self.launched.pid1

    def find_interrupted_launch(self) -> container.Launched | None:
        """The container that a run recorded it was about to start, then died before recording its PID - killed
        between starting unshare and writing the state file. Found by its exact launch command and its log file."""
        launching = (self.recorded_state or {}).get('launching')
        argv = launching.get('argv') if isinstance(launching, dict) else None
        if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
            return None
        return container.find_launched(argv, self.log_path)

    @property
    def running(self) -> bool:
        return self.identity is not None

    def current_status(self) -> str:
        if self.running:
            return 'started'
        return 'stopped' if self.recorded_state is not None else 'absent'

    def live_isolation_problem(self) -> str | None:
        """A running container whose namespaces are not the ones asked for (its record cannot be trusted)."""
        live = ns_utils.isolated_types(ns_utils.namespace_report(self.identity.pid))
        if live != list(self.desired.namespaces):
            return f'the running process is isolated in [{", ".join(live)}], not in [{", ".join(self.desired.namespaces)}]'
        return None

    def cgroup_leftovers(self) -> list[str]:
        """The recorded cgroup directories that remain with no container running: a killed container's leftovers."""
        if self.running or self.recorded_cgroup is None:
            return []
        return cgroups.leftovers(self.recorded_cgroup)

    def remove_cgroup(self):
        """Remove the recorded cgroups (their processes are gone) and forget them."""
        if self.recorded_cgroup is None:
            return
        self.acted = True
        try:
            removed = cgroups.remove(self.recorded_cgroup)
        except cgroups.CgroupError as error:
            self.fail(f'Container {self.name}: {" ".join(error.problems)}')
        if removed:
            self.log(f'removed the cgroups {", ".join(removed)}')
        self.recorded_cgroup = None
        if self.recorded_state is not None and os.path.isdir(self.state_dir):
            self.record(cgroup=None)

    def our_files(self) -> list[str]:
        if not os.path.isdir(self.state_dir):
            return []
        return [os.path.join(self.state_dir, entry) for entry in sorted(os.listdir(self.state_dir))
                if entry in (container.STATE_FILE, container.LOG_FILE) or entry.startswith(container.STATE_TEMP_PREFIX)]

    def state_dir_removable(self) -> bool:
        """Whether state_dir holds nothing but the module's own files (or nothing at all)."""
        if not os.path.isdir(self.state_dir):
            return False
        ours = {os.path.basename(path) for path in self.our_files()}
        return set(os.listdir(self.state_dir)) <= ours

    # ---- acting --------------------------------------------------------------------------------------------------

    def binaries(self) -> container.Binaries:
        spec = self.desired

        def find(program):
            return self.module.get_bin_path(program, required=True)

        found = {'unshare': find('unshare')}
        python = sys.executable
        remap = spec.userns_remap
        if remap is not None and (spec.volumes or spec.root_method == 'pivot_root'):
            # A remapped root runs the stages as a host uid of its range: a python3 that uid may run (the module's
            # own may live where only root may pass, e.g. a virtualenv below /root).
            candidates = [sys.executable, self.module.get_bin_path('python3'), '/usr/bin/python3']
            runnable = [path for path in candidates if path and container.runnable_by(remap.uid_start, remap.gid_start, path)]
            python = runnable[0] if runnable else None
            if python is None:
                self.fail(f'userns_remap: no python3 that the container\'s root (uid {remap.uid_start} on the seat) may '
                          f'run was found ({", ".join(path for path in candidates if path)}); the pivot_root and '
                          f'volumes stages need one.')
        if spec.userns_remap is not None:
            found.update(setpriv=find('setpriv'))
        if spec.volumes:
            found.update(mount=find('mount'), python=python)
        if spec.root_method == 'pivot_root':
            found.update(mount=find('mount'), pivot_root=find('pivot_root'), python=python)
        else:
            if spec.hostname is not None:
                found.update(sh=find('sh'), hostname=find('hostname'))
            if spec.workdir is None:
                found.update(chroot=find('chroot'))
        return container.Binaries(**found)

    def remap_program_problems(self) -> list[str]:
        """userns_remap needs newuidmap and newgidmap (package uidmap) and setpriv (util-linux)."""
        missing = [program for program in ('newuidmap', 'newgidmap', 'setpriv') if not self.module.get_bin_path(program)]
        if not missing:
            return []
        return [f'userns_remap needs {", ".join(missing)} on this host, which map the container\'s IDs to the remap '
                f'user\'s ranges: install the package uidmap (newuidmap, newgidmap) and util-linux (setpriv).']

    def check_kernel_allows(self):
        """Ask the kernel for the namespaces, and unshare for its options, once (unshare ... true), so that a refusal is
        explained before anything starts."""
        unshare = self.module.get_bin_path('unshare', required=True)
        binaries = container.Binaries(unshare=unshare, setpriv=self.module.get_bin_path('setpriv') or 'setpriv')
        argv = container.probe_argv(self.desired, binaries, self.module.get_bin_path('true', required=True))
        rc, stdout, stderr = cmd.run(self.module, argv)
        if rc != 0:
            detail = cmd.failure_detail(rc, stdout, stderr)
            problem = self.unshare_too_old_problem(unshare, detail) or \
                container.unshare_refusal_problem(detail, self.desired.namespaces, container.is_chrooted())
            self.fail(problem, cmd=cmd.shell_join(argv), rc=rc, stderr=stderr)

    def unshare_too_old_problem(self, unshare: str, detail: str) -> str | None:
        """When unshare said it does not know an option: which one, and the util-linux version (unshare --version)."""
        if not container.unknown_option(detail):
            return None
        _rc, stdout, stderr = cmd.run(self.module, [unshare, '--version'])
        return container.unsupported_option_problem('unshare', detail, stdout or stderr)

    def log(self, line: str):
        if not os.path.isdir(self.state_dir):
            return  # state=absent stopping containers started by hand, with no state directory to write into
        with open(self.log_path, 'a', encoding='utf-8') as handle:
            handle.write(f'--- {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} unboxed.lab.ns_container: {line}\n')

    def record(self, **changes):
        state = dict(self.recorded_state or {})
        state.update(changes)
        container.write_state(self.state_dir, state)
        self.recorded_state = container.read_state(self.state_dir)
        self.recorded = container.recorded_spec(self.recorded_state)
        # A run killed while writing leaves its temporary file behind; under the lock no other writer is at work.
        for entry in os.listdir(self.state_dir):
            if entry.startswith(container.STATE_TEMP_PREFIX):
                try:
                    os.unlink(os.path.join(self.state_dir, entry))
                except FileNotFoundError:
                    pass

    def stop(self):
        identity = self.identity
        self.acted = True
        self.log(f'stopping PID {identity.pid}: SIGTERM, then SIGKILL after {self.params["stop_timeout"]} s')
        process.send_signal(identity, signal.SIGTERM)
        self.stop_signal = 'SIGTERM'
        if not process.wait_until_not_running(identity, self.params['stop_timeout']):
            process.send_signal(identity, signal.SIGKILL)
            self.stop_signal = 'SIGKILL'
            if not process.wait_until_not_running(identity, KILL_TIMEOUT):
                self.fail(f'Container {self.name} (PID {identity.pid}) is still running {KILL_TIMEOUT:.0f} s after SIGKILL; '
                          f'it is probably stuck in uninterruptible sleep (state D in ps).')
        self.log(f'PID {identity.pid} ended after {self.stop_signal}')
        self.identity = None
        self.launched = None
        self.record(process=None, launcher=None, launching=None, stopped_at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        self.remove_cgroup()

    def bounding_mask(self) -> int | None:
        """The capability bounding set a container of the desired spec gets: the spec's, within the module's own."""
        try:
            own = int(confine.read_status_fields('self').get('CapBnd', ''), 16)
        except ValueError:
            return None
        return own & confine.capability_mask(self.desired.confinement.bounding_names())

    def plan_adoption(self):
        """Containers started by hand on the rootfs: which to adopt, which to replace (adopt: true, no live record)."""
        if not self.params['adopt'] or not adoptable(self.desired):
            return
        candidates, bystanders = container.find_candidates(self.desired, self.desired.rootfs,
                                                           bounding_mask=self.bounding_mask())
        self.adopted, self.to_replace, left = container.adoption_plan(candidates)
        for candidate in left:
            self.warn(f'PID {candidate.rooted.pid} ({cmd.shell_join(list(candidate.rooted.cmdline))}) is another '
                      f'container on {self.desired.rootfs} ({candidate.mismatch}); it was left alone.')
        if bystanders and (self.to_replace or self.adopted is None):
            self.warn(f'{self.desired.rootfs} is also the root of processes that are no containers, left alone: '
                      + ', '.join(f'PID {entry.pid} ({entry.comm})' for entry in bystanders)
                      + ' - a chroot shell, say; they keep the overlay busy until they end.')

    def adopt(self):
        """Record a container started by hand as this one: PID 1 and start time, its unshare as the launcher."""
        self.acted = True
        found = self.adopted
        identity = found.rooted.identity
        os.makedirs(os.path.dirname(self.state_dir), mode=0o755, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.remove_cgroup()
        self.record(name=self.name, spec=self.desired.to_dict(), process=identity.to_dict(),
                    launcher=found.launcher.to_dict() if found.launcher else None, launching=None,
                    shell_command=container.shell_command(self.desired), cgroup=None, adopted=True,
                    started_at=process.started_at_iso(identity), stopped_at=None)
        self.log(f'adopted PID {identity.pid} ({cmd.shell_join(list(found.rooted.cmdline))}), started by hand: it '
                 f'matches the spec')

    def stop_found(self, found: container.Candidate, why: str):
        """Stop a container started by hand, by its identity (PID and start time, through a pidfd), and wait for it
        and its launcher to go."""
        self.acted = True
        identity = found.rooted.identity
        own_pid_namespace = found.rooted.namespaces.get('pid') != ns_utils.namespace_inode('self', 'pid')
        # PID 1 of a PID namespace never sees a signal it does not handle (SIGKILL aside): SIGTERM would only wait.
        ignores_sigterm = own_pid_namespace and found.rooted.is_pid1 and \
            process.catches_signal(identity.pid, signal.SIGTERM) is False
        self.log(f'stopping PID {identity.pid} ({cmd.shell_join(list(found.rooted.cmdline))}), started by hand: {why}')
        signals = [('SIGKILL', KILL_TIMEOUT)] if ignores_sigterm else \
            [('SIGTERM', self.params['stop_timeout']), ('SIGKILL', KILL_TIMEOUT)]
        for name, timeout in signals:
            process.send_signal(identity, getattr(signal, name))
            if process.wait_until_not_running(identity, timeout):
                break
        else:
            self.fail(f'PID {identity.pid}, a container started by hand ({cmd.shell_join(list(found.rooted.cmdline))}), is still running '
                      f'{KILL_TIMEOUT:.0f} s after SIGKILL; it is probably stuck in uninterruptible sleep (state D in ps).')
        if found.launcher is not None and not process.wait_until_not_running(found.launcher, KILL_TIMEOUT):
            self.warn(f'unshare (PID {found.launcher.pid}), which started PID {identity.pid}, still runs.')
        self.log(f'PID {identity.pid} ended after {name}')

    def replace_found(self):
        if self.to_replace and not self.module.check_mode:
            os.makedirs(os.path.dirname(self.state_dir), mode=0o755, exist_ok=True)
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        for found, why in self.to_replace:
            if not self.module.check_mode:
                self.stop_found(found, why)
            self.replaced.append(found.summary(why))

    def stop_by_hand(self):
        """state=absent with rootfs: stop the containers started by hand there, too (those a start would adopt or
        replace); processes that are no containers stay."""
        rootfs = self.params['rootfs']
        if not rootfs or not self.params['adopt']:
            return
        own = [(self.identity.pid, self.identity.start_time)] if self.identity else []
        candidates, _bystanders = container.find_candidates(None, paths.normalize(rootfs), exclude=own)
        why = f'started by hand on {paths.normalize(rootfs)}, stopped with state={self.params["state"]}'
        for found in candidates:
            if not self.module.check_mode:
                self.stop_found(found, why)
            self.stopped_by_hand.append(found.summary(why))

    def make_volume_targets(self):
        """The container path of each volume, created when missing (validated before: its parent is a real directory
        inside the root), owned by the container's root - the mapped one with userns_remap."""
        spec = self.desired
        remap = spec.userns_remap
        for volume in spec.volumes:
            target, problem = volume_target(spec.rootfs, volume)
            if problem:
                self.fail(problem)
            if os.path.lexists(target):
                continue
            if os.path.isdir(volume.host):
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            if remap is not None:
                os.lchown(target, remap.uid_start, remap.gid_start)
            self.log(f'created {volume.inside} in the root file system for the volume {volume.text()}')

    def start(self):
        spec = self.desired
        self.acted = True
        os.makedirs(os.path.dirname(self.state_dir), mode=0o755, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        # A killed container's cgroups (maybe below another parent than now) go before new ones are made.
        self.remove_cgroup()
        if spec.wants_cgroup and self.desired_cgroup is None:
            # Not planned while it ran with this spec (it was stopped just now, its root was remounted): plan it now.
            problems = self.plan_cgroup()
            if problems:
                self.fail(f'Could not start container {self.name}: {" ".join(problems)}')
        try:
            launch = confine.prepare_launch(spec.confinement)
        except confine.SeccompError as error:
            self.fail(f'seccomp: {error}.')
        self.make_volume_targets()
        stages = container.launch_stages(spec, self.binaries())
        argv = container.launch_argv(stages)
        shown = container.shell_command(spec)
        # Intent, recorded before the spawn: should this task die between starting unshare and recording its child,
        # the next run finds that container by this command line and its log file, and starts no second one. The
        # cgroups are recorded before they are made, so that a run killed in between finds and removes them.
        self.record(name=self.name, spec=spec.to_dict(), process=None, launcher=None,
                    launching={'argv': container.launcher_cmdline(stages)},
                    shell_command=shown, cgroup=self.desired_cgroup.to_dict() if self.desired_cgroup else None)
        self.recorded_cgroup = self.desired_cgroup
        in_child = None
        if self.desired_cgroup is not None:
            try:
                self.recorded_cgroup = cgroups.create(self.desired_cgroup)
            except cgroups.CgroupError as error:
                self.recorded_cgroup = None
                self.record(cgroup=None, launching=None)
                self.fail(f'Could not start container {self.name}: {" ".join(error.problems)}')
            self.record(cgroup=self.recorded_cgroup.to_dict())
            created = self.recorded_cgroup

            def in_child():
                # The launcher joins the cgroups before it execs unshare: PID 1 and all it starts inherit them,
                # and nothing of the container ever runs unlimited.
                cgroups.attach(created, 0)
        filter_fd = launch.filter_fd()
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            log_offset = os.fstat(log_fd).st_size
            self.log(f'starting: {shown}')
            # A daemon, not a child of this task: a session of its own (no SIGHUP when the SSH session ends), no
            # terminal, stdin from /dev/null, output to the log, and none of the module's descriptors (but the
            # seccomp filter, which the stage reads from descriptor 3).
            try:
                launcher = container.DetachedProcess.spawn(argv, environ.clean_environment(dict(spec.env)), log_fd,
                                                           pass_fd=filter_fd, in_child=in_child)
            except OSError as error:
                self.record(launching=None)
                self.remove_cgroup()
                self.fail(f'Could not start container {self.name}: {error}')
        finally:
            os.close(log_fd)
            if filter_fd is not None:
                os.close(filter_fd)

        pid1 = self.wait_for_pid1(launcher, log_offset)
        identity = process.ProcessIdentity(pid1.pid, pid1.start_time)
        launcher_identity = process.identity_of(launcher.pid)
        # Recorded before waiting any further: should this task die now, the next one still finds the container.
        self.record(process=identity.to_dict(), launcher=launcher_identity.to_dict() if launcher_identity else None,
                    launching=None, started_at=process.started_at_iso(identity), stopped_at=None)
        self.wait_for_command(launcher, identity, container.transitional_cmdlines(stages), log_offset)
        self.identity = identity
        inside = ' (PID 1 inside its PID namespace)' if 'pid' in spec.namespaces else ''
        self.log(f'started PID {identity.pid}{inside}')

    def wait_for_pid1(self, launcher, log_offset):
        """unshare --fork: the process to track is unshare's child, which becomes PID 1 of the new namespaces."""
        deadline = time.monotonic() + START_TIMEOUT
        # With userns_remap, unshare --map-users forks a helper first, which runs newuidmap/newgidmap from the seat's
        # user namespace and ends: not the container, whose PID 1 is forked after, in the new user namespace.
        seats_userns = ns_utils.namespace_inode('self', 'user') \
            if self.desired is not None and self.desired.userns_remap is not None else None
        while True:
            children = [child for child in process.children_of(launcher.pid) if seats_userns is None
                        or ns_utils.namespace_inode(child.pid, 'user') not in (None, seats_userns)]
            if children:
                return children[0]
            if launcher.poll() is not None:
                self.start_failed(launcher, None, log_offset, 'unshare ended before it started the container')
            if time.monotonic() >= deadline:
                self.start_failed(launcher, None, log_offset, f'unshare started no process within {START_TIMEOUT:.0f} s')
            time.sleep(POLL_INTERVAL)

    def wait_for_command(self, launcher, identity, transitional, log_offset):
        """Wait until PID 1 has passed the launch stages (chroot, pivot_root...), runs the command itself and has begun
        its work (process.has_begun: it waits for something or has used some CPU). A command that ends at once (a
        missing config file, a typo) fails the task with its output, however slowly a loaded seat runs it."""
        deadline = time.monotonic() + START_TIMEOUT
        reached = False
        stage_ticks = 0
        while True:
            if launcher.poll() is not None or not process.is_running(identity):
                self.start_failed(launcher, identity, log_offset, 'the container ended while it was starting')
            if not reached:
                cmdline = process.read_cmdline(identity.pid)
                reached = bool(cmdline) and cmdline not in transitional
                # The launch stages (python) ran in this process before the exec: their CPU time is not the command's.
                stage_ticks = process.cpu_ticks_of(identity) if reached else 0
            if reached and process.has_begun(identity, since_ticks=stage_ticks):
                return
            if time.monotonic() >= deadline:
                self.start_failed(launcher, identity, log_offset,
                                  f'the container did not reach its command within {START_TIMEOUT:.0f} s' if not reached
                                  else f'its command neither waited for anything nor used CPU within {START_TIMEOUT:.0f} s')
            time.sleep(POLL_INTERVAL)

    def start_failed(self, launcher, identity, log_offset, reason):
        if identity is not None:
            process.send_signal(identity, signal.SIGKILL)
            process.wait_until_not_running(identity, KILL_TIMEOUT)
        reason += exit_explanation(launcher.wait(timeout=KILL_TIMEOUT))
        if self.recorded_state is not None:
            self.record(process=None, launcher=None, launching=None)
        self.log(f'start failed: {reason}')
        self.remove_cgroup()
        output = container.read_log_tail(self.log_path, log_offset)
        too_old = self.unshare_too_old_problem(self.module.get_bin_path('unshare', required=True), output)
        if too_old:
            self.fail(f'Could not start container {self.name}: {too_old}')
        self.fail(f'Could not start container {self.name}: {reason}. Its output ({self.log_path}):\n{output}')

    def track(self):
        """Record the container an interrupted run started (found by load()): it runs on, now tracked."""
        self.acted = True
        launched = self.launched
        self.record(name=self.name, process=launched.pid1.to_dict(), launcher=launched.launcher.to_dict(), launching=None,
                    started_at=process.started_at_iso(launched.pid1), stopped_at=None)
        self.log(f'found PID {launched.pid1.pid}, started by an interrupted run, and recorded it')
        self.launched = None

    def remove(self):
        self.acted = True
        for path in self.our_files():
            os.unlink(path)
        try:
            os.rmdir(self.state_dir)
        except FileNotFoundError:
            pass
        except OSError:
            self.warn(f'{self.state_dir} was kept: it holds files the module did not create '
                      f'({", ".join(sorted(os.listdir(self.state_dir)))}).')
        # The result still names what was removed (rootfs, command...): the spec stays, the record is gone.
        self.recorded_state = None

    # ---- result --------------------------------------------------------------------------------------------------

    def warn(self, text: str):
        self.module.warn(self.label + text)

    def fail(self, msg, **kwargs):
        raise ContainerFailure(msg, **self.result(changed=self.acted), **kwargs)

    def result(self, changed, status=None, show_process=True):
        spec = self.desired or self.recorded
        running = self.running and show_process
        result = {
            'changed': changed,
            'name': self.name,
            'state': status or self.current_status(),
            'pid': self.identity.pid if running else None,
            'started_at': process.started_at_iso(self.identity) if running else None,
            'namespaces': ns_utils.namespace_report(self.identity.pid) if running else {},
            'rootfs': spec.rootfs if spec else None,
            'command': list(spec.command) if spec else None,
            'hostname': spec.hostname if spec else None,
            'root_method': spec.root_method if spec else None,
            'log_path': self.log_path,
            'state_dir': self.state_dir,
            'shell_command': container.shell_command(spec) if spec else None,
        }
        result.update(self.confinement_result(spec, running))
        result['userns'] = self.userns_result() if running else None
        if self.overlay_result is not None:
            result['overlay'] = self.overlay_result
        if self.remap_result is not None:
            result['remap_layers'] = self.remap_result
        result['replaced'] = list(self.replaced)
        result['stopped_by_hand'] = list(self.stopped_by_hand)
        if self.stop_signal:
            result['stop_signal'] = self.stop_signal
        return result

    def userns_result(self) -> dict | None:
        """uid_map and gid_map of the running container, as /proc/PID/uid_map shows them; None without a user namespace."""
        if ns_utils.namespace_inode(self.identity.pid, 'user') == ns_utils.namespace_inode('self', 'user'):
            return None
        maps = {}
        for name in ('uid_map', 'gid_map'):
            try:
                with open(f'{process.PROC}/{self.identity.pid}/{name}', encoding='ascii') as handle:
                    maps[name] = container.normalize_id_map(handle.read())
            except OSError:
                maps[name] = None
        return maps

    def confinement_result(self, spec, running: bool) -> dict:
        """cgroup, usage, setup_commands and confinement: the cgroups in use (or that a start would make), what they
        count, and the process's capabilities as the kernel shows them."""
        in_use = self.recorded_cgroup if running else None
        shown = in_use or (self.desired_cgroup if self.desired is not None else None)
        confinement = spec.confinement if spec else confine.Confinement()
        status = confine.read_status_fields(self.identity.pid) if running else {}
        seccomp_mode = status.get('Seccomp')
        return {
            'cgroup': shown.describe() if shown else None,
            'usage': cgroups.usage(in_use) if in_use else dict.fromkeys(cgroups.USAGE_KEYS),
            'setup_commands': cgroups.setup_commands(shown) if shown else [],
            'confinement': {
                'capabilities': confinement.bounding_names(),
                'cap_eff': status.get('CapEff'),
                'no_new_privs': confinement.no_new_privs,
                'seccomp': confinement.seccomp,
                'seccomp_mode': int(seccomp_mode) if seccomp_mode and seccomp_mode.isdigit() else None,
            },
        }

    # ---- states --------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        """One container on its own: validate, lock, read, compare, act; the result (ContainerFailure when it fails)."""
        problems = request_problems(self.params)
        if problems:
            raise ContainerFailure(' '.join(problems), problems=problems)
        with contextlib.ExitStack() as locks:
            self.lock(locks)
            self.plan()
            return self.act()

    def lock(self, locks: contextlib.ExitStack):
        """One run at a time per container, from reading the record to writing it: two runs at once would both see
        "not running" and start two containers. Check mode only reads: it takes no lock and creates no lock file."""
        if self.module.check_mode:
            return
        try:
            locks.enter_context(locking.exclusive('container', self.name, timeout=self.params['lock_timeout'],
                                                  note=f'unboxed.lab.ns_container state={self.params["state"]}'))
        except locking.LockTimeout as error:
            raise ContainerFailure(locking.timeout_message(f'container {self.name}', error) +
                                   ' (lock_timeout sets how long to wait.)', changed=False, name=self.name)

    def plan(self):
        """Read the recorded and live state and refuse what cannot be done, before anything is changed."""
        params = self.params
        self.load()
        problem = state_dir_problem(self.state_dir)
        if problem:
            raise ContainerFailure(problem, problems=[problem])
        if params['state'] not in ('started', 'restarted'):
            return
        remap = None
        if params['userns_remap'] is not None:
            remap, problems = read_remap(params['userns_remap'])
            if problems and remapping_layers(params):
                # The layers are shifted in this run first: layer_shift makes the user (userns_remap_create) or says
                # what is missing, naming userns_remap; the user is read again after it.
                self.remap_deferred = True
                remap, problems = None, []
            problems += self.remap_program_problems()
            if problems and self.module.check_mode:
                # In a --check run of a whole playbook the tasks that make the remap user, its ranges and
                # newuidmap (role userns) have not run either: predict the start, say what a real run needs.
                self.warn(' '.join(problems) + ' Check mode assumes an earlier task of this run makes '
                          'them; a real run fails if they are still missing.')
                remap, problems = None, []
            if problems:
                raise ContainerFailure(' '.join(problems), problems=problems)
        self.desired = desired_spec(params, remap)
        not_built = rootfs_not_built(self.desired.rootfs)
        if (not_built or self.remap_deferred) and params.get('overlay') is not None:
            # O(overlay) is mounted at rootfs in this run, before the start: the root file system is checked then
            # (in check mode the mount is predicted, and the root is predicted from its layers).
            self.rootfs_checks_deferred = True
            problems = []
        elif self.module.check_mode and not_built:
            # In a --check run of a whole playbook the task that builds or mounts the rootfs has not run either.
            self.warn(f'rootfs {self.desired.rootfs} {not_built}: check mode assumes an earlier task of this '
                      f'run builds or mounts it; a real run fails if it is still not a root file system.')
            problems = []
        else:
            problems = filesystem_problems(self.desired, self.state_dir)
        if not (self.running and not container.spec_changes(self.recorded, self.desired)) or \
                params['state'] == 'restarted':
            # Read when the container may be started: a running one keeps the filter it was started with.
            problems += confine.seccomp_problems('seccomp', self.desired.confinement)
        problems += self.plan_cgroup()
        if problems and self.running:
            problems.append(f'Container {self.name} (PID {self.identity.pid}) still runs, on the root file system '
                            f'that was at {self.desired.rootfs} when it started; it was left alone.')
        if problems:
            raise ContainerFailure(' '.join(problems), problems=problems)
        if self.state_file_error:
            raise ContainerFailure(f'{self.state_file_error}. The module cannot tell which process is container '
                                   f'{self.name}, so it starts nothing; check with ps, then remove the file '
                                   f'(state: absent removes it).')

    def act(self) -> dict:
        """Act only on the difference between the request and what plan() read; the result."""
        params = self.params
        before = diff_view(self.current_status(), self.identity.pid if self.running else None, self.recorded)
        detached = self.detach() if params.get('network') is not None and params['state'] in ('stopped', 'absent') else None
        if remapping_layers(params):
            self.shift_layers()
        if params.get('overlay') is not None and mounting_overlay(params):
            self.mount_overlay()
        action = getattr(self, f'state_{params["state"]}')()
        if self.stop_signal == 'SIGKILL':
            self.reason += f'; SIGTERM did not end it, SIGKILL did after {self.params["stop_timeout"]} s'
        if self.module.check_mode and action and action != 'adopt':
            status = PREDICTED_STATUS[action]
            result = self.result(True, status=status, show_process=False)
            after = diff_view(status, 'new' if status == 'started' else None, self.desired or self.recorded)
        elif self.module.check_mode and action == 'adopt':
            # The container to adopt runs already: its PID is what the real run records.
            result = self.result(True, status='started')
            after = diff_view('started', result['pid'], self.desired)
        else:
            result = self.result(bool(action))
            after = diff_view(self.current_status(), result['pid'], self.desired or self.recorded)
        result['action'] = ACTION_WORDS.get(action)
        result['msg'] = describe(action, self.reason, self.module.check_mode)
        if self.module._diff:
            result['diff'] = {'before': before, 'after': after,
                              'before_header': f'container {self.name}', 'after_header': f'container {self.name}'}
        result['commands'] = list(result['setup_commands']) + ([result['shell_command']] if result['shell_command'] else [])
        if params.get('overlay') is not None:
            if not mounting_overlay(params):
                self.unmount_overlay(result)
            self.add_overlay(result)
        if self.remap_result is not None:
            self.add_remap_layers(result)
        if detached is not None:
            self.add_network(result, detached)
        elif params.get('network') is not None:
            self.connect(action, result)
        return result

    # ---- O(overlay): the container's layers, mounted at its rootfs (docker run) --------------------------------------

    def shift_layers(self):
        """userns_remap with O(overlay): the image's layers as shifted copies in the remap user's range (made when
        missing, as a --userns-remap daemon keeps them), the container's own directories owned by the mapped root - then
        the overlay mounts the copies."""
        params = shift_params(self.params, container_directories(self.params))
        try:
            self.remap_result = layer_shift.Shift(self.module, params, prefix=self.prefix, names=SHIFT_NAMES).run()
        except layer_shift.ShiftError as error:
            fields = dict(self.result(changed=bool(error.result.get('changed'))), remap_layers=error.result)
            raise ContainerFailure(f'{error.msg} Container {self.name} was left as it was (not started, its overlay not '
                                   f'mounted).', **fields)
        if self.remap_result['changed'] and not self.module.check_mode:
            self.acted = True

    def overlay(self) -> overlay_utils.Overlay:
        params = overlay_params(self.params)
        if self.remap_result is not None:
            params['lowerdirs'] = [copy_['dest'] for copy_ in self.remap_result['copies']]
        if not mounting_overlay(self.params):
            # Its result's command is then the umount, and its layers are not read: they may be gone already.
            params['lowerdirs'] = None
        return overlay_utils.Overlay(self.module, params, prefix=f'{self.prefix}overlay.',
                                     path_option=f'{self.prefix}rootfs')

    def mount_overlay(self):
        """O(overlay) mounted at rootfs before the start (docker run mounts the container's layers, then starts it); a
        mounted overlay with these layers is left as it is. Then the root file system checks that waited for it."""
        try:
            # Check mode: the shifted copies and the container's directories are predicted, not made.
            self.overlay_result = self.overlay().run(expect_layers=self.remap_result is not None)
        except overlay_utils.OverlayError as error:
            raise ContainerFailure(f'{error.msg}{self.remap_done()} Container {self.name} was left as it was (not started).',
                                   **dict(self.result(changed=bool(error.result.get('changed'))), overlay=error.result))
        if self.overlay_result['changed'] and not self.module.check_mode:
            self.acted = True
        if not self.rootfs_checks_deferred or self.module.check_mode:
            return
        if self.remap_deferred:
            remap, problems = read_remap(self.params['userns_remap'])
            if problems:
                raise ContainerFailure(' '.join(problems), problems=problems, **self.result(changed=self.acted))
            self.desired = desired_spec(self.params, remap)
        problems = filesystem_problems(self.desired, self.state_dir)
        if problems:
            mounted = 'was mounted by this run and stays mounted' if self.overlay_result['changed'] else 'is mounted'
            raise ContainerFailure(' '.join(problems) + f' The overlay at {self.desired.rootfs} {mounted} (state=absent '
                                   f'unmounts it); container {self.name} was not started.', problems=problems,
                                   **self.result(changed=self.overlay_result['changed']))

    def unmount_overlay(self, result: dict):
        """state=stopped or absent: the overlay at rootfs unmounted once the container is stopped, as Docker unmounts a
        container's layers when it stops - only when it is this container's (its upperdir, or without one its lower
        layers); its upper and work directories, the container's data, stay. Another overlay there is left alone."""
        entry = mountinfo.find_mount(paths.normalize(self.params['rootfs']))
        live = overlay_utils.overlay_from_entry(entry) if entry is not None and entry.fstype == 'overlay' else None
        if live is not None and not self.overlay_is_ours(live):
            self.warn(f'The overlay at {self.params["rootfs"]} is not this container\'s ({self.prefix}overlay: upperdir '
                      f'{live["upperdir"]}, lower layers {live["lowerdirs"]}): it was left mounted.')
            return
        try:
            self.overlay_result = self.overlay().run()
        except overlay_utils.OverlayError as error:
            done = f'{result["msg"]} ' if result.get('msg') else ''
            raise ContainerFailure(f'{done}Unmounting the overlay at {self.params["rootfs"]} failed: {error.msg}',
                                   **dict(result, changed=result['changed'] or bool(error.result.get('changed')),
                                          overlay=error.result))

    def overlay_is_ours(self, live: dict) -> bool:
        layers = self.params['overlay']
        if layers.get('upperdir'):
            return live['upperdir'] == paths.normalize(layers['upperdir'])
        lowers = [paths.normalize(lower) for lower in layers['lowerdirs'] or []]
        if self.params.get('userns_remap') is not None:
            # Its layers are the shifted copies: ROOT/UID.GID/<last component of each lower layer>.
            root = paths.normalize(self.params['userns_remap_root'])
            return live['upperdir'] is None and [os.path.basename(lower) for lower in live['lowerdirs']] == \
                [os.path.basename(lower) for lower in lowers] and \
                all(paths.is_inside(lower, root) for lower in live['lowerdirs'])
        return live['upperdir'] is None and live['lowerdirs'] == lowers

    def remap_done(self) -> str:
        """Said of a failure after the layers were shifted: what that did."""
        if self.remap_result is None or not self.remap_result['changed']:
            return ''
        return (f' The layers were shifted into {self.params["userns_remap"]}\'s range before it '
                f'({len(self.remap_result["copies"])} copies below {self.params["userns_remap_root"]}); they stay.')

    def add_remap_layers(self, result: dict):
        """layer_shift's result under ``remap_layers``, its diff and commands first: they come before the mount."""
        shifted = dict(self.remap_result)
        diff = shifted.pop('diff', None)
        if self.module._diff and diff:
            add_diffs(result, diff, first=True)
        result['remap_layers'] = shifted
        result['changed'] = result['changed'] or shifted['changed']
        if shifted['changed']:
            done = 'would be' if self.module.check_mode else 'were'
            result['msg'] = (f'{result["msg"]} Layers shifted into {self.params["userns_remap"]}\'s range '
                             f'({shifted["uid_start"]}:{shifted["gid_start"]}) below {self.params["userns_remap_root"]}, '
                             f'and the container\'s directories, {done} made or updated.')
        result['commands'] = list(shifted['commands']) + result['commands']

    def add_overlay(self, result: dict):
        """The overlay's result under ``overlay``, its diff beside the container's, its command in order: the mount
        before the container's commands, the unmount after them."""
        mounted = self.overlay_result
        result['overlay'] = mounted
        if mounted is None:
            return
        mounted = dict(mounted)
        add_diffs(result, mounted.pop('diff', None), first=mounting_overlay(self.params))
        result['overlay'] = mounted
        result['changed'] = result['changed'] or mounted['changed']
        rootfs = mounted['path']
        if mounted['actions']:
            done = '; '.join(mounted['actions'])
            result['msg'] = f'{result["msg"]} Overlay at {rootfs}: {"would " if self.module.check_mode else ""}{done}.'
        if mounting_overlay(self.params):
            result['commands'] = [mounted['command']] + result['commands']
        elif mounted['actions']:
            result['commands'].append(mounted['command'])

    def network_params(self, state: str) -> dict:
        """container_network's options for this container's O(network)."""
        network = self.params['network']
        params = {option: network[option] for option in bridge_network.OPTION_SPEC}
        params.update(name=self.name, state=state, state_dir=self.state_dir, network_dir=network['network_dir'],
                      lock_timeout=self.params['lock_timeout'])
        return params

    def detach(self) -> dict:
        """state=stopped or absent with O(network): free the container's address, veth and published ports (Docker
        frees them when the container goes) - before it is stopped, while its veth is there to delete: once its network
        namespace goes, the kernel deletes the pair at a moment of its own. The bridge stays."""
        try:
            return bridge_network.Network(self.module, self.network_params('absent'), prefix='network.').run()
        except bridge_network.NetworkError as error:
            raise ContainerFailure(f'Detaching container {self.name} from {self.params["network"]["bridge"]} failed, and '
                                   f'the container was left as it was: {error.msg}', name=self.name, network=error.result,
                                   changed=bool(error.result.get('changed')))

    def connect(self, action, result: dict):
        """O(network), in this same run: attach the container once it runs (docker run --network bridge -p). The
        attach's result goes under ``network``, its commands after the container's."""
        if not self.module.check_mode and action in ('start', 'restart', 'replace'):
            self.wait_for_stale_veth()
        # In check mode a start (or restart) is only predicted: the container gets a new network namespace in the
        # real run, so the attachment is predicted as a first one.
        starting = self.module.check_mode and action in ('start', 'restart', 'replace')
        try:
            attached = bridge_network.Network(self.module, self.network_params('present'),
                                              prefix='network.').run(expect_started=starting)
        except bridge_network.NetworkError as error:
            fields = {key: value for key, value in result.items() if key != 'msg'}
            fields.update(changed=result['changed'] or bool(error.result.get('changed')), network=error.result)
            raise ContainerFailure(self.network_failure(result, error), **fields)
        self.add_network(result, attached)

    def wait_for_stale_veth(self):
        """A container started in this run has no veth yet: one of its name belongs to a network namespace that went
        with the process before (stopped now, or killed), which the kernel deletes at a moment of its own. Wait for it
        a little, so that the attachment does not race the kernel deleting it."""
        host_veth = netdev.host_veth_name(self.params['network']['bridge'], self.name)
        deadline = time.monotonic() + STALE_LINK_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.if_nametoindex(host_veth)
            except OSError:
                return
            time.sleep(POLL_INTERVAL)

    def add_network(self, result: dict, attached: dict):
        """The attachment's result under ``network``, its diff beside the container's, its message and commands after
        the container's."""
        network = self.params['network']
        network_diff = attached.pop('diff', None)
        if network_diff is not None:
            add_diffs(result, dict(network_diff, before_header=f'network {network["bridge"]}',
                                   after_header=f'network {network["bridge"]}'))
        result['network'] = attached
        result['changed'] = result['changed'] or attached['changed']
        result['msg'] = f'{result["msg"]} {attached["msg"]}'
        result['commands'] += attached['commands']

    def network_failure(self, result: dict, error) -> str:
        """The message of a failed attach: the attach's own, and what became of the container."""
        bridge = self.params['network']['bridge']
        runs = 'would run' if self.module.check_mode and result['pid'] is None else f'runs (PID {result["pid"]})'
        return (f'{result["msg"]} Container {self.name} {runs}, but it is not attached to {bridge} (network): '
                f'{error.msg}')

    def plan_cgroup(self) -> list[str]:
        """The cgroups the request needs on this host (read only), or the problems that prevent them."""
        if not self.desired.wants_cgroup:
            return []
        if self.running and not container.spec_changes(self.recorded, self.desired) and self.params['state'] == 'started':
            # Left alone: its recorded cgroups are the ones in use, and a host that changed since must not fail a no-op.
            return []
        try:
            self.desired_cgroup = cgroups.plan(cgroups.detect_host(), self.name, self.desired.limits,
                                               self.desired.cgroup_parent)
        except cgroups.CgroupError as error:
            return list(error.problems)
        return []

    def why_not_running(self) -> str:
        """Why the recorded container does not count as running - said plainly, it is the lesson of PID reuse."""
        identity = container.recorded_process(self.recorded_state)
        if identity is None and (self.recorded_state or {}).get('launching'):
            return 'a run that was starting it was interrupted, and no container of that start runs'
        if identity is None:
            return 'no container was recorded' if self.recorded_state is None else 'it was stopped'
        stat = process.read_proc_stat(identity.pid)
        if stat is None:
            return f'its process (PID {identity.pid}) has ended'
        if stat.start_time != identity.start_time:
            return (f'PID {identity.pid} now belongs to another process ({stat.comm}, started later), '
                    f'which was left alone')
        return f'its process (PID {identity.pid}) is a zombie'

    def found_note(self) -> str:
        """Said of a container found without a record: which run started it and how it was recognised."""
        if self.launched is None:
            return ''
        return (f'PID {self.launched.pid1.pid} was started by an interrupted run that did not record it, and was found '
                f'by its launch command and log file; ')

    def state_started(self):
        if self.running:
            changes = container.spec_changes(self.recorded, self.desired)
            problem = None if changes else \
                self.live_isolation_problem() or container.root_remounted_problem(self.identity.pid, self.desired.rootfs)
            if not changes and not problem:
                if self.launched is not None:
                    self.reason = f'{self.found_note()}it runs with this spec'
                    if not self.module.check_mode:
                        self.track()
                    return 'track'
                self.reason = f'it runs with this spec (PID {self.identity.pid})'
                return None
            self.reason = self.found_note() + (f'{", ".join(changes)} changed' if changes else problem)
            self.check_kernel_allows()
            if not self.module.check_mode:
                self.stop()
                self.start()
            return 'restart'
        self.reason = self.why_not_running()
        self.plan_adoption()
        replaced = '; '.join(f'PID {found.rooted.pid} {why}' for found, why in self.to_replace)
        if self.adopted is not None:
            self.identity = self.adopted.rooted.identity
            self.reason = (f'{self.reason}, and PID {self.identity.pid}, started by hand, matches the spec'
                           + (f'; replaced: {replaced}' if replaced else ''))
            self.replace_found()
            if not self.module.check_mode:
                self.adopt()
            return 'adopt'
        self.check_kernel_allows()
        if replaced:
            self.reason += f'; replaced, started by hand: {replaced}'
        self.replace_found()
        if not self.module.check_mode:
            self.start()
        return 'replace' if self.to_replace else 'start'

    def state_restarted(self):
        self.check_kernel_allows()
        action = 'restart' if self.running else 'start'
        self.reason = self.found_note() + 'state=restarted' if self.running else self.why_not_running()
        if not self.module.check_mode:
            if self.running:
                self.stop()
            self.start()
        return action

    def by_hand_note(self) -> str:
        if not self.stopped_by_hand:
            return ''
        return '; stopped, started by hand on rootfs: ' + ', '.join(
            f"PID {found['pid']} ({cmd.shell_join(found['command'])})" for found in self.stopped_by_hand)

    def state_stopped(self):
        if not self.running:
            self.reason = self.why_not_running()
            return self.clean_leftovers()
        self.reason = f'{self.found_note()}PID {self.identity.pid} was running'
        if not self.module.check_mode:
            self.stop()
        return 'stop'

    def state_absent(self):
        self.stop_by_hand()
        if not (self.running or self.our_files() or self.state_dir_removable()):
            self.reason = f'nothing is recorded in {self.state_dir}' + self.by_hand_note()
            return 'remove' if self.stopped_by_hand else None
        if self.state_file_error:
            self.warn(f'{self.state_file_error}; no process was signalled, since none can be identified.')
        self.reason = (f'{self.found_note()}{self.state_dir}, and the process running as PID {self.identity.pid}'
                       if self.running else f'{self.state_dir} (no process was running)') + self.by_hand_note()
        if not self.module.check_mode:
            if self.running:
                self.stop()
            else:
                self.remove_cgroup()
            self.remove()
        return 'remove'

    def clean_leftovers(self):
        """No container runs, but the cgroups of a killed one remain: remove them."""
        leftovers = self.cgroup_leftovers()
        if not leftovers:
            return None
        self.reason += f'; its cgroups were left behind ({", ".join(leftovers)})'
        if not self.module.check_mode:
            self.remove_cgroup()
        return 'clean'


def add_diffs(result: dict, extra, first: bool = False):
    """A diff (or a list of them) of a step of the container's run, before or after the container's own (--diff)."""
    if extra is None or 'diff' not in result:
        return
    extras = extra if isinstance(extra, list) else [extra]
    current = result['diff'] if isinstance(result['diff'], list) else [result['diff']]
    result['diff'] = extras + current if first else current + extras


def recorded_cgroup(state: dict | None):
    """The cgroups a state file records (cgroups.Plan), or None; a record not written by cgroups.py is ignored."""
    data = (state or {}).get('cgroup')
    return cgroups.Plan.from_dict(data) if isinstance(data, dict) else None


def describe(action, reason: str, check_mode: bool) -> str:
    """The task's message: what was done (or would be, in check mode) and why."""
    if action is None:
        return f'Nothing to do: {reason}.'
    done = {'start': 'started', 'restart': 'restarted', 'track': 'tracked again', 'stop': 'stopped', 'remove': 'removed',
            'clean': 'cleaned up', 'adopt': 'adopted', 'replace': 'started, replacing what was started by hand'}[action]
    return f'{"Would be " + done if check_mode else done.capitalize()}: {reason}.'


def exit_explanation(code) -> str:
    """unshare --fork exits as its child did: the container's exit code, or the signal that killed it."""
    if code is None:
        return ''
    if code < 0:
        return f' (killed by {signal.Signals(-code).name})'
    if code == 127:
        return ' (exit code 127: a program was not found)'
    return f' (exit code {code})'


def containers_problems(params) -> list[str]:
    """Problems of O(containers) seen from the request alone: each item's, named containers[N].option, then what the
    items ask together - each container once (its name, its state directory). Pure."""
    items = params['containers']
    problems = []
    if params['lock_timeout'] < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    if not items:
        problems.append('containers is empty: list at least one container (name, rootfs, command), as the services '
                        'of a compose file.')
    seen_names, seen_dirs = {}, {}
    for index, item in enumerate(items):
        option = f'containers[{index}]'
        item_problems = request_problems(item, prefix=f'{option}.')
        problems.extend(item_problems)
        if item['name'] in seen_names:
            problems.append(f'{option}.name "{item["name"]}" is the name of {seen_names[item["name"]]} again: list each '
                            f'container once.')
            continue
        seen_names[item['name']] = option
        if item_problems:
            continue
        state_dir = state_dir_of(item)
        if state_dir in seen_dirs:
            problems.append(f'{option}.state_dir {state_dir} is the state directory of {seen_dirs[state_dir]} too: each '
                            f'container needs its own.')
        seen_dirs.setdefault(state_dir, option)
    return problems + published_port_clashes(items)


def published_port_clashes(items) -> list[str]:
    """Two items publishing the same host port: the second attach would be refused after the first container started.
    Said before anything starts (and in check mode, whose attachments are each predicted alone)."""
    problems, published = [], []
    for index, item in enumerate(items):
        network = item.get('network')
        if network is None or item['state'] not in ('started', 'restarted'):
            continue
        ports = netdev.port_problems(f'containers[{index}].network.published_ports', network['published_ports'])[0]
        for port in ports:
            clash = next(((other, where) for other, where in published if other.clashes_with(port)), None)
            if clash:
                problems.append(f'containers[{index}].network.published_ports: {port} takes the host port of {clash[0]}, '
                                f'published by {clash[1]}: each host port is published once.')
        published += [(port, f'containers[{index}]') for port in ports]
    return problems


def item_label(index: int, name: str) -> str:
    return f'containers[{index}] ({name})'


def run_containers(module):
    """O(containers), as docker compose up: every item validated, every lock taken and every container read and
    checked before the first change; then each brought to its state, in order."""
    problems = containers_problems(module.params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    runs = [NsContainer(module, dict(item, lock_timeout=module.params['lock_timeout']),
                        label=f'{item_label(index, item["name"])}: ', prefix=f'containers[{index}].')
            for index, item in enumerate(module.params['containers'])]
    results = []
    current = None
    with contextlib.ExitStack() as locks:
        try:
            # Every lock in one order (by name), so that two runs with overlapping containers never wait for each other.
            for current in sorted(runs, key=lambda run: run.name):
                current.lock(locks)
            for current in runs:
                current.plan()
            for current in runs:
                results.append(current.act())
        except ContainerFailure as failure:
            module.fail_json(**containers_failure(runs.index(current), current.name, failure, results))
    diffs = []
    for result in results:
        diff = result.pop('diff', None)
        diffs.extend(diff if isinstance(diff, list) else [diff] if diff else [])
    changed = any(result['changed'] for result in results)
    summary = ' '.join(f'{result["name"]}: {result["msg"]}' for result in results)
    extra = {'diff': diffs} if diffs else {}
    module.exit_json(changed=changed, msg=summary, containers=results, **extra)


def containers_failure(index: int, name: str, failure: ContainerFailure, results: list) -> dict:
    """The failed task's result: which item failed and why, and what the items before it did (in check mode - would
    do)."""
    if results:
        done = ' '.join(f'{item_label(place, result["name"])}: {result["msg"]}' for place, result in enumerate(results))
        before = f'Before it: {done}'
    else:
        before = 'No container was changed before it.'
    failed = dict(failure.fields, name=name, failed=True, msg=failure.msg)
    changed = any(result['changed'] for result in results) or bool(failure.fields.get('changed'))
    return dict(msg=f'{item_label(index, name)}: {failure.msg} {before}', changed=changed, failed_index=index,
                containers=results + [failed], problems=[f'{item_label(index, name)}: {problem}'
                                                         for problem in failure.fields.get('problems', [])])


def run_container(module):
    try:
        result = NsContainer(module, module.params).run()
    except ContainerFailure as failure:
        module.fail_json(msg=failure.msg, **failure.fields)
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **constraints())
    if module.params['containers'] is None:
        run_container(module)
    else:
        run_containers(module)


if __name__ == '__main__':
    main()
