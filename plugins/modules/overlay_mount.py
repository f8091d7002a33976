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
    (file system type, every lower layer in order, upper and work directory, each requested option). When
    they are equal nothing is done. When they differ the overlay is unmounted and mounted again, because the
    kernel cannot change an overlay's layers with C(mount -o remount).
  - It never deletes anything inside the lower, upper or work directories. O(state=unmounted) leaves every
    directory and file in place.
  - Before touching anything it validates the request and says which option is wrong and why, including the
    conditions under which the kernel would only answer "wrong fs type, bad option".
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
      - Must be absolute, must not be C(/) or another system directory.
    type: path
    required: true
  lowerdirs:
    description:
      - The read-only layers, B(top layer first) - the order of C(lowerdir=top:...:bottom).
        A file in an earlier layer hides the same file in a later one.
      - Required when O(state=mounted) or when O(persist=true).
      - Without O(upperdir) the overlay is read-only and the kernel needs at least two lower layers.
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
      - The layer options C(lowerdir), C(upperdir) and C(workdir) are set by the options above, not here.
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
    type: path
    default: /etc/fstab
  create_dirs:
    description:
      - Create O(path), the lower, upper and work directories that do not exist yet (mode 0755).
      - With V(false), a missing directory is an error.
      - Directories created by a run whose mount then fails are removed again.
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
  description: What the module did (or, in check mode, would do), in order.
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
  description: The overlay found at O(path) before the task, as read from mountinfo, or null.
  returned: always
  type: dict
  sample:
    lowerdirs: [/overlay/lower2-file, /overlay/lower1-base]
    upperdir: /overlay/upper
    workdir: /overlay/work
    options: [rw, relatime, uuid=on]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import process

LAYER_OPTIONS = ('lowerdir', 'upperdir', 'workdir')

# File systems the kernel refuses as an overlay upper layer (no trusted xattrs / d_type, or overlay itself).
UNSUITABLE_UPPER_FSTYPES = frozenset(('overlay', 'nfs', 'nfs4', 'vfat', 'msdos', 'exfat', 'fuse', 'cifs', 'smb3', 'iso9660', 'squashfs'))

# Mount options that the kernel shows only when they differ from the overlay module's defaults,
# which it publishes in /sys/module/overlay/parameters.
OVERLAY_DEFAULT_PARAMETERS = {
    'index': 'index',
    'redirect_dir': 'redirect_dir',
    'metacopy': 'metacopy',
    'nfs_export': 'nfs_export',
    'xino': 'xino_auto',
}
OVERLAY_PARAMETERS_DIR = '/sys/module/overlay/parameters'

# Generic flags that appear among per-mount options and their opposites.
MOUNT_FLAG_DEFAULTS = {'rw': True, 'ro': False, 'relatime': True, 'suid': True, 'dev': True, 'exec': True, 'atime': True}


def argument_spec():
    return dict(
        path=dict(type='path', required=True),
        lowerdirs=dict(type='list', elements='path'),
        upperdir=dict(type='path'),
        workdir=dict(type='path'),
        options=dict(type='list', elements='str', default=[]),
        state=dict(type='str', choices=['mounted', 'unmounted'], default='mounted'),
        persist=dict(type='bool', default=False),
        fstab=dict(type='path', default='/etc/fstab'),
        create_dirs=dict(type='bool', default=True),
    )


def constraints():
    """What AnsibleModule checks for us: the layers of a mount, and upperdir with workdir."""
    return dict(
        required_if=[('state', 'mounted', ('lowerdirs',)), ('persist', True, ('lowerdirs',))],
        required_together=[('upperdir', 'workdir')],
    )


def desired_from_params(params):
    """The overlay asked for, with normalised paths (None for parts that were not given)."""
    return {
        'path': paths.normalize(params['path']),
        'lowerdirs': [paths.normalize(lower) for lower in params['lowerdirs'] or []],
        'upperdir': paths.normalize(params['upperdir']) if params['upperdir'] else None,
        'workdir': paths.normalize(params['workdir']) if params['workdir'] else None,
        'options': list(params['options']),
    }


