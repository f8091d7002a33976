# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read what the kernel has mounted, from /proc/self/mountinfo.

The one place in unboxed that parses mountinfo. Modules compare a desired mount with
the live one found here, never with /etc/fstab or os.path.ismount().
"""

from __future__ import annotations

import dataclasses
import os
import re

MOUNTINFO_PATH = '/proc/self/mountinfo'

_OCTAL_ESCAPE = re.compile(r'\\([0-7]{3})')


def unescape(field: str) -> str:
    r"""Undo the kernel's octal escapes (``\040`` space, ``\011`` tab, ``\012`` newline, ``\134`` backslash)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def split_options(options: str) -> list[tuple[str, str | None]]:
    """Split a mount option string into ``(key, value)`` pairs, in order.

    The kernel escapes ``,`` and ``=`` inside option values (seq_show_option), so splitting
    on the raw characters first and unescaping each part afterwards is exact.
    """
    pairs = []
    for item in options.split(','):
        if not item:
            continue
        key, sep, value = item.partition('=')
        pairs.append((unescape(key), unescape(value) if sep else None))
    return pairs


def join_options(pairs) -> str:
    """The inverse of split_options for values that need no escaping."""
    return ','.join(key if value is None else f'{key}={value}' for key, value in pairs)


@dataclasses.dataclass(frozen=True)
class MountEntry:
    """One line of /proc/PID/mountinfo (see proc(5))."""

    mount_id: int
    parent_id: int
    device: str
    root: str
    mount_point: str
    mount_options: tuple
    optional_fields: tuple
    fstype: str
    source: str
    super_options: tuple

    def option(self, key: str, default=None):
        """Value of a per-mount or per-superblock option (the last one wins, as in the kernel)."""
        found = default
        for option_key, value in self.mount_options + self.super_options:
            if option_key == key:
                found = value if value is not None else True
        return found

    @property
    def read_only(self) -> bool:
        """Read-only either per mount or for the whole superblock (an overlay without upper layer)."""
        return any(key == 'ro' for key, _value in self.mount_options + self.super_options)


def parse_mountinfo_line(line: str) -> MountEntry:
    """Parse one mountinfo line. Raises ValueError on a line that is not mountinfo."""
    fields = line.rstrip('\n').split(' ')
    try:
        separator = fields.index('-', 6)
    except ValueError:
        raise ValueError(f'not a mountinfo line (no " - " separator): {line!r}') from None
    if separator + 3 > len(fields) or len(fields) < 10:
        raise ValueError(f'not a mountinfo line (too few fields): {line!r}')
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        device=fields[2],
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        mount_options=tuple(split_options(fields[5])),
        optional_fields=tuple(fields[6:separator]),
        fstype=fields[separator + 1],
        source=unescape(fields[separator + 2]),
        super_options=tuple(split_options(' '.join(fields[separator + 3:]))),
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    return [parse_mountinfo_line(line) for line in text.splitlines() if line.strip()]


def read_mountinfo(path: str = MOUNTINFO_PATH) -> list[MountEntry]:
    with open(path, encoding='utf-8', errors='surrogateescape') as handle:
        return parse_mountinfo(handle.read())


def find_mount(mount_point: str, entries=None) -> MountEntry | None:
    """The mount visible at ``mount_point``: the last one stacked there, or None."""
    if entries is None:
        entries = read_mountinfo()
    visible = None
    for entry in entries:
        if entry.mount_point == mount_point:
            visible = entry
    return visible


def mounts_below(path: str, entries=None) -> list[MountEntry]:
    """Mounts strictly below ``path`` (``/a/b`` for ``/a``), deepest last as the kernel lists them."""
    if entries is None:
        entries = read_mountinfo()
    prefix = path.rstrip('/') + '/'
    return [entry for entry in entries if entry.mount_point.startswith(prefix)]


