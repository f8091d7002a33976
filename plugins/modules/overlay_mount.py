#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: overlay_mount
short_description: Mount an OverlayFS union of layer directories, the way Docker builds a container's root
version_added: 0.1.0
description:
  - Mounts an C(overlay) file system at O(path) from a stack of read-only lower layers, plus an optional
    writable upper layer and its work directory - what Docker's overlay2 storage driver does for every
    container, and what C(mount -t overlay overlay -o lowerdir=...,upperdir=...,workdir=... merged) does by hand.
  - The module reads the live mount from C(/proc/self/mountinfo) and compares everything with what was asked
    (file system type, every lower layer in order, upper and work directory, each requested option, and the
    generic flags - read-write or read-only, C(nosuid), C(nodev), C(noexec), C(nodiratime), C(nosymfollow),
    the access time mode - also when nobody asked for them). When they are equal nothing is done. When only the
    generic flags differ (an overlay remounted read-only behind the module's back) it remounts it in place; when
    the kernel will not, or when layers or overlay options differ, the overlay is unmounted and mounted again,
    because the kernel cannot change an overlay's layers with C(mount -o remount).
  - After every mount and remount it reads the live mount back and fails - undoing the mount it just made - when
    the kernel mounted something other than asked. It never reports success on a mount that differs.
  - It never mounts an overlay on an upper or work directory that another live overlay still uses, at another
    mount point or in any mount namespace a process lives in (a container started with C(unshare --mount) keeps
    its copy of an overlay that was unmounted on the host). It names the process holding it instead.
  - Runs on the same mount point (or the same upper directory) wait for each other, up to O(lock_timeout).
  - It never deletes anything inside the lower, upper or work directories. O(state=unmounted) leaves every
    directory and file in place.
  - Before touching anything it validates the request and says which option is wrong and why, including the
    conditions under which the kernel would only answer "wrong fs type, bad option", paths that lead into a
    system directory through a symbolic link, characters that mount(8) or overlayfs would read as syntax, an
    option string longer than mount(2) takes (one page), and an O(fstab) it could not write. A failure after a
    change undoes that change (the mount it made, the directories it created).
  - A refused mount is explained with what overlayfs logged about this very mount in the kernel log (read from
    C(/dev/kmsg) after the mount began), or with the sentence that the kernel logged no reason.
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  path:
    description:
      - The merged directory, where the union becomes visible (C(/overlay/merged) in the talk).
      - Must be absolute, must not be C(/) or another system directory, nor lead into one through a symbolic link.
    type: path
    required: true
  lowerdirs:
    description:
      - The read-only layers, B(top layer first) - the order of C(lowerdir=top:...:bottom).
        A file in an earlier layer hides the same file in a later one.
      - Required when O(state=mounted) or when O(persist=true).
      - Without O(upperdir) the overlay is read-only and the kernel needs at least two lower layers.
      - A layer path may not contain C(:), C(,) (the option syntax), C(\) (overlayfs reads it as an escape and would
        mount another directory) or C(") (mount(8) reads it as a quote), and may not lead into a system directory.
      - All layer paths and options together must fit in one memory page (4095 bytes on x86), the most mount(2) takes.
        Where mount(8) uses the new mount API (util-linux 2.39 and later, C(fd-based-mount) in C(mount -V)), the whole
        C(lowerdir=) list, like every other option value, must fit in 255 bytes.
    type: list
    elements: path
  upperdir:
    description:
      - The writable layer. Every write in O(path) lands here (copy-up).
      - Must be given together with O(workdir), on the same mount, and not inside it.
      - Cannot itself live on an overlay (the kernel refuses such an upper layer).
    type: path
  workdir:
    description:
      - Scratch directory the kernel needs for atomic copy-up. Must be empty, on the same mount as
        O(upperdir), and given together with it.
    type: path
  options:
    description:
      - Further mount options, one per item, for example C(index=off), C(redirect_dir=on), C(ro), C(noatime).
      - The layer options C(lowerdir), C(lowerdir+), C(datadir+), C(upperdir) and C(workdir) are set by the options above, not here.
      - Generic flags (C(ro), C(nosuid), C(noatime)...) left out mean the kernel's defaults (C(rw), C(suid), C(relatime)...),
        and a live mount that differs from them is remounted.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(mounted) makes sure the overlay is mounted exactly as described, mounting or re-mounting it.
      - V(unmounted) makes sure no overlay is mounted at O(path). Directories and their content stay.
    type: str
    choices: [mounted, unmounted]
    default: mounted
  persist:
    description:
      - V(true) also keeps exactly one matching line for O(path) in O(fstab), so the overlay comes back at boot.
      - V(false) removes overlay lines for O(path) from O(fstab) again. Lines of other file systems are never touched.
    type: bool
    default: false
  fstab:
    description:
      - The file O(persist) acts on. Only useful to point tests or chroots elsewhere.
      - Must be an absolute path to a regular file (or to a file to create in an existing directory); this is checked
        before the overlay is mounted.
    type: path
    default: /etc/fstab
  lock_timeout:
    description:
      - Seconds to wait for another run working on the same mount point or upper directory before failing.
      - The lock is an C(flock) on a file in C(/run/unboxed/locks), released when its holder ends (even killed).
        Check mode takes no lock.
    type: int
    default: 60
  create_dirs:
    description:
      - Create O(path), the lower, upper and work directories that do not exist yet (mode 0755).
      - With V(false), a missing directory is an error.
      - Directories created by a run whose mount then fails (or whose O(fstab) cannot be written) are removed again.
    type: bool
    default: true
notes:
  - Requires root (mounting is a privileged operation) and a kernel with overlay support.
  - Mounts are per mount namespace. A mount made inside a container's own mount namespace is not visible here.
  - The returned RV(command) is the equivalent shell command, for reading and copying by hand; the module
    itself never runs a shell.
seealso:
  - name: OverlayFS kernel documentation
    description: The reference for layers, copy-up, whiteouts and every mount option.
    link: https://docs.kernel.org/filesystems/overlayfs.html
  - module: unboxed.lab.chroot_exec
  - module: unboxed.lab.ns_container
"""

EXAMPLES = r"""
- name: Mount the talk's container root from two layers, as docker would
  unboxed.lab.overlay_mount:
    path: /overlay/merged
    lowerdirs:
      - /overlay/lower2-file   # RUN echo "Texto" > /file01.txt
      - /overlay/lower1-base   # FROM debian
    upperdir: /overlay/upper
    workdir: /overlay/work

- name: Mount a read-only union (no upper layer needs two lower layers)
  unboxed.lab.overlay_mount:
    path: /srv/readonly
    lowerdirs: [/srv/layers/app, /srv/layers/base]

- name: Keep the overlay across reboots and turn off the inode index
  unboxed.lab.overlay_mount:
    path: /overlay/merged
    lowerdirs: [/overlay/lower2-file, /overlay/lower1-base]
    upperdir: /overlay/upper
    workdir: /overlay/work
    options: [index=off]
    persist: true

- name: Unmount the overlay; every layer keeps its files
  unboxed.lab.overlay_mount:
    path: /overlay/merged
    state: unmounted
"""

RETURN = r"""
path:
  description: The merged directory.
  returned: always
  type: str
  sample: /overlay/merged
lowerdirs:
  description: The lower layers as mounted, top first.
  returned: always
  type: list
  elements: str
  sample: [/overlay/lower2-file, /overlay/lower1-base]
upperdir:
  description: The upper layer, or null for a read-only overlay.
  returned: always
  type: str
  sample: /overlay/upper
workdir:
  description: The work directory, or null for a read-only overlay.
  returned: always
  type: str
  sample: /overlay/work
options:
  description: The extra mount options requested.
  returned: always
  type: list
  elements: str
  sample: [index=off]
mounted:
  description: Whether an overlay is mounted at O(path) after the task (in check mode, after the run it predicts).
  returned: always
  type: bool
  sample: true
actions:
  description:
    - What the module did (or, in check mode, would do), in order.
    - C(remount (...)) heals the generic flags in place; C(unmount (...)) and C(mount) make a new overlay.
  returned: always
  type: list
  elements: str
  sample: [create directory /overlay/upper, mount]
command:
  description: The equivalent shell command, as the talk typed it.
  returned: always
  type: str
  sample: mount -t overlay overlay -o lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work /overlay/merged
current:
  description:
    - The overlay found at O(path) before the task, as read from mountinfo, or null.
    - C(datadirs) lists data-only lower layers (mounted with C(datadir+) or after C(::)); this module never makes them.
  returned: always
  type: dict
  sample:
    lowerdirs: [/overlay/lower2-file, /overlay/lower1-base]
    upperdir: /overlay/upper
    workdir: /overlay/work
    datadirs: []
    options: [rw, relatime, uuid=on]
problems:
  description: Every problem found in the request or on the host, when the task failed before changing anything.
  returned: failure
  type: list
  elements: str
  sample: ['lowerdirs[0] "/srv/a\\b" contains a backslash, which overlayfs reads as an escape.']
holders:
  description: The processes that kept the overlay busy, when an unmount failed.
  returned: failure
  type: list
  elements: dict
  sample: [{pid: 4242, comm: tail, uses: [cwd]}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import overlay


def main():
    module = AnsibleModule(argument_spec=overlay.argument_spec(), supports_check_mode=True, **overlay.constraints())
    try:
        result = overlay.Overlay(module, module.params).run()
    except overlay.OverlayError as error:
        module.fail_json(msg=error.msg, **error.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