def option_string(desired):
    pairs = [('lowerdir', ':'.join(desired['lowerdirs']))]
    if desired['upperdir']:
        pairs += [('upperdir', desired['upperdir']), ('workdir', desired['workdir'])]
    return ','.join([mountinfo.join_options(pairs)] + desired['options'])


def mount_argv(mount_bin, desired):
    return [mount_bin, '-t', 'overlay', 'overlay', '-o', option_string(desired), desired['path']]


def request_problems(params):
    """Problems visible from the request alone (no file system access). Pure, unit-tested."""
    problems = []
    want_layers = params['state'] == 'mounted' or params['persist']
    problem = paths.overlay_path_problem('path', params['path']) or paths.system_directory_problem('path', params['path'])
    if problem:
        problems.append(problem)
    lowerdirs = params['lowerdirs'] or []
    # AnsibleModule's required_if and required_together count an option given as null or [] as given.
    if want_layers and not lowerdirs:
        problems.append('lowerdirs is empty: mounting (or persisting) an overlay needs at least one lower layer, top layer first.')
    for index, lower in enumerate(lowerdirs):
        problem = paths.overlay_path_problem(f'lowerdirs[{index}]', lower)
        if problem:
            problems.append(problem)
    normalized_lowers = [paths.normalize(lower) for lower in lowerdirs]
    for lower in sorted({lower for lower in normalized_lowers if normalized_lowers.count(lower) > 1}):
        problems.append(f'lowerdirs lists "{lower}" more than once: each layer may appear only once.')
    upper, work = params['upperdir'], params['workdir']
    if bool(upper) != bool(work):
        given, missing = ('upperdir', 'workdir') if upper else ('workdir', 'upperdir')
        problems.append(f'{given} is set but {missing} is empty: a writable overlay needs both an upper layer and an '
                        f'empty work directory on the same file system (leave both out for a read-only overlay).')
    for option in ('upperdir', 'workdir'):
        if params[option] is not None:
            problem = paths.overlay_path_problem(option, params[option])
            if problem:
                problems.append(problem)
    if want_layers and not upper and not work and len(lowerdirs) == 1:
        problems.append('a read-only overlay (no upperdir) needs at least two lowerdirs; add an upperdir and workdir '
                        'to make it writable, or a second lower layer.')
    if problems:
        return problems
    path = paths.normalize(params['path'])
    if upper and work:
        upper, work = paths.normalize(upper), paths.normalize(work)
        if paths.is_inside(work, upper) or paths.is_inside(upper, work):
            problems.append(f'upperdir "{upper}" and workdir "{work}" are inside one another: the kernel needs them as '
                            f'separate directories side by side, e.g. /overlay/upper and /overlay/work.')
        for option, directory in (('upperdir', upper), ('workdir', work)):
            if paths.is_inside(directory, path):
                problems.append(f'{option} "{directory}" is inside path "{path}": a layer cannot live inside its own merged view.')
            for lower in normalized_lowers:
                if paths.is_inside(directory, lower) or paths.is_inside(lower, directory):
                    problems.append(f'{option} "{directory}" and lower layer "{lower}" overlap: layers must be separate directories.')
    for lower in normalized_lowers:
        if paths.is_inside(lower, path) or paths.is_inside(path, lower):
            problems.append(f'lower layer "{lower}" and path "{path}" overlap: the merged directory must be a directory of its own.')
    for option in params['options']:
        key = option.partition('=')[0]
        if not option or ',' in option:
            problems.append(f'options item {option!r} must be a single mount option such as "index=off" (one per list item, no commas).')
        elif key in LAYER_OPTIONS:
            problems.append(f'options item "{option}" sets a layer: use the {key}s/{key} option of this module instead.' if key == 'lowerdir'
                            else f'options item "{option}" sets a layer: use the {key} option of this module instead.')
    return problems