def mount_containing(path: str, entries=None) -> MountEntry | None:
    """The mount whose file system holds ``path`` (longest mount point that is a prefix)."""
    if entries is None:
        entries = read_mountinfo()
    best = None
    for entry in entries:
        point = entry.mount_point
        if path == point or point == '/' or path.startswith(point.rstrip('/') + '/'):
            if best is None or len(point) >= len(best.mount_point):
                best = entry
    return best


def overlay_layers(entry: MountEntry) -> dict:
    """The layer directories of a live overlay mount: lowerdirs (top first), upperdir and workdir (None if absent),
    and datadirs, the data-only lower layers.

    The kernel shows the layers as they were given: ``lowerdir=a:b`` (data-only layers after ``::``), or one
    ``lowerdir+=`` / ``datadir+=`` option per layer when they were added one by one.
    """
    lowerdirs, datadirs = [], []
    upper = work = None
    for key, value in entry.mount_options + entry.super_options:
        if value is None:
            continue
        if key == 'lowerdir':
            regular, _sep, data = value.partition('::')
            lowerdirs += [layer for layer in regular.split(':') if layer]
            datadirs += [layer for layer in data.split(':') if layer]
        elif key == 'lowerdir+':
            lowerdirs.append(value)
        elif key == 'datadir+':
            datadirs.append(value)
        elif key == 'upperdir':
            upper = value
        elif key == 'workdir':
            work = value
    return {'lowerdirs': lowerdirs, 'upperdir': upper, 'workdir': work, 'datadirs': datadirs}


def _named_layers(entry: MountEntry) -> list[tuple[str, str]]:
    """("lowerdir", dir) for each lower layer, then upperdir and workdir when set."""
    layers = overlay_layers(entry)
    named = [('lowerdir', lower) for lower in layers['lowerdirs'] + layers['datadirs']]
    return named + [(key, layers[key]) for key in ('upperdir', 'workdir') if layers[key]]


def _is_at_or_below(path: str, directory: str) -> bool:
    directory = directory.rstrip('/') or '/'
    return path == directory or path.startswith(directory.rstrip('/') + '/')


def overlays_using(path: str, entries=None) -> list[tuple[MountEntry, str]]:
    """Mounted overlays that use ``path`` (or a directory above it) as a layer, with the layer option that names it
    ("lowerdir", "upperdir" or "workdir"). ``path`` must be normalised; symlinks are compared resolved."""
    if entries is None:
        entries = read_mountinfo()
    real_path = os.path.realpath(path)
    found = []
    for entry in entries:
        if entry.fstype != 'overlay':
            continue
        for option, layer in _named_layers(entry):
            if _is_at_or_below(real_path, os.path.realpath(layer)):
                found.append((entry, option))
                break
    return found


@dataclasses.dataclass(frozen=True)
class TreeUse:
    """One way a mount keeps a directory tree in use."""

    entry: MountEntry
    use: str        # "mount point", "mounted inside", or the overlay's "lowerdir", "upperdir", "workdir"
    directory: str  # the mount point, or the overlay's layer directory


def uses_of_tree(path: str, entries=None) -> list[TreeUse]:
    """Everything mounted that keeps the directory tree at ``path`` in use, in mountinfo order: a mount at ``path``,
    mounts below it, and mounted overlays with a layer at, above or below ``path`` (each such layer once).
    ``path`` must be normalised; symlinks are compared resolved. Empty: the tree may be changed or removed."""
    if entries is None:
        entries = read_mountinfo()
    real_path = os.path.realpath(path)
    found = []
    for entry in entries:
        if entry.mount_point == real_path:
            found.append(TreeUse(entry, 'mount point', entry.mount_point))
        elif _is_at_or_below(entry.mount_point, real_path):
            found.append(TreeUse(entry, 'mounted inside', entry.mount_point))
        if entry.fstype != 'overlay':
            continue
        for option, layer in _named_layers(entry):
            real_layer = os.path.realpath(layer)
            if _is_at_or_below(real_path, real_layer) or _is_at_or_below(real_layer, real_path):
                found.append(TreeUse(entry, option, layer))
    return found


