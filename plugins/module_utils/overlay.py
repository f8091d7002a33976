# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An OverlayFS union of layer directories, mounted the way Docker's overlay2 driver mounts a container's root: what
overlay_mount does, and what ns_container's ``overlay`` option does in the container's own run (``docker run``
mounts the container's layers before it starts it), one code for both.

``Overlay(module, params).run()`` validates, reads the live mount, compares, changes only the difference unless in
check mode (under the ``overlay`` lock, taken only in a real run) and returns the result dict; a failure raises
OverlayError with the message and the result so far (after undoing what the run changed), for the caller to report
with its own context. The pure parts (validation, option strings, comparison, fstab lines) are plain functions.
"""

from __future__ import annotations

import contextlib
import errno
import os
import copy
import re

from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import paths
from ansible_collections.unboxed.lab.plugins.module_utils import process

# Options that name layers: this module sets them from lowerdirs, upperdir and workdir, never from ``options``.
LAYER_OPTIONS = ('lowerdir', 'upperdir', 'workdir', 'lowerdir+', 'datadir+')

# Characters that mount(8) or overlayfs read as syntax inside a layer path, beyond the ":" and "," paths.py refuses:
# overlayfs takes "\" as an escape (a lowerdir "/a\1" mounts "/a1" while mountinfo still shows "/a\1"), and
# libmount takes '"' as a quote (an unmatched one swallows the options after it).
KERNEL_REINTERPRETED = {
    '\\': ('a backslash', 'overlayfs reads "\\" in a layer path as an escape and would mount a different directory'),
    '"': ('a double quote', 'mount(8) reads \'"\' in an option as a quote and would split the options elsewhere'),
}

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

# Per-mount flags (and the superblock's ro) compared with the request even when nobody asked for them, and healed
# with a remount: a mount made read-only, nosuid, noexec... behind the module's back is not the mount it made.
SWITCH_FLAGS = ('suid', 'dev', 'exec', 'diratime', 'symfollow')
ATIME_FLAGS = {'noatime': 'noatime', 'strictatime': 'strictatime', 'relatime': 'relatime',
               'atime': 'relatime', 'norelatime': None, 'nostrictatime': 'relatime'}
GENERIC_FLAG_OPTIONS = frozenset(('ro', 'rw') + SWITCH_FLAGS + tuple('no' + flag for flag in SWITCH_FLAGS) + tuple(ATIME_FLAGS))

KMSG_PATH = '/dev/kmsg'
_QUOTED_PATH = re.compile(r"'(/[^']*)'")


# The overlay of a container's root: overlay_mount's, and the suboptions of ns_container's ``overlay``. The mount
# point, the state, fstab and the lock are the calling module's own options.
OPTION_SPEC = dict(
    lowerdirs=dict(type='list', elements='path'),
    upperdir=dict(type='path'),
    workdir=dict(type='path'),
    options=dict(type='list', elements='str', default=[]),
    create_dirs=dict(type='bool', default=True),
)


def argument_spec() -> dict:
    """overlay_mount's options: the mount point, the overlay's options, and what only the module has."""
    return dict(
        path=dict(type='path', required=True),
        **copy.deepcopy(OPTION_SPEC),
        state=dict(type='str', choices=['mounted', 'unmounted'], default='mounted'),
        persist=dict(type='bool', default=False),
        fstab=dict(type='path', default='/etc/fstab'),
        lock_timeout=dict(type='int', default=60),
    )


def constraints() -> dict:
    """What AnsibleModule checks for overlay_mount: the layers of a mount, and upperdir with workdir
    (request_problems checks the same for a caller without them)."""
    return dict(
        required_if=[('state', 'mounted', ('lowerdirs',)), ('persist', True, ('lowerdirs',))],
        required_together=[('upperdir', 'workdir')],
    )


def with_defaults(params: dict) -> dict:
    """``params`` with every option it lacks, or gives as None, at its argument_spec default (a caller may pass the
    mount point and the overlay's options only). ``path`` has no default."""
    defaults = {option: copy.deepcopy(spec.get('default')) for option, spec in argument_spec().items()}
    return dict(defaults, **{option: value for option, value in params.items() if value is not None})


class OverlayError(Exception):
    """An overlay that cannot be mounted or read: ``msg`` for a student, ``result`` the result dict so far (path,
    layers, actions, command, and problems or holders where there are), to report as
    ``fail_json(msg=error.msg, **error.result)``. What the run changed was undone before it was raised, except what
    ``msg`` says could not be."""

    def __init__(self, msg: str, result: dict):
        super().__init__(msg)
        self.msg = msg
        self.result = {key: value for key, value in result.items() if key != 'msg'}


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


def mount_data_limit():
    """The longest option string mount(2) passes on whole: one page, less its terminating NUL. The kernel
    cuts a longer one without an error, which mounts other layers than asked, or none upper."""
    return os.sysconf('SC_PAGE_SIZE') - 1


# mount(8) of util-linux 2.39 and later ("fd-based-mount" in mount -V) hands each option to the kernel with
# fsconfig(2), which takes at most 255 bytes per value and fails a longer one with only "bad option".
FSCONFIG_VALUE_LIMIT = 255


def long_option_values(desired):
    """(option, bytes) for each option value of the mount longer than fsconfig(2) takes."""
    values = [('lowerdir', ':'.join(desired['lowerdirs'])), ('upperdir', desired['upperdir']), ('workdir', desired['workdir'])]
    values += [tuple(option.split('=', 1)) for option in desired['options'] if '=' in option]
    return [(key, len(value.encode('utf-8', 'surrogateescape'))) for key, value in values
            if value and len(value.encode('utf-8', 'surrogateescape')) > FSCONFIG_VALUE_LIMIT]


def fsconfig_problems(desired, mount_version, prefix=''):
    """Option values the mount(8) in use cannot pass (``mount_version``: the output of mount -V)."""
    if 'fd-based-mount' not in mount_version:
        return []
    version = mount_version.strip().splitlines()[0] if mount_version.strip() else 'mount'
    return [f'{prefix + "lowerdirs make" if key == "lowerdir" else "the option makes"} a {key}= value of {length} bytes, '
            f'but this host\'s mount(8) ({version}) passes each option through the new mount API (fsconfig), which takes at '
            f'most {FSCONFIG_VALUE_LIMIT} bytes per value and otherwise fails with only "wrong fs type, bad option". Use '
            f'shorter directory names (e.g. /overlay/l1, /overlay/l2) or fewer layers.'
            for key, length in long_option_values(desired)]


def layer_path_problem(option, path):
    """A layer path that mount(8) and overlayfs would read as written, and no system directory."""
    problem = paths.overlay_path_problem(option, path)
    if problem:
        return problem
    for char, (name, why) in KERNEL_REINTERPRETED.items():
        if char in path:
            return f'{option} "{path}" contains {name}: {why}. Rename the directory.'
    return paths.system_directory_problem(option, path)


def request_problems(params, prefix='', data_limit=None, path_option='path'):
    """Problems visible from the request and from where its paths lead, before anything is touched. Unit-tested.

    The overlay's options (OPTION_SPEC's; one missing from ``params`` counts at its default) are named ``prefix`` +
    option, e.g. ``overlay.lowerdirs[0]``; the mount point ``path`` is named ``path_option`` (ns_container's
    ``rootfs``). The others (state, persist, fstab, lock_timeout) are the calling module's own options, named as
    they are and taken at their defaults when missing.
    """
    params = with_defaults(params)

    def name(option):
        return prefix + option

    problems = []
    want_layers = params['state'] == 'mounted' or params['persist']
    problem = (paths.overlay_path_problem(path_option, params['path'])
               or paths.system_directory_problem(path_option, params['path']))
    if problem:
        problems.append(problem)
    lowerdirs = params['lowerdirs'] or []
    # AnsibleModule's required_if and required_together count an option given as null or [] as given.
    if want_layers and not lowerdirs:
        problems.append(f'{name("lowerdirs")} is empty: mounting (or persisting) an overlay needs at least one lower layer, '
                        f'top layer first.')
    for index, lower in enumerate(lowerdirs):
        problem = layer_path_problem(f'{name("lowerdirs")}[{index}]', lower)
        if problem:
            problems.append(problem)
    normalized_lowers = [paths.normalize(lower) for lower in lowerdirs]
    for lower in sorted({lower for lower in normalized_lowers if normalized_lowers.count(lower) > 1}):
        problems.append(f'{name("lowerdirs")} lists "{lower}" more than once: each layer may appear only once.')
    upper, work = params['upperdir'], params['workdir']
    if bool(upper) != bool(work):
        given, missing = ('upperdir', 'workdir') if upper else ('workdir', 'upperdir')
        problems.append(f'{name(given)} is set but {name(missing)} is empty: a writable overlay needs both an upper layer '
                        f'and an empty work directory on the same file system (leave both out for a read-only overlay).')
    for option in ('upperdir', 'workdir'):
        if params[option] is not None:
            problem = layer_path_problem(name(option), params[option])
            if problem:
                problems.append(problem)
    if want_layers and not upper and not work and len(lowerdirs) == 1:
        problems.append(f'a read-only overlay (no {name("upperdir")}) needs at least two {name("lowerdirs")}; add an '
                        f'{name("upperdir")} and {name("workdir")} to make it writable, or a second lower layer.')
    problem = paths.absolute_path_problem('fstab', params['fstab'])
    if problem:
        problems.append(problem)
    if params['lock_timeout'] < 0:
        problems.append(f'lock_timeout is {params["lock_timeout"]}: give the seconds to wait for another run, 0 or more.')
    for option in params['options']:
        key = option.partition('=')[0]
        if not option or ',' in option:
            problems.append(f'{name("options")} item {option!r} must be a single mount option such as "index=off" '
                            f'(one per list item, no commas).')
        elif key in LAYER_OPTIONS:
            if prefix:
                instead = f'use {name("lowerdirs" if key == "lowerdir" else key)} instead.'
            else:
                instead = f'use the {key}s/{key} option of this module instead.' if key == 'lowerdir' else \
                    f'use the {key} option of this module instead.'
            problems.append(f'{name("options")} item "{option}" adds a layer: give every lower layer in {name("lowerdirs")} '
                            f'instead.' if key.endswith('+') else f'{name("options")} item "{option}" sets a layer: {instead}')
        elif any(char in option for char in KERNEL_REINTERPRETED):
            problems.append(f'{name("options")} item {option!r} contains a backslash or a double quote, which mount(8) and '
                            f'overlayfs read as escape and quote: write the option without them.')
    if problems:
        return problems
    path = paths.normalize(params['path'])
    if upper and work:
        upper, work = paths.normalize(upper), paths.normalize(work)
        if paths.is_inside(work, upper) or paths.is_inside(upper, work):
            problems.append(f'{name("upperdir")} "{upper}" and {name("workdir")} "{work}" are inside one another: the kernel '
                            f'needs them as separate directories side by side, e.g. /overlay/upper and /overlay/work.')
        for option, directory in (('upperdir', upper), ('workdir', work)):
            if paths.is_inside(directory, path):
                problems.append(f'{name(option)} "{directory}" is inside {path_option} "{path}": a layer cannot live inside '
                                f'its own merged view.')
            for lower in normalized_lowers:
                if paths.is_inside(directory, lower) or paths.is_inside(lower, directory):
                    problems.append(f'{name(option)} "{directory}" and lower layer "{lower}" overlap: layers must be '
                                    f'separate directories.')
    for lower in normalized_lowers:
        if paths.is_inside(lower, path) or paths.is_inside(path, lower):
            problems.append(f'lower layer "{lower}" and {path_option} "{path}" overlap: the merged directory must be a '
                            f'directory of its own.')
    if want_layers and not problems:
        data = option_string(desired_from_params(params)).encode('utf-8', 'surrogateescape')
        limit = mount_data_limit() if data_limit is None else data_limit
        if len(data) > limit:
            problems.append(
                f'{name("lowerdirs")}, {name("upperdir")}, {name("workdir")} and {name("options")} make a mount option '
                f'string of {len(data)} bytes, but mount(2) takes at most {limit} (one memory page) and silently cuts the '
                f'rest - the kernel would mount other layers than asked, or no upper layer at all. Use shorter directory '
                f'names (e.g. /overlay/l1, /overlay/l2) or fewer layers ({len(lowerdirs)} now).')
    return problems


def nearest_existing(path):
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def filesystem_problems(desired, create_dirs, mounts, prefix='', path_option='path', expect_layers=False):
    """Problems that need a look at the file system and at mountinfo. ``expect_layers``: a layer directory that does
    not exist yet is made by an earlier step of the same run (check mode only), so it is no problem."""
    def name(option):
        return path_option if option == 'path' else prefix + option

    problems = []
    for index, lower in enumerate(desired['lowerdirs']):
        if os.path.lexists(lower) and not os.path.isdir(lower):
            problems.append(f'{name("lowerdirs")}[{index}] "{lower}" exists but is not a directory.')
        elif not os.path.exists(lower) and not create_dirs and not expect_layers:
            problems.append(f'{name("lowerdirs")}[{index}] "{lower}" does not exist and {name("create_dirs")} is false: '
                            f'create the layer directory first or set {name("create_dirs")}: true.')
    for option in ('path', 'upperdir', 'workdir'):
        directory = desired[option]
        if not directory:
            continue
        if os.path.lexists(directory) and not os.path.isdir(directory):
            problems.append(f'{name(option)} "{directory}" exists but is not a directory.')
        elif not os.path.exists(directory) and not create_dirs and not (expect_layers and option != 'path'):
            problems.append(f'{name(option)} "{directory}" does not exist and {name("create_dirs")} is false.')
    if desired['upperdir']:
        upper_mount = mountinfo.mount_containing(os.path.realpath(nearest_existing(desired['upperdir'])), mounts)
        work_mount = mountinfo.mount_containing(os.path.realpath(nearest_existing(desired['workdir'])), mounts)
        if upper_mount and upper_mount.fstype in UNSUITABLE_UPPER_FSTYPES:
            problems.append(
                f'{name("upperdir")} "{desired["upperdir"]}" is on a {upper_mount.fstype} file system (mounted at '
                f'{upper_mount.mount_point}), which the kernel refuses as an overlay upper layer ("not supported as '
                f'upperdir"). Put the upper and work directories on a plain directory of an ext4/xfs file system or on a '
                f'tmpfs, e.g. mount -t tmpfs tmpfs /overlay.')
        if upper_mount and work_mount and upper_mount.mount_id != work_mount.mount_id:
            problems.append(
                f'{name("upperdir")} "{desired["upperdir"]}" (on {upper_mount.mount_point}) and {name("workdir")} '
                f'"{desired["workdir"]}" (on {work_mount.mount_point}) are on different mounts: the kernel needs both on '
                f'the same file system mount.')
        if desired['workdir'] and os.path.isdir(desired['workdir']) and _foreign_work_content(desired['workdir']):
            problems.append(f'{name("workdir")} "{desired["workdir"]}" is not empty: it must be an empty directory reserved '
                            f'for overlayfs (only its own "work" and "index" entries may be there).')
    return problems


def _foreign_work_content(workdir):
    return [name for name in os.listdir(workdir) if name not in ('work', 'index')]


def read_fstab(fstab):
    """The text of ``fstab`` ('' when it does not exist yet), or raise OSError/UnicodeError."""
    try:
        with open(fstab, encoding='utf-8') as handle:
            return handle.read()
    except FileNotFoundError:
        return ''


def fstab_problems(fstab, desired, persist):
    """Whether O(fstab) can be read and, when this run must change it, written: checked before anything changes,
    so that a bad fstab never fails a run after the overlay was mounted."""
    if os.path.isdir(fstab):
        return [f'fstab "{fstab}" is a directory: give the path of the fstab file itself, e.g. /etc/fstab.']
    if os.path.lexists(fstab) and not os.path.isfile(fstab):
        return [f'fstab "{fstab}" exists but is not a regular file (or a link to one).']
    if not os.path.exists(fstab):
        if not persist:
            return []
        parent = os.path.dirname(fstab)
        if not os.path.isdir(parent):
            return [f'fstab "{fstab}" cannot be created: its directory {parent} does not exist.']
    try:
        before = read_fstab(fstab)
    except (OSError, UnicodeError) as error:
        return [f'fstab "{fstab}" cannot be read: {getattr(error, "strerror", None) or error}.']
    if desired_fstab(before, desired, persist) != before and not os.access(os.path.dirname(fstab), os.W_OK):
        return [f'fstab "{fstab}" must change, but its directory {os.path.dirname(fstab)} is not writable (a read-only file system?).']
    return []


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


def wanted_flags(desired):
    """The generic state the request asks for: writable or not, the no* switches, the access time mode.
    Options not given keep the kernel's defaults (rw, suid, dev, exec, diratime, symfollow, relatime)."""
    flags = {'read_only': False, 'atime': 'relatime'}
    flags.update({'no' + flag: False for flag in SWITCH_FLAGS})
    for option in desired['options']:
        if option in ('ro', 'rw'):
            flags['read_only'] = option == 'ro'
        elif option in SWITCH_FLAGS:
            flags['no' + option] = False
        elif option.startswith('no') and option[2:] in SWITCH_FLAGS:
            flags[option] = True
        elif ATIME_FLAGS.get(option):
            flags['atime'] = ATIME_FLAGS[option]
    # Without an upper layer the kernel makes the whole overlay read-only, whatever the mount flag says.
    flags['read_only'] = flags['read_only'] or not desired['upperdir']
    return flags


def live_flags(entry):
    """The same generic state, as the live mount ``entry`` has it (read-only per mount or for the superblock)."""
    mount_flags = {key for key, _value in entry.mount_options}
    flags = {'read_only': entry.read_only,
             'atime': 'noatime' if 'noatime' in mount_flags else 'relatime' if 'relatime' in mount_flags else 'strictatime'}
    flags.update({'no' + flag: 'no' + flag in mount_flags for flag in SWITCH_FLAGS})
    return flags


def flag_words(flags):
    """The flags as mount options, e.g. [ro, nosuid, relatime]."""
    return (['ro' if flags['read_only'] else 'rw'] + ['no' + flag for flag in SWITCH_FLAGS if flags['no' + flag]]
            + [flags['atime']])


def flag_differences(desired, entry):
    """What differs in the generic state of a live overlay (which a remount can change), in plain words."""
    want, have = wanted_flags(desired), live_flags(entry)
    found = []
    if want['read_only'] != have['read_only']:
        found.append('the mount is read-only (ro), want read-write (rw)' if have['read_only']
                     else 'the mount is read-write (rw), want read-only (ro)')
    for flag in SWITCH_FLAGS:
        if want['no' + flag] != have['no' + flag]:
            found.append(f'no{flag} is in effect but was not asked for' if have['no' + flag] else f'option no{flag} is not in effect')
    if want['atime'] != have['atime']:
        found.append(f'access times are {have["atime"]}, want {want["atime"]}')
    return found


def layer_differences(desired, entry, default_lookup=kernel_default, prefix=''):
    """What differs in the layers and overlay options of the live mount ``entry`` (only a new mount changes those),
    naming the options ``prefix`` + option."""
    if entry is None:
        return ['not mounted']
    if entry.fstype != 'overlay':
        return [f'a {entry.fstype} file system is mounted there, not an overlay']
    current = overlay_from_entry(entry)
    found = []
    if [_real(lower) for lower in current['lowerdirs']] != [_real(lower) for lower in desired['lowerdirs']]:
        found.append(f"{prefix}lowerdirs are {current['lowerdirs']}, want {desired['lowerdirs']}")
    if current['datadirs']:
        found.append(f"data-only layers {current['datadirs']} are mounted, want none")
    for option in ('upperdir', 'workdir'):
        if _real(current[option]) != _real(desired[option]):
            found.append(f'{prefix}{option} is {current[option]}, want {desired[option]}')
    for option in desired['options']:
        if option not in GENERIC_FLAG_OPTIONS and not option_satisfied(option, entry, default_lookup):
            found.append(f'option {option} is not in effect')
    return found


def differences(desired, entry, default_lookup=kernel_default, prefix=''):
    """Human-readable differences between the overlay asked for and the live mount ``entry``: empty when the live
    mount is exactly what was asked (layers in order, upper, work, options, read-write state and flags)."""
    found = layer_differences(desired, entry, default_lookup, prefix)
    if found:
        return found
    return flag_differences(desired, entry)


def remount_argv(mount_bin, desired):
    """A remount that sets every generic flag the request implies. --options-mode ignore: the flags given here,
    not merged with those of fstab or of the live mount. Without an upper layer the superblock stays read-only
    for good, so only the mount's own flags change (a bind remount)."""
    want = wanted_flags(desired)
    words = flag_words(want)
    words += [flag for flag in SWITCH_FLAGS if not want['no' + flag] and flag != 'symfollow']
    if desired['upperdir']:
        flags = ['remount'] + words
    else:
        flags = ['remount', 'bind', 'ro' if 'ro' in desired['options'] else 'rw'] + words[1:]
    return [mount_bin, '--options-mode', 'ignore', '-o', ','.join(flags), desired['path']]


def kmsg_message(record):
    """The text of one /dev/kmsg record ("PRIORITY,SEQUENCE,TIME,FLAGS;text" and continuation lines)."""
    return record.partition(';')[2].split('\n', 1)[0]


def overlay_reasons(records, own_paths):
    """The overlayfs messages among kernel log ``records`` that can be about this mount: a message that quotes a
    path none of this mount's directories is another mount's, made at the same time."""
    own = set(own_paths)
    reasons = []
    for record in records:
        text = kmsg_message(record)
        if 'overlayfs:' not in text:
            continue
        reason = text.split('overlayfs:', 1)[1].strip()
        quoted = _QUOTED_PATH.findall(reason)
        if quoted and not any(path.rstrip('/') in own for path in quoted):
            continue
        reasons.append(reason)
    return reasons


class KernelLog:
    """The kernel log from now on: overlayfs explains a refused mount only there, and only the lines written
    after this point can be about this mount (an older line is another mount's story)."""

    def __init__(self, path=KMSG_PATH):
        self.error = None
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as error:
            self.fd, self.error = None, f'{path}: {error.strerror}'

    def new_records(self):
        records = []
        while self.fd is not None:
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EPIPE:      # records overwritten meanwhile; reading goes on after them
                    continue
                break
            if not raw:
                break
            records.append(raw.decode('utf-8', 'replace'))
        return records

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def describe_namespace(view, limit=3):
    names = []
    for pid in view.pids[:limit]:
        stat = process.read_proc_stat(pid)
        names.append(f'PID {pid} ({stat.comm})' if stat else f'PID {pid}')
    more = len(view.pids) - limit
    return ', '.join(names) + (f' and {more} more' if more > 0 else '')


def holder_problem(holder, prefix=''):
    """Why a live overlay that uses our upper or work directory forbids this mount, and what to do."""
    what = f'{holder.asked} "{holder.directory}" is the {holder.option} of'
    why = 'two overlays on one upper or work directory are undefined behaviour in the kernel'
    if holder.view.own:
        return (f'{what} the overlay mounted at {holder.entry.mount_point}: {why}. Unmount that overlay first '
                f'(unboxed.lab.overlay_mount state=unmounted) or give this one an {prefix}upperdir and {prefix}workdir of its own.')
    return (f'{what} an overlay (device {holder.entry.device}) still mounted at {holder.entry.mount_point} in the mount '
            f'namespace of {describe_namespace(holder.view)}, which keeps using it even where it was unmounted: {why}. '
            f'Stop that container (unboxed.lab.ns_container state=stopped) or those processes, then run again.')


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


class Overlay:
    """One overlay at one mount point: read current state -> compare with desired -> act only on the difference (not
    in check mode) -> return the result.

    ``params`` has overlay_mount's options (argument_spec(); a missing one, or one given as None, counts at its
    default; ``path`` is the mount point and must be given). ``prefix`` is put before the overlay's options in
    messages (ns_container's ``overlay.``) and ``path_option`` names the mount point (ns_container's ``rootfs``), as
    request_problems does. ``persist`` and ``fstab`` are overlay_mount's own: a caller whose ``params`` has no
    ``persist`` key leaves every fstab alone (it neither reads nor writes one).
    """

    def __init__(self, module, params, prefix='', path_option='path'):
        self.module = module
        self.params = with_defaults(params)
        self.manage_fstab = 'persist' in params
        self.prefix = prefix
        self.path_option = path_option
        self.expect_layers = False
        self.desired = desired_from_params(self.params)
        self.actions = []
        self.created_dirs = []
        self.mounted_here = False
        self.diffs = []

    def who(self):
        return f'the {self.prefix.rstrip(".")} option' if self.prefix else 'unboxed.lab.overlay_mount'

    def error(self, msg, result):
        """Fail before this run changed anything."""
        raise OverlayError(msg, result)

    def fail(self, msg, **kwargs):
        """Fail after undoing what this run changed."""
        undone = self.rollback()
        if undone:
            msg = f'{msg.rstrip()} {undone}'
        raise OverlayError(msg, dict(self.result(mounted=None), **kwargs))

    def binary(self, name):
        found = self.module.get_bin_path(name)
        if not found:
            self.fail(f'{name}(8) was not found on this host: install util-linux (apt-get install util-linux).')
        return found

    def rollback(self):
        """Undo what this run changed before it failed: the mount it made, then the directories it created.
        Returns a sentence when something could not be undone."""
        trouble = None
        if self.mounted_here:
            rc, stdout, stderr = cmd.run(self.module, [self.module.get_bin_path('umount') or 'umount', self.desired['path']])
            if rc == 0:
                self.mounted_here = False
            else:
                trouble = (f'The mount this run made could not be undone ({cmd.failure_detail(rc, stdout, stderr)}); '
                           f'unmount {self.desired["path"]} by hand.')
        if not self.mounted_here:
            for directory in reversed(self.created_dirs):
                if directory == self.desired['workdir']:
                    # the kernel's own (empty) scratch directories, made by the mount in a workdir this run created
                    for scratch in ('work', 'index'):
                        with contextlib.suppress(OSError):
                            os.rmdir(os.path.join(directory, scratch))
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
            self.created_dirs = []
        return trouble

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

    def validate_request(self):
        problems = request_problems(self.params, self.prefix, path_option=self.path_option)
        if problems:
            self.error(' '.join(problems), {'problems': problems})

    def validate_host(self):
        """Everything that needs a look at the host, under the lock and before the first change."""
        problems = fstab_problems(self.params['fstab'], self.desired, self.params['persist']) if self.manage_fstab else []
        if self.params['state'] == 'mounted':
            problems += filesystem_problems(self.desired, self.params['create_dirs'], mountinfo.read_mountinfo(),
                                            self.prefix, self.path_option, self.expect_layers)
            if long_option_values(self.desired):
                _rc, version, _err = cmd.run(self.module, [self.binary('mount'), '-V'])
                problems += fsconfig_problems(self.desired, version, self.prefix)
        if problems:
            self.error(' '.join(problems), {'problems': problems})

    def refuse_held_layers(self, replacing):
        """Never mount an overlay on an upper or work directory that another live overlay uses - here, at another
        mount point, or in any mount namespace a process lives in (a container keeps its copy of an overlay that
        was unmounted here). The overlay this run replaces counts only if it is mounted nowhere else."""
        directories = {self.prefix + option: self.desired[option] for option in ('upperdir', 'workdir') if self.desired[option]}
        if not directories:
            return
        holders = [holder for holder in mountinfo.overlays_holding(directories)
                   if not (holder.view.own and replacing is not None and holder.entry.mount_id == replacing.mount_id)]
        if holders:
            problems = list(dict.fromkeys(holder_problem(holder, self.prefix) for holder in holders))
            self.error(' '.join(problems), dict(self.result(mounted=replacing is not None), problems=problems))

    def ensure_dirs(self):
        desired = self.desired
        layers = desired['lowerdirs'] + [desired['upperdir'], desired['workdir']]
        for directory in layers + [desired['path']]:
            if directory and not os.path.isdir(directory):
                if self.expect_layers and directory in layers:
                    continue    # an earlier step of this run makes it (check mode only)
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

        cmd.run_checked(self.module, [self.binary('umount'), path], f'unmount {path}',
                        explain=who_holds_it, fail=lambda **result: self.fail(holders=holders, **result))

    def mount(self):
        self.actions.append('mount')
        if self.module.check_mode:
            return
        log = KernelLog()
        try:
            cmd.run_checked(self.module, mount_argv(self.binary('mount'), self.desired),
                            f'mount the overlay at {self.desired["path"]}', explain=lambda: self.kernel_reason(log), fail=self.fail)
        finally:
            log.close()
        self.mounted_here = True
        self.verify('mounted')

    def verify(self, what):
        """Read the live mount back: the kernel may have mounted something else than the command asked for.
        Never report success on a mount that differs; undo the mount this run made."""
        found = differences(self.desired, self.visible_overlay(), prefix=self.prefix)
        if found:
            self.fail(f'The kernel {what} something other than asked at {self.desired["path"]}: {"; ".join(found)}. '
                      f'The mount this run made was undone.' if self.mounted_here else
                      f'The kernel {what} something other than asked at {self.desired["path"]}: {"; ".join(found)}.')

    def remount(self, entry, found):
        """Heal the generic flags (read-only, nosuid...) of a live overlay in place; when the kernel will not, mount
        it again from scratch (which refuses, naming the holders, while it is in use)."""
        self.actions.append(f'remount ({"; ".join(found)})')
        if self.module.check_mode:
            return
        argv = remount_argv(self.binary('mount'), self.desired)
        rc, stdout, stderr = cmd.run(self.module, argv)
        left = differences(self.desired, self.visible_overlay(), prefix=self.prefix)
        if not left:
            return
        why = cmd.failure_detail(rc, stdout, stderr) if rc != 0 else '; '.join(left)
        self.refuse_held_layers(replacing=entry)
        self.unmount(f'a remount did not heal it: {why}')
        self.mount()

    def kernel_reason(self, log):
        """What overlayfs logged about this mount, never an older line of the kernel log."""
        if log.fd is None:
            return f'The kernel log, where overlayfs explains a refusal, could not be read ({log.error}).'
        desired = self.desired
        own = [desired['path']] + desired['lowerdirs'] + [desired[key] for key in ('upperdir', 'workdir') if desired[key]]
        reasons = overlay_reasons(log.new_records(), own)
        if not reasons:
            return 'The kernel logged no reason for this mount.'
        return 'The kernel said: ' + '; '.join(f'"{reason}"' for reason in reasons) + '.'

    def ensure_fstab(self):
        fstab = self.params['fstab']
        persist = self.params['persist']
        if not persist and not os.path.exists(fstab):
            return
        try:
            before = read_fstab(fstab)
        except (OSError, UnicodeError) as error:
            self.fail(f'Could not read fstab {fstab}: {getattr(error, "strerror", None) or error}.')
        after = desired_fstab(before, self.desired, persist)
        if after == before:
            return
        self.actions.append(f'{"update" if persist else "remove overlay line for " + self.desired["path"] + " from"} {fstab}')
        self.diffs.append({'before': before, 'after': after, 'before_header': fstab, 'after_header': fstab})
        if self.module.check_mode:
            return
        # A fixed name: a run killed while writing leaves at most this file, which the next run replaces.
        temp = f'{fstab}.unboxed.tmp'
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644),
                      'w', encoding='utf-8') as handle:
                handle.write(after)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            self.fail(f'Could not write fstab {fstab} ({temp}: {error.strerror}).')
        self.module.atomic_move(temp, fstab)

    def diff_view(self, current, entry):
        """The live overlay as the diff shows it: layers, which of the requested options are in effect (the kernel
        lists many options nobody asked for; showing those would make every diff noisy), and its generic flags."""
        if not current:
            return {'mounted': False}
        view = {key: current[key] for key in ('lowerdirs', 'upperdir', 'workdir')}
        view['options'] = [option for option in self.desired['options'] if option_satisfied(option, entry)]
        view['flags'] = flag_words(live_flags(entry))
        view['mounted'] = True
        return view

    @contextlib.contextmanager
    def locked(self):
        """One run at a time per mount point, and per upper directory (two mount points on one upper layer)."""
        with contextlib.ExitStack() as stack:
            note = f'{self.prefix.rstrip(".") or "overlay_mount"} state={self.params["state"]}'
            stack.enter_context(locking.exclusive('overlay', os.path.realpath(self.desired['path']),
                                                  timeout=self.params['lock_timeout'], note=note))
            if self.desired['upperdir']:
                stack.enter_context(locking.exclusive('overlay', 'upperdir ' + os.path.realpath(self.desired['upperdir']),
                                                      timeout=self.params['lock_timeout'], note=note))
            yield

    def run(self, expect_layers=False):
        """The result dict (changed, path, lowerdirs, upperdir, workdir, options, mounted, actions, command, current,
        diff with --diff); raises OverlayError. ``expect_layers`` (check mode only; ignored in a real run): the caller
        makes the layer directories (lowerdirs, upperdir, workdir) in an earlier step of this run, so one that does not
        exist yet is neither an error nor a directory this run would create."""
        self.expect_layers = bool(expect_layers) and self.module.check_mode
        self.validate_request()
        if self.module.check_mode:
            return self.converge()    # reads only; no lock file is made in check mode
        try:
            with self.locked():
                return self.converge()
        except locking.LockTimeout as error:
            self.error(locking.timeout_message(f'the overlay at {self.desired["path"]}', error), self.result(mounted=None))

    def converge(self):
        self.validate_host()
        state = self.params['state']
        entry = self.visible_overlay()
        current = overlay_from_entry(entry) if entry is not None and entry.fstype == 'overlay' else None
        if entry is not None and entry.fstype != 'overlay':
            self.error(f'{self.desired["path"]} is a mount point of a {entry.fstype} file system ({entry.source}), not an '
                       f'overlay: {self.who()} will not stack on it or unmount it. Unmount it first or choose another '
                       f'{self.path_option}.', self.result(mounted=False))
        mount_diff_before = self.diff_view(current, entry)

        if state == 'mounted':
            found = layer_differences(self.desired, entry, prefix=self.prefix)
            flags_found = [] if found else flag_differences(self.desired, entry)
            if found:
                self.refuse_held_layers(replacing=entry)
            self.ensure_dirs()
            if current and found:
                self.unmount('; '.join(found))
            if found:
                self.mount()
            elif flags_found:
                self.remount(entry, flags_found)
            mounted = True
            mount_diff_after = {'mounted': True, 'lowerdirs': self.desired['lowerdirs'], 'upperdir': self.desired['upperdir'],
                                'workdir': self.desired['workdir'], 'options': self.desired['options'],
                                'flags': flag_words(wanted_flags(self.desired))}
            if not found and not flags_found:
                mount_diff_after = mount_diff_before
        else:
            while entry is not None and entry.fstype == 'overlay':
                self.unmount('state=unmounted')
                if self.module.check_mode:
                    break
                entry = self.visible_overlay()
            mounted = False
            mount_diff_after = {'mounted': False}
        if self.manage_fstab:
            self.ensure_fstab()

        changed = bool(self.actions)
        if mount_diff_before != mount_diff_after:
            self.diffs.insert(0, {'before': mount_diff_before, 'after': mount_diff_after,
                                  'before_header': f'overlay at {self.desired["path"]}', 'after_header': f'overlay at {self.desired["path"]}'})
        result = self.result(mounted=mounted, current=current)
        result['changed'] = changed
        if self.module._diff:
            result['diff'] = self.diffs or {'before': mount_diff_before, 'after': mount_diff_after}
        return result