def nearest_existing(path):
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def filesystem_problems(desired, create_dirs, mounts):
    """Problems that need a look at the file system and at mountinfo."""
    problems = []
    for index, lower in enumerate(desired['lowerdirs']):
        if os.path.lexists(lower) and not os.path.isdir(lower):
            problems.append(f'lowerdirs[{index}] "{lower}" exists but is not a directory.')
        elif not os.path.exists(lower) and not create_dirs:
            problems.append(f'lowerdirs[{index}] "{lower}" does not exist and create_dirs is false: create the layer '
                            f'directory first or set create_dirs: true.')
    for option in ('path', 'upperdir', 'workdir'):
        directory = desired[option]
        if not directory:
            continue
        if os.path.lexists(directory) and not os.path.isdir(directory):
            problems.append(f'{option} "{directory}" exists but is not a directory.')
        elif not os.path.exists(directory) and not create_dirs:
            problems.append(f'{option} "{directory}" does not exist and create_dirs is false.')
    if desired['upperdir']:
        upper_mount = mountinfo.mount_containing(os.path.realpath(nearest_existing(desired['upperdir'])), mounts)
        work_mount = mountinfo.mount_containing(os.path.realpath(nearest_existing(desired['workdir'])), mounts)
        if upper_mount and upper_mount.fstype in UNSUITABLE_UPPER_FSTYPES:
            problems.append(
                f'upperdir "{desired["upperdir"]}" is on a {upper_mount.fstype} file system (mounted at {upper_mount.mount_point}), '
                f'which the kernel refuses as an overlay upper layer ("not supported as upperdir"). Put the upper and work '
                f'directories on a plain directory of an ext4/xfs file system or on a tmpfs, e.g. mount -t tmpfs tmpfs /overlay.')
        if upper_mount and work_mount and upper_mount.mount_id != work_mount.mount_id:
            problems.append(
                f'upperdir "{desired["upperdir"]}" (on {upper_mount.mount_point}) and workdir "{desired["workdir"]}" '
                f'(on {work_mount.mount_point}) are on different mounts: the kernel needs both on the same file system mount.')
        if desired['workdir'] and os.path.isdir(desired['workdir']) and _foreign_work_content(desired['workdir']):
            problems.append(f'workdir "{desired["workdir"]}" is not empty: it must be an empty directory reserved for '
                            f'overlayfs (only its own "work" and "index" entries may be there).')
    return problems


def _foreign_work_content(workdir):
    return [name for name in os.listdir(workdir) if name not in ('work', 'index')]


def overlay_from_entry(entry):
    """The layer description of a live overlay mount, with its other options."""
    extra = [key if value is None else f'{key}={value}'
             for key, value in entry.mount_options + entry.super_options if key not in LAYER_OPTIONS]
    return dict(mountinfo.overlay_layers(entry), options=list(dict.fromkeys(extra)))


def _real(path):
    return os.path.realpath(path) if path else path


def kernel_default(option_key, parameters_dir=OVERLAY_PARAMETERS_DIR):
    """The overlay module's default for an option the kernel hides when unchanged (None if unknown)."""
    parameter = OVERLAY_DEFAULT_PARAMETERS.get(option_key)
    if not parameter:
        return None
    try:
        with open(os.path.join(parameters_dir, parameter), encoding='ascii') as handle:
            value = handle.read().strip()
    except OSError:
        return None
    return {'Y': 'on', 'N': 'off'}.get(value, value)


def option_satisfied(option, entry, default_lookup=kernel_default):
    """Whether one requested option holds on the live mount ``entry``."""
    key, sep, value = option.partition('=')
    shown = {}
    for shown_key, shown_value in entry.mount_options + entry.super_options:
        shown[shown_key] = shown_value
    if sep:
        if key in shown:
            return shown[key] == value
        return default_lookup(key) == value
    if key in shown:
        return True
    if key.startswith('no') and key[2:] in MOUNT_FLAG_DEFAULTS:
        return key[2:] not in shown and not MOUNT_FLAG_DEFAULTS[key[2:]]
    return False


def differences(desired, entry, default_lookup=kernel_default):
    """Human-readable differences between the overlay asked for and the live mount ``entry``."""
    if entry is None:
        return ['not mounted']
    if entry.fstype != 'overlay':
        return [f'a {entry.fstype} file system is mounted there, not an overlay']
    current = overlay_from_entry(entry)
    found = []
    if [_real(lower) for lower in current['lowerdirs']] != [_real(lower) for lower in desired['lowerdirs']]:
        found.append(f"lowerdirs are {current['lowerdirs']}, want {desired['lowerdirs']}")
    for option in ('upperdir', 'workdir'):
        if _real(current[option]) != _real(desired[option]):
            found.append(f'{option} is {current[option]}, want {desired[option]}')
    for option in desired['options']:
        if not option_satisfied(option, entry, default_lookup):
            found.append(f'option {option} is not in effect')
    return found


