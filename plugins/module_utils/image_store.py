# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image store of ``image_build``: layer directories laid out like Docker's overlay2, images, the build cache.

    /var/lib/unboxed/
      overlay2/<layer id>/diff      the files of one layer (what a step added, changed or deleted - whiteouts)
      overlay2/<layer id>/link      the layer's short name; overlay2/l/<short name> -> ../<layer id>/diff
      overlay2/<layer id>/lower     the layers below it, as l/<short name> joined by ":" (top first), as Docker writes it
      images/<image id>.json        {"config": the image config (docker inspect), "layers": [layer ids, bottom first]}
      cache/<cache key>             the image id a step made; the key is the parent image id and the step's history text
      repositories.json             {"talk:latest": "<image id>"}
      tmp/                          scratch space of a running step, empty between builds

Everything appears atomically: a layer is built under tmp/ and renamed into overlay2/ complete; a JSON file is
written beside its place and renamed over it. A build that stops half way therefore leaves no half layer, and
every cache entry points at a complete image. The image id is the SHA-256 of the image config, as in Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import string
import tempfile

STORE_ROOT = '/var/lib/unboxed'
# What the store consists of: state=absent removes these and nothing else.
STORE_ENTRIES = ('overlay2', 'images', 'cache', 'tmp', 'repositories.json')
OPAQUE_XATTR = 'trusted.overlay.opaque'
# Overlay keeps these on an upper directory for its own bookkeeping; they mean nothing once the upper is a lower layer.
OVERLAY_PRIVATE_XATTRS = ('trusted.overlay.origin', 'trusted.overlay.impure', 'trusted.overlay.nlink')
LINK_ALPHABET = string.ascii_uppercase + string.digits


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(',', ':')).encode('utf-8')


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def short_id(image_id: str) -> str:
    """The 12 characters ``docker build`` prints (``---> c93961f83a1e``)."""
    return image_id.split(':')[-1][:12]


def cache_key(parent_image_id: str, created_by: str) -> str:
    """Docker's classic builder reuses a step when an image with the same parent was made by the same instruction
    (its history text, which holds the build args of a RUN and the checksum of COPY's files)."""
    return sha256_hex(canonical_json([parent_image_id, created_by]))


def write_json_atomically(path: str, value) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix='.tmp-', dir=os.path.dirname(path))
    try:
        with os.fdopen(descriptor, 'w', encoding='utf-8') as handle:
            json.dump(value, handle, indent=1, sort_keys=True)
            handle.write('\n')
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def tree_digest(root: str) -> str:
    """A digest of a layer directory's content: names, types, modes, owners, file contents, link targets, device
    numbers, opaque markers. It stands for the layer's diff_id (Docker hashes a tar of the layer instead)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames) + ([] if dirpath != root else ['.']):
            full = dirpath if name == '.' else os.path.join(dirpath, name)
            info = os.lstat(full)
            relative = os.path.relpath(full, root)
            record = [relative, info.st_mode, info.st_uid, info.st_gid]
            if stat.S_ISREG(info.st_mode):
                record.append(file_sha256(full))
            elif stat.S_ISLNK(info.st_mode):
                record.append(os.readlink(full))
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                record.append(info.st_rdev)
            elif stat.S_ISDIR(info.st_mode):
                record.append(_xattr(full, OPAQUE_XATTR))
            digest.update(canonical_json(record) + b'\n')
    return 'sha256:' + digest.hexdigest()


def _xattr(path: str, name: str) -> str | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False).decode('utf-8', 'replace')
    except OSError:
        return None


def drop_overlay_private_xattrs(root: str) -> None:
    """Remove overlay's bookkeeping from a finished upper directory; whiteouts and opaque markers stay."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [''] + dirnames + filenames:
            full = os.path.join(dirpath, name) if name else dirpath
            try:
                names = os.listxattr(full, follow_symlinks=False)
            except OSError:
                continue
            for attribute in names:
                if attribute in OVERLAY_PRIVATE_XATTRS:
                    os.removexattr(full, attribute, follow_symlinks=False)


def remove_tree(path: str) -> None:
    """Remove a scratch or layer tree without following links (shutil.rmtree does not follow them either)."""
    if os.path.lexists(path):
        shutil.rmtree(path)


