# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The build context: the files next to the Dockerfile that COPY and ADD may take into the image.

``gather`` runs on the controller (the ``image_build`` action plugin): it finds each source of each COPY/ADD in
the context directory and refuses, naming the Dockerfile line, a source that is absolute, climbs out with
``..``, or leads out through a symbolic link. What it returns (paths relative to the context, types, modes,
contents) travels to the host as a module option, where ``copy_targets`` decides where each file lands and
``checksum`` gives the digest that keys the build cache, as Docker's ``COPY file:<sha256> in /dest``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import posixpath
import stat

from ansible_collections.unboxed.lab.plugins.module_utils.dockerfile import DockerfileError

# Everything COPY sends travels inside the module's arguments: keep the context small (the talk's is empty).
MAX_CONTEXT_BYTES = 32 * 1024 * 1024
GLOB_CHARACTERS = frozenset('*?[')


def source_problem(source: str) -> str | None:
    """Why a COPY source written in the Dockerfile cannot be taken from the context, or None."""
    if not source:
        return 'an empty source'
    if source.startswith('/'):
        return (f'"{source}" is an absolute path; COPY takes files from the build context only, '
                f'so write it relative to the Dockerfile\'s directory')
    if '..' in source.split('/'):
        return f'"{source}" climbs out of the build context with ".."'
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip('/') + '/')


def _matches(context: str, source: str) -> list[str]:
    """Relative paths in the context that ``source`` names (a glob matches names within one directory level)."""
    normalized = posixpath.normpath(source)
    if normalized == '.':
        return ['.']
    if not GLOB_CHARACTERS & set(normalized):
        return [normalized] if os.path.lexists(os.path.join(context, normalized)) else []
    found = ['']
    for part in normalized.split('/'):
        following = []
        for prefix in found:
            directory = os.path.join(context, prefix) if prefix else context
            if not os.path.isdir(directory):
                continue
            names = sorted(os.listdir(directory)) if GLOB_CHARACTERS & set(part) else [part]
            for name in names:
                if fnmatch.fnmatchcase(name, part) and os.path.lexists(os.path.join(directory, name)):
                    following.append(posixpath.join(prefix, name) if prefix else name)
        found = following
    return found


def _entry(context_real: str, relative: str, line: int, source: str, sizes: list) -> dict:
    path = os.path.join(context_real, relative)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        if not _inside(resolved, context_real):
            raise DockerfileError(f'COPY {source}: {relative} is a symbolic link to {target}, which leads out of the '
                                  f'build context ({context_real}); copy the file itself into the context.', line)
        return {'path': relative, 'type': 'link', 'target': target, 'mode': 0o777}
    if stat.S_ISDIR(info.st_mode):
        return {'path': relative, 'type': 'directory', 'mode': stat.S_IMODE(info.st_mode)}
    if not stat.S_ISREG(info.st_mode):
        raise DockerfileError(f'COPY {source}: {relative} is neither a file, a directory nor a symbolic link.', line)
    sizes.append(info.st_size)
    if sum(sizes) > MAX_CONTEXT_BYTES:
        raise DockerfileError(f'COPY {source}: the files to copy exceed {MAX_CONTEXT_BYTES // (1024 * 1024)} MiB; '
                              f'this builder sends them with the task. Copy large files with ansible.builtin.copy.', line)
    with open(path, 'rb') as handle:
        content = handle.read()
    return {'path': relative, 'type': 'file', 'mode': stat.S_IMODE(info.st_mode),
            'content': base64.b64encode(content).decode('ascii')}


def gather(context: str, copy_steps) -> list[dict]:
    """The context entries every COPY/ADD of ``copy_steps`` (dockerfile.Step) needs, each once, parents first.
    Raises DockerfileError naming the line of a source that is missing, absolute, ``..`` or an escaping link."""
    context_real = os.path.realpath(context)
    entries, sizes = {}, []
    for step in copy_steps:
        line = step.instruction.line
        for source in step.sources:
            problem = source_problem(source)
            if problem:
                raise DockerfileError(f'{step.instruction.keyword} {source}: {problem}.', line)
            matches = _matches(context_real, source)
            if not matches:
                raise DockerfileError(f'{step.instruction.keyword} {source}: no such file or directory in the build '
                                      f'context {context}.', line)
            for relative in matches:
                resolved = os.path.realpath(os.path.join(context_real, relative))
                if not _inside(resolved, context_real):
                    raise DockerfileError(f'{step.instruction.keyword} {source}: {relative} leads out of the build context '
                                          f'through a symbolic link (to {resolved}).', line)
                top = os.path.join(context_real, relative)
                if os.path.isdir(top) and not os.path.islink(top):
                    for dirpath, dirnames, filenames in os.walk(top):
                        dirnames.sort()
                        for name in [''] + dirnames + sorted(filenames):
                            full = os.path.join(dirpath, name) if name else dirpath
                            rel = os.path.relpath(full, context_real)
                            if rel not in entries:
                                entries[rel] = _entry(context_real, rel, line, source, sizes)
                elif relative not in entries:
                    entries[relative] = _entry(context_real, relative, line, source, sizes)
    return [entries[key] for key in sorted(entries)]


def entries_named(entries: list[dict], source: str) -> list[dict]:
    """The entries a source names itself (a glob matches within one directory level)."""
    normalized = posixpath.normpath(source)
    if normalized == '.':
        return [entry for entry in entries if entry['path'] == '.']
    return [entry for entry in entries if fnmatch.fnmatchcase(entry['path'], normalized)
            and entry['path'].count('/') == normalized.count('/')]


def _below(entries: list[dict], top: dict) -> list[tuple[str, dict]]:
    """(path relative to the directory ``top``, entry) of everything below it."""
    prefix = '' if top['path'] == '.' else top['path'] + '/'
    return [(entry['path'][len(prefix):], entry) for entry in entries
            if entry['path'] != '.' and entry is not top and entry['path'].startswith(prefix)]


def matching_entries(entries: list[dict], sources: list[str]) -> list[dict]:
    """Every entry one COPY takes: each source, and for a directory everything below it."""
    found = []
    for source in sources:
        for top in entries_named(entries, source):
            found.append(top)
            if top['type'] == 'directory':
                found.extend(entry for _inner, entry in _below(entries, top))
    return found


def copy_targets(entries: list[dict], sources: list[str], destination: str) -> list[tuple[str, dict]]:
    """(path in the image, entry) for each thing COPY writes, in order. Docker's rules: a directory source copies its
    content, not itself; several sources, a glob, or a destination ending in "/" make the destination a directory."""
    into_directory = destination.endswith('/') or len(sources) > 1 or any(GLOB_CHARACTERS & set(s) for s in sources)
    destination = posixpath.normpath(destination) if destination != '/' else '/'
    targets = []
    for source in sources:
        for top in entries_named(entries, source):
            if top['type'] == 'directory':
                targets.extend((posixpath.join(destination, inner), entry) for inner, entry in _below(entries, top))
            elif into_directory:
                targets.append((posixpath.join(destination, posixpath.basename(top['path'])), top))
            else:
                targets.append((destination, top))
    return targets


def checksum(entries: list[dict]) -> str:
    """The digest of what a COPY takes (paths, types, modes, contents): a change in any file changes the step."""
    digest = hashlib.sha256()
    for entry in entries:
        record = {key: entry.get(key) for key in ('path', 'type', 'mode', 'target')}
        record['content'] = hashlib.sha256(base64.b64decode(entry['content'])).hexdigest() if 'content' in entry else None
        digest.update(json.dumps(record, sort_keys=True).encode('utf-8') + b'\n')
    return digest.hexdigest()