def fstab_line(desired):
    def escape(text):
        return text.replace('\\', '\\134').replace(' ', '\\040').replace('\t', '\\011')
    return f"overlay {escape(desired['path'])} overlay {escape(option_string(desired))} 0 0"


def fstab_lines_for(lines, path):
    """Indexes of overlay lines in fstab ``lines`` that mount at ``path``."""
    found = []
    for index, line in enumerate(lines):
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith('#') and fields[2] == 'overlay' and mountinfo.unescape(fields[1]) == path:
            found.append(index)
    return found


def desired_fstab(text, desired, persist):
    """The fstab content after the task: exactly one matching line, or none, for ``desired['path']``."""
    lines = text.splitlines()
    ours = fstab_lines_for(lines, desired['path'])
    if persist:
        wanted = fstab_line(desired)
        if len(ours) == 1 and lines[ours[0]].split() == wanted.split():
            return text
        kept = [line for index, line in enumerate(lines) if index not in ours[1:]]
        if ours:
            kept[ours[0]] = wanted
        else:
            kept.append(wanted)
        return '\n'.join(kept) + '\n'
    if not ours:
        return text
    return '\n'.join(line for index, line in enumerate(lines) if index not in ours) + ('\n' if len(lines) > len(ours) else '')


class OverlayMount:
    """read current state -> compare with desired -> act only on the difference (not in check mode)."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.desired = desired_from_params(module.params)
        self.actions = []
        self.created_dirs = []
        self.diffs = []

    def fail(self, msg, **kwargs):
        self.rollback()
        self.module.fail_json(msg=msg, **self.result(mounted=None), **kwargs)

    def rollback(self):
        for directory in reversed(self.created_dirs):
            try:
                os.rmdir(directory)
            except OSError:
                pass
        self.created_dirs = []

    def visible_overlay(self):
        entry = mountinfo.find_mount(self.desired['path'])
        if entry is None:
            entry = mountinfo.find_mount(os.path.realpath(self.desired['path']))
        return entry

    def result(self, mounted, current=None):
        desired = self.desired
        return dict(
            path=desired['path'], lowerdirs=desired['lowerdirs'], upperdir=desired['upperdir'], workdir=desired['workdir'],
            options=desired['options'], mounted=mounted, actions=self.actions, current=current,
            command=cmd.shell_join(mount_argv('mount', desired)) if desired['lowerdirs'] else cmd.shell_join(['umount', desired['path']]),
        )

    def validate(self):
        problems = request_problems(self.params)
        if not problems and self.params['state'] == 'mounted':
            problems = filesystem_problems(self.desired, self.params['create_dirs'], mountinfo.read_mountinfo())
        if problems:
            self.module.fail_json(msg=' '.join(problems), problems=problems)

    def ensure_dirs(self):
        desired = self.desired
        for directory in desired['lowerdirs'] + [desired['upperdir'], desired['workdir'], desired['path']]:
            if directory and not os.path.isdir(directory):
                self.actions.append(f'create directory {directory}')
                if not self.module.check_mode:
                    self._makedirs(directory)

    def _makedirs(self, directory):
        for new_dir in paths.missing_directories(directory):
            try:
                os.mkdir(new_dir, 0o755)
            except OSError as error:
                self.fail(f'Could not create directory {new_dir}: {error.strerror}')
            self.created_dirs.append(new_dir)

    def unmount(self, reason):
        path = self.desired['path']
        self.actions.append(f'unmount ({reason})')
        if self.module.check_mode:
            return
        submounts = mountinfo.mounts_below(path)
        holders = process.processes_using(path)

        def who_holds_it():
            detail = []
            if holders:
                detail.append(f'used by {process.describe_holders(holders)}')
            if submounts:
                detail.append('with mounts inside it: ' + ', '.join(entry.mount_point for entry in submounts))
            return ('; '.join(detail) + '. Stop those processes (for a container: unboxed.lab.ns_container state=stopped) '
                    'or unmount what is inside first.') if detail else None

        cmd.run_checked(self.module, [self.module.get_bin_path('umount', required=True), path], f'unmount {path}',
                        explain=who_holds_it, fail=lambda **result: self.fail(holders=holders, **result))

    def mount(self):
        self.actions.append('mount')
        if self.module.check_mode:
            return
        cmd.run_checked(self.module, mount_argv(self.module.get_bin_path('mount', required=True), self.desired),
                        f'mount the overlay at {self.desired["path"]}', explain=self.kernel_reason, fail=self.fail)

    def kernel_reason(self):
        """overlayfs explains a refused mount only in the kernel log; its last word, if readable."""
        dmesg = self.module.get_bin_path('dmesg')
        if not dmesg:
            return None
        rc, stdout, _stderr = cmd.run(self.module, [dmesg])
        if rc != 0:
            return None
        reasons = [line.split('overlayfs:', 1)[1].strip() for line in stdout.splitlines() if 'overlayfs:' in line]
        return f'The kernel said: "{reasons[-1]}".' if reasons else None

    def ensure_fstab(self):
        fstab = self.params['fstab']
        persist = self.params['persist']
        try:
            with open(fstab, encoding='utf-8') as handle:
                before = handle.read()
        except FileNotFoundError:
            if not persist:
                return
            before = ''
        after = desired_fstab(before, self.desired, persist)
        if after == before:
            return
        self.actions.append(f'{"update" if persist else "remove overlay line for " + self.desired["path"] + " from"} {fstab}')
        self.diffs.append({'before': before, 'after': after, 'before_header': fstab, 'after_header': fstab})
        if not self.module.check_mode:
            temp = f'{fstab}.unboxed.tmp'
            with open(temp, 'w', encoding='utf-8') as handle:
                handle.write(after)
            self.module.atomic_move(temp, fstab)

    def diff_view(self, current, entry):
        """The live overlay as the diff shows it: layers, and which of the requested options are in effect
        (the kernel lists many options nobody asked for; showing those would make every diff noisy)."""
        if not current:
            return {'mounted': False}
        view = {key: current[key] for key in ('lowerdirs', 'upperdir', 'workdir')}
        view['options'] = [option for option in self.desired['options'] if option_satisfied(option, entry)]
        view['mounted'] = True
        return view

    def run(self):
        self.validate()
        state = self.params['state']
        entry = self.visible_overlay()
        current = overlay_from_entry(entry) if entry is not None and entry.fstype == 'overlay' else None
        if entry is not None and entry.fstype != 'overlay':
            self.module.fail_json(
                msg=f'{self.desired["path"]} is a mount point of a {entry.fstype} file system ({entry.source}), not an '
                    f'overlay: unboxed.lab.overlay_mount will not stack on it or unmount it. Unmount it first or choose another path.',
                **self.result(mounted=False))
        mount_diff_before = self.diff_view(current, entry)

        if state == 'mounted':
            found = differences(self.desired, entry)
            self.ensure_dirs()
            if current and found:
                self.unmount('; '.join(found))
            if found:
                self.mount()
            mounted = True
            mount_diff_after = {'mounted': True, 'lowerdirs': self.desired['lowerdirs'], 'upperdir': self.desired['upperdir'],
                                'workdir': self.desired['workdir'], 'options': self.desired['options']}
            if not found:
                mount_diff_after = mount_diff_before
        else:
            while entry is not None and entry.fstype == 'overlay':
                self.unmount('state=unmounted')
                if self.module.check_mode:
                    break
                entry = self.visible_overlay()
            mounted = False
            mount_diff_after = {'mounted': False}
        self.ensure_fstab()

        changed = bool(self.actions)
        if mount_diff_before != mount_diff_after:
            self.diffs.insert(0, {'before': mount_diff_before, 'after': mount_diff_after,
                                  'before_header': f'overlay at {self.desired["path"]}', 'after_header': f'overlay at {self.desired["path"]}'})
        result = self.result(mounted=mounted, current=current)
        result['changed'] = changed
        if self.module._diff:
            result['diff'] = self.diffs or {'before': mount_diff_before, 'after': mount_diff_after}
        self.module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **constraints())
    OverlayMount(module).run()


if __name__ == '__main__':
    main()