class Store:
    """The store at ``root``. Reading never changes anything; every write is atomic."""

    def __init__(self, root: str = STORE_ROOT):
        self.root = root
        self.overlay2 = os.path.join(root, 'overlay2')
        self.images_dir = os.path.join(root, 'images')
        self.cache_dir = os.path.join(root, 'cache')
        self.tmp = os.path.join(root, 'tmp')
        self.repositories = os.path.join(root, 'repositories.json')

    # -- reading --------------------------------------------------------------------------------------------------

    def layer_dir(self, layer_id: str) -> str:
        return os.path.join(self.overlay2, layer_id)

    def diff_dir(self, layer_id: str) -> str:
        return os.path.join(self.overlay2, layer_id, 'diff')

    def image(self, image_id: str | None) -> dict | None:
        """The image document, or None when it is missing, unreadable or one of its layers is gone."""
        if not image_id or not all(char in string.hexdigits for char in image_id):
            return None
        try:
            with open(os.path.join(self.images_dir, image_id + '.json'), encoding='utf-8') as handle:
                document = json.load(handle)
        except (OSError, ValueError):
            return None
        if not isinstance(document, dict) or not isinstance(document.get('layers'), list):
            return None
        if not all(isinstance(layer, str) and os.path.isdir(self.diff_dir(layer)) for layer in document['layers']):
            return None
        return document

    def cached(self, key: str) -> str | None:
        """The image a step with this cache key made before, if it is still complete."""
        try:
            with open(os.path.join(self.cache_dir, key), encoding='ascii') as handle:
                image_id = handle.read().strip()
        except (OSError, ValueError):
            return None
        return image_id if self.image(image_id) else None

    def tags(self) -> dict:
        try:
            with open(self.repositories, encoding='utf-8') as handle:
                tags = json.load(handle)
        except (OSError, ValueError):
            return {}
        return tags if isinstance(tags, dict) else {}

    def exists(self) -> bool:
        return any(os.path.lexists(os.path.join(self.root, entry)) for entry in STORE_ENTRIES)

    # -- writing --------------------------------------------------------------------------------------------------

    def ensure(self) -> list[str]:
        """Create the store's directories (and missing parents of the store); returns those it created, outermost
        first, so that a build that fails before it keeps anything can take them back (``discard_created``)."""
        created = []
        missing = []
        parent = os.path.dirname(self.root)
        while parent and parent != '/' and not os.path.lexists(parent):
            missing.insert(0, parent)
            parent = os.path.dirname(parent)
        for directory in missing:
            os.mkdir(directory, 0o755)
            created.append(directory)
        for directory in (self.root, self.overlay2, os.path.join(self.overlay2, 'l'), self.images_dir, self.cache_dir,
                          self.tmp):
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o700 if directory == self.root else 0o755)
                created.append(directory)
        return created

    @staticmethod
    def discard_created(created: list[str]) -> list[str]:
        """Take back the directories ``ensure`` created when none of them holds anything but empty directories: a
        build that failed before keeping anything leaves no store skeleton where there was no store. When the run
        kept something (the FROM image before a failing RUN: the cache of step 1) they all stay. Returns what went."""
        for top in created:
            for dirpath, dirnames, filenames in os.walk(top):
                if filenames or any(os.path.islink(os.path.join(dirpath, name)) for name in dirnames):
                    return []
        removed = []
        for directory in reversed(created):
            try:
                os.rmdir(directory)
            except OSError:
                continue
            removed.append(directory)
        return removed

    def debris(self) -> list[str]:
        """What a run killed half way left behind (the store's lock keeps two runs from working at once, so
        while it is held nothing of this is in use): step directories under tmp/, temporary JSON files, layer
        directories no image names (committed just before the kill, before their image), dangling l/ links."""
        found = []
        if os.path.isdir(self.tmp):
            found.extend(os.path.join(self.tmp, name) for name in sorted(os.listdir(self.tmp)))
        for directory in (self.root, self.images_dir, self.cache_dir):
            if os.path.isdir(directory):
                found.extend(os.path.join(directory, name) for name in sorted(os.listdir(directory))
                             if name.startswith('.tmp-'))
        if os.path.isdir(self.overlay2):
            named = self.named_layers()
            found.extend(self.layer_dir(name) for name in sorted(os.listdir(self.overlay2))
                         if name != 'l' and name not in named)
            links = os.path.join(self.overlay2, 'l')
            if os.path.isdir(links):
                for name in sorted(os.listdir(links)):
                    target = os.path.join(links, name)
                    if os.path.islink(target) and (not os.path.exists(target) or os.readlink(target).split('/')[1]
                                                   not in named):
                        found.append(target)
        return found

    def named_layers(self) -> set:
        """Every layer id some image document lists."""
        named = set()
        if not os.path.isdir(self.images_dir):
            return named
        for name in os.listdir(self.images_dir):
            if not name.endswith('.json') or name.startswith('.'):
                continue
            try:
                with open(os.path.join(self.images_dir, name), encoding='utf-8') as handle:
                    document = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(document, dict) and isinstance(document.get('layers'), list):
                named.update(layer for layer in document['layers'] if isinstance(layer, str))
        return named

    def scratch(self) -> str:
        """A fresh directory under tmp/ for one step; the caller removes it (remove_tree) on every path."""
        return tempfile.mkdtemp(prefix='step-', dir=self.tmp)

    def commit_layer(self, scratch: str, upper: str, lower_layers: list[str]) -> str:
        """Make the finished directory ``upper`` (inside ``scratch``) a layer on top of ``lower_layers`` (bottom first)."""
        layer_id = secrets.token_hex(32)
        link = ''.join(map(secrets.choice, [LINK_ALPHABET] * 26))
        staging = os.path.join(scratch, 'layer')
        os.mkdir(staging, 0o710)
        os.rename(upper, os.path.join(staging, 'diff'))
        with open(os.path.join(staging, 'link'), 'w', encoding='ascii') as handle:
            handle.write(link)
        if lower_layers:
            links = [self._link_of(layer) for layer in reversed(lower_layers)]
            with open(os.path.join(staging, 'lower'), 'w', encoding='ascii') as handle:
                handle.write(':'.join(f'l/{name}' for name in links if name))
        os.rename(staging, self.layer_dir(layer_id))
        try:
            os.symlink(f'../{layer_id}/diff', os.path.join(self.overlay2, 'l', link))
        except FileExistsError:
            pass
        return layer_id

    def _link_of(self, layer_id: str) -> str:
        try:
            with open(os.path.join(self.layer_dir(layer_id), 'link'), encoding='ascii') as handle:
                return handle.read().strip()
        except OSError:
            return ''

    def write_image(self, config: dict, layers: list[str], parent: str = '') -> str:
        """Record an image; its id is the SHA-256 of its config. Returns the id (64 hex digits)."""
        image_id = sha256_hex(canonical_json(config))
        path = os.path.join(self.images_dir, image_id + '.json')
        if not os.path.exists(path):
            write_json_atomically(path, {'config': config, 'layers': layers, 'parent': parent})
        return image_id

    def remember(self, key: str, image_id: str) -> None:
        path = os.path.join(self.cache_dir, key)
        descriptor, temporary = tempfile.mkstemp(prefix='.tmp-', dir=self.cache_dir)
        with os.fdopen(descriptor, 'w', encoding='ascii') as handle:
            handle.write(image_id + '\n')
        os.replace(temporary, path)

    def tag(self, name: str, image_id: str) -> bool:
        tags = self.tags()
        if tags.get(name) == image_id:
            return False
        tags[name] = image_id
        write_json_atomically(self.repositories, tags)
        return True

    def layer_dirs(self) -> list[str]:
        if not os.path.isdir(self.overlay2):
            return []
        return [self.layer_dir(name) for name in sorted(os.listdir(self.overlay2)) if name != 'l']

    def remove(self) -> list[str]:
        """Remove what the store consists of, then its root when nothing else is left in it. Returns what went."""
        removed = []
        for entry in STORE_ENTRIES:
            path = os.path.join(self.root, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
                removed.append(path)
            elif os.path.lexists(path):
                os.unlink(path)
                removed.append(path)
        if os.path.isdir(self.root) and not os.listdir(self.root):
            os.rmdir(self.root)
            removed.append(self.root)
        return removed


def image_summary(store: Store, image_id: str) -> dict:
    """What a play needs to run the image: its layer directories for overlay_mount, and the config."""
    document = store.image(image_id) or {'config': {}, 'layers': []}
    config = document['config'].get('config') or {}
    layers = [store.diff_dir(layer) for layer in document['layers']]
    return {
        'id': 'sha256:' + image_id,
        'short_id': short_id(image_id),
        'layers': layers,                       # bottom first, as Docker lists them
        'lowerdirs': list(reversed(layers)),    # top first, as overlay_mount and mount -o lowerdir= take them
        'config': config,
        'history': document['config'].get('history') or [],
        'diff_ids': (document['config'].get('rootfs') or {}).get('diff_ids') or [],
    }