PROC = '/proc'


@dataclasses.dataclass(frozen=True)
class NamespaceView:
    """The mount table of one mount namespace, as its processes see it."""

    namespace: str   # "mnt:[4026531841]", from /proc/PID/ns/mnt
    pids: tuple      # every process living in it, lowest first
    entries: tuple   # its mountinfo, read through one of those processes
    own: bool        # the namespace of the process reading it


def mount_namespaces(proc: str = PROC) -> list[NamespaceView]:
    """Every mount namespace that a process lives in, with its mount table, this process's own first.

    A mount lives on in another namespace after it was unmounted here: a container started by ``unshare
    --mount`` holds a copy of the host's mounts, and keeps the copy of an overlay that the host unmounts.
    Processes that end while we read are skipped.
    """
    own = os.readlink(os.path.join(proc, 'self', 'ns', 'mnt'))
    pids_by_namespace = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            namespace = os.readlink(os.path.join(proc, name, 'ns', 'mnt'))
        except OSError:
            continue
        pids_by_namespace.setdefault(namespace, []).append(int(name))
    views = [NamespaceView(own, tuple(sorted(pids_by_namespace.get(own, ()))),
                           tuple(read_mountinfo(os.path.join(proc, 'self', 'mountinfo'))), True)]
    for namespace, pids in sorted(pids_by_namespace.items()):
        if namespace == own:
            continue
        for pid in sorted(pids):
            try:
                entries = read_mountinfo(os.path.join(proc, str(pid), 'mountinfo'))
            except (OSError, ValueError):
                continue
            views.append(NamespaceView(namespace, tuple(sorted(pids)), tuple(entries), False))
            break
    return views


def _identity(path: str):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def layer_identities(layer: str, view: NamespaceView, proc: str = PROC) -> set:
    """The directories (device, inode) that a layer path shown in ``view`` can name.

    overlayfs shows a layer as the path it was given, resolved in the root of the process that mounted it. In
    another namespace that root is usually the root of its processes (a lab host's own root file system); when
    the path names nothing there (a container chrooted into the overlay itself, whose layers were given by the
    host), it is the host's path.
    """
    if view.own:
        found = _identity(layer)
        return {found} if found else set()
    identities = set()
    for root in {os.path.join(proc, str(pid), 'root') for pid in view.pids}:
        found = _identity(root + layer)
        if found:
            identities.add(found)
    if not identities:
        found = _identity(layer)
        if found:
            identities.add(found)
    return identities


@dataclasses.dataclass(frozen=True)
class LayerHolder:
    """A live overlay, in some mount namespace, that uses a directory as its upper or work directory."""

    view: NamespaceView
    entry: MountEntry
    option: str      # "upperdir" or "workdir" of that overlay
    asked: str       # the option name of the directory asked about
    directory: str   # the directory asked about


def overlays_holding(directories: dict, views=None, proc: str = PROC) -> list[LayerHolder]:
    """Live overlays in any visible mount namespace whose upper or work directory is one of ``directories``
    ({option name: path}), compared as the same directory on disk (device and inode), not as text."""
    if views is None:
        views = mount_namespaces(proc)
    wanted = {}
    for asked, directory in directories.items():
        identity = _identity(directory) if directory else None
        if identity:
            wanted[identity] = (asked, directory)
    found = []
    if not wanted:
        return found
    for view in views:
        for entry in view.entries:
            if entry.fstype != 'overlay':
                continue
            layers = overlay_layers(entry)
            for option in ('upperdir', 'workdir'):
                if not layers[option]:
                    continue
                matches = layer_identities(layers[option], view, proc) & set(wanted)
                if matches:
                    found.append(LayerHolder(view, entry, option, *wanted[matches.pop()]))
                    break
    return found
