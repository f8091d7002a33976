# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Importing an image file: an OCI image layout (a directory, or a tar of one) or a ``docker save`` archive.

Every blob is checked against its SHA-256 digest and every layer against the config's diff_id before anything
is kept. A layer tar records a deletion as a whiteout *file* (``.wh.NAME``, and ``.wh..wh..opq`` for "hide the
whole directory below"); overlayfs records it as a character device 0/0 named NAME and as the extended attribute
``trusted.overlay.opaque=y`` on the directory. ``extract_layer`` converts the one into the other, and never
writes outside the layer directory (no ``..``, no absolute names, nothing through a symbolic link).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
import zlib

from ansible_collections.unboxed.lab.plugins.module_utils import image_store

WHITEOUT_PREFIX = '.wh.'
OPAQUE_MARKER = '.wh..wh..opq'
TAR_MEDIA_TYPES = {
    'application/vnd.oci.image.layer.v1.tar': None,
    'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
    'application/vnd.docker.image.rootfs.diff.tar': None,
    'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
}
MANIFEST_MEDIA_TYPES = ('application/vnd.oci.image.manifest.v1+json',
                        'application/vnd.docker.distribution.manifest.v2+json')
REF_NAME = 'org.opencontainers.image.ref.name'


class ImageError(Exception):
    """An image file that cannot be imported: unreadable, not an image, corrupt, or a digest that does not match."""


class _HashingReader:
    """A read-only file object that hashes what passes through it (the uncompressed layer: its diff_id)."""

    def __init__(self, raw):
        self.raw = raw
        self.digest = hashlib.sha256()

    def read(self, size=-1):
        data = self.raw.read(size)
        self.digest.update(data)
        return data

    def drain(self):
        while self.read(1 << 20):
            pass


def _blob_path(layout: str, digest: str) -> str:
    algorithm, _sep, hexdigest = (digest or '').partition(':')
    if algorithm != 'sha256' or len(hexdigest) != 64 or not all(c in '0123456789abcdef' for c in hexdigest):
        raise ImageError(f'"{digest}" is not a sha256 digest.')
    return os.path.join(layout, 'blobs', 'sha256', hexdigest)


def _checked_blob(layout: str, digest: str, what: str) -> str:
    path = _blob_path(layout, digest)
    if not os.path.isfile(path):
        raise ImageError(f'the {what} blob {digest} is missing from {layout}/blobs/sha256.')
    found = 'sha256:' + image_store.file_sha256(path)
    if found != digest:
        raise ImageError(f'the {what} blob {digest} is corrupt: its content has the digest {found}.')
    return path


def _load_json(path: str, what: str):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise ImageError(f'the {what} ({path}) cannot be read as JSON: {error}.') from None


def read_layout(layout: str, reference: str | None = None) -> dict:
    """The image in an OCI layout directory, blobs verified: {'config', 'layers': [(path, compression, diff_id)],
    'digest' (the manifest's, which identifies the image)}."""
    if not os.path.isfile(os.path.join(layout, 'oci-layout')):
        if os.path.isfile(os.path.join(layout, 'manifest.json')):
            return read_docker_save(layout)
        raise ImageError(f'{layout} is neither an OCI image layout (no oci-layout file) nor a docker save archive '
                         f'(no manifest.json).')
    index = _load_json(os.path.join(layout, 'index.json'), 'index')
    manifests = [entry for entry in (index.get('manifests') or []) if isinstance(entry, dict)]
    if reference:
        named = [entry for entry in manifests if (entry.get('annotations') or {}).get(REF_NAME) == reference]
        manifests = named or manifests
    if len(manifests) != 1:
        names = [(entry.get('annotations') or {}).get(REF_NAME, entry.get('digest')) for entry in manifests]
        raise ImageError(f'{layout}/index.json lists {len(manifests)} images ({", ".join(map(str, names)) or "none"}); '
                         f'name one with its org.opencontainers.image.ref.name annotation.')
    descriptor = manifests[0]
    if descriptor.get('mediaType') not in MANIFEST_MEDIA_TYPES:
        raise ImageError(f'{layout}: the index points at a {descriptor.get("mediaType")}, not an image manifest '
                         f'(multi-platform indexes are not supported: copy one platform with skopeo first).')
    manifest = _load_json(_checked_blob(layout, descriptor['digest'], 'manifest'), 'manifest')
    config = _load_json(_checked_blob(layout, manifest['config']['digest'], 'config'), 'image config')
    diff_ids = (config.get('rootfs') or {}).get('diff_ids') or []
    layers = manifest.get('layers') or []
    if len(diff_ids) != len(layers):
        raise ImageError(f'{layout}: the manifest lists {len(layers)} layers, the config {len(diff_ids)} diff_ids.')
    found = []
    for layer, diff_id in zip(layers, diff_ids):
        media_type = layer.get('mediaType')
        if media_type not in TAR_MEDIA_TYPES:
            raise ImageError(f'layer {layer.get("digest")} is {media_type}; only tar and tar+gzip layers are supported.')
        found.append((_checked_blob(layout, layer.get('digest'), 'layer'), TAR_MEDIA_TYPES[media_type], diff_id))
    return {'config': config, 'layers': found, 'digest': descriptor['digest']}


def read_docker_save(directory: str) -> dict:
    """The image of an unpacked ``docker save`` archive (manifest.json, <config>.json, <layer>/layer.tar)."""
    manifest = _load_json(os.path.join(directory, 'manifest.json'), 'docker save manifest')
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise ImageError(f'{directory}/manifest.json must describe exactly one image.')
    entry = manifest[0]
    config_path = _inside(directory, entry.get('Config', ''))
    config_digest = 'sha256:' + image_store.file_sha256(config_path)
    named = os.path.basename(config_path).split('.')[0]
    if len(named) == 64 and config_digest != 'sha256:' + named:
        raise ImageError(f'the image config {entry["Config"]} is corrupt: its content has the digest {config_digest}.')
    config = _load_json(config_path, 'image config')
    diff_ids = (config.get('rootfs') or {}).get('diff_ids') or []
    layers = entry.get('Layers') or []
    if len(diff_ids) != len(layers):
        raise ImageError(f'{directory}: manifest.json lists {len(layers)} layers, the config {len(diff_ids)} diff_ids.')
    found = []
    for layer, diff_id in zip(layers, diff_ids):
        path = _inside(directory, layer)
        with open(path, 'rb') as handle:
            compression = 'gzip' if handle.read(2) == b'\x1f\x8b' else None
        found.append((path, compression, diff_id))
    return {'config': config, 'layers': found, 'digest': config_digest}


def _inside(directory: str, name: str) -> str:
    path = os.path.normpath(os.path.join(directory, name))
    if not name or os.path.isabs(name) or not path.startswith(directory.rstrip('/') + '/') or not os.path.isfile(path):
        raise ImageError(f'{directory}: "{name}" is not a file of the archive.')
    return path


def unpack_archive(archive: str, target: str) -> str:
    """Unpack an image archive (a tar of an OCI layout or of docker save) into ``target``: regular files and
    directories only, each name checked to stay inside."""
    try:
        with tarfile.open(archive, 'r:*') as tar:
            for member in tar:
                name = _safe_name(member.name)
                if name is None:
                    continue
                path = os.path.join(target, name)
                if member.isdir():
                    os.makedirs(path, exist_ok=True)
                elif member.isfile():
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, 'wb') as handle:
                        shutil.copyfileobj(tar.extractfile(member), handle, 1 << 20)
                elif member.issym() or member.islnk():
                    raise ImageError(f'{archive}: {member.name} is a link; an image archive holds plain files only.')
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ImageError(f'{archive} is not a readable tar archive: {error}.') from None
    return target


def _safe_name(name: str) -> str | None:
    """The member's path relative to the layer root, '' for the root itself; ImageError for an escaping name."""
    normalized = posixpath.normpath('/' + name).lstrip('/')
    if '..' in name.split('/') or name.startswith('/'):
        raise ImageError(f'the layer entry "{name}" points outside the layer ("/" or ".."): the layer is refused.')
    return None if normalized in ('', '.') else normalized


def _parent_inside(root: str, relative: str) -> str:
    """The host directory that will hold ``relative``: every parent must be a real directory (created if missing)."""
    current = root
    for part in relative.split('/')[:-1]:
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise ImageError(f'the layer writes below {relative.rsplit("/", 1)[0]}, which the same layer made a '
                             f'{"symbolic link" if stat.S_ISLNK(info.st_mode) else "file"}: refused (it could lead outside).')
    return current


def _clear(path: str, keep_directory: bool) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        if keep_directory:
            return
        image_store.remove_tree(path)
    else:
        os.unlink(path)


def extract_layer(blob: str, compression: str | None, target: str, diff_id: str | None) -> str:
    """Unpack a layer tar into the empty directory ``target`` with whiteouts made overlay whiteouts; returns the
    diff_id found. Raises ImageError when the content does not match ``diff_id``."""
    attributes = []
    with open(blob, 'rb') as raw:
        stream = gzip.GzipFile(fileobj=raw) if compression == 'gzip' else raw
        reader = _HashingReader(stream)
        try:
            with tarfile.open(fileobj=reader, mode='r|') as tar:
                for member in tar:
                    _extract_member(tar, member, target, attributes)
            reader.drain()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise ImageError(f'layer {os.path.basename(blob)} is not a readable tar: {error}.') from None
    found = 'sha256:' + reader.digest.hexdigest()
    if diff_id is not None and found != diff_id:
        raise ImageError(f'layer {os.path.basename(blob)} does not match the image config: its content has the '
                         f'diff_id {found}, the config says {diff_id}.')
    # Directory owners, modes and times last: writing into a directory changes its mtime, and a 0555 one refuses.
    for path, member in reversed(attributes):
        _set_attributes(path, member)
    return found


def _extract_member(tar, member, target: str, attributes: list) -> None:
    relative = _safe_name(member.name)
    if relative is None:
        if member.isdir():
            attributes.append((target, member))
        return
    base = posixpath.basename(relative)
    parent = _parent_inside(target, relative)
    if base == OPAQUE_MARKER:
        os.setxattr(parent, image_store.OPAQUE_XATTR, b'y')
        return
    if base.startswith(WHITEOUT_PREFIX):
        path = os.path.join(parent, base[len(WHITEOUT_PREFIX):])
        _clear(path, keep_directory=False)
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return
    path = os.path.join(parent, base)
    if not _write_entry(tar, member, path, target, _safe_name(member.linkname) if member.islnk() else None, 'layer'):
        return
    if member.isdir():
        attributes.append((path, member))
        return
    _set_attributes(path, member)


def _write_entry(tar, member, path: str, target: str, link_relative: str | None, what: str) -> bool:
    """Create ``path`` as the tar entry ``member`` says (directory, file, symbolic or hard link, device, fifo),
    replacing what stood there. A hard link (``link_relative``: its target inside ``target``) needs no attributes of
    its own: returns False for it, True when the caller sets the entry's owner, mode and times."""
    _clear(path, keep_directory=member.isdir())
    if member.isdir():
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
    elif member.isfile():
        with open(path, 'xb') as handle:
            shutil.copyfileobj(tar.extractfile(member), handle, 1 << 20)
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        source_path = os.path.join(_parent_inside(target, link_relative), posixpath.basename(link_relative))
        if not os.path.lexists(source_path) or os.path.isdir(source_path):
            raise ImageError(f'the hard link {member.name} points at {member.linkname}, which is no file of the {what}.')
        os.link(source_path, path, follow_symlinks=False)
        return False
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    elif member.isfifo():
        os.mkfifo(path, 0o600)
    else:
        raise ImageError(f'the {what} entry {member.name} has a type this importer does not know.')
    return True


def _set_attributes(path: str, member) -> None:
    os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def gzip_tar_digest(archive: str) -> str:
    """The diff_id of a gzipped tar: the SHA-256 of its uncompressed bytes."""
    digest = hashlib.sha256()
    try:
        with gzip.open(archive, 'rb') as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b''):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise ImageError(f'{archive} is not a readable gzip archive: {error}.') from None
    return 'sha256:' + digest.hexdigest()


def open_add_archive(data: bytes):
    """A tarfile for the bytes of an ADD source when they are a tar archive (plain, gzip, bzip2 or xz), as Docker's
    ADD recognizes one by its content, whatever its name; None for any other file (ADD copies it then)."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode='r:*')
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError):
        return None
    return tar


def unpack_add_archive(tar, target: str, owner=None) -> list[str]:
    """Unpack an ADD archive into the directory ``target`` (the destination inside the step's overlay), as Docker's
    ADD does: files, directories, symbolic and hard links, devices and fifos with their modes, owners (``owner``,
    the --chown (uid, gid), instead) and times. An entry whose name climbs out (``..``) or is absolute, or that
    would be written through a symbolic link, is refused before anything is written. Returns the names written."""
    members = tar.getmembers()
    for member in members:
        name = member.name
        if name.startswith('/') or '..' in name.split('/'):
            raise ImageError(f'the archive entry "{name}" points outside the destination ("/" or ".."): refused.')
        if member.islnk() and (member.linkname.startswith('/') or '..' in member.linkname.split('/')):
            raise ImageError(f'the archive entry "{name}" is a hard link to "{member.linkname}", outside the archive: '
                             f'refused.')
    attributes, written = [], []
    for member in members:
        relative = posixpath.normpath(member.name).lstrip('/')
        if relative in ('', '.'):
            continue
        try:
            parent = _parent_inside(target, relative)
        except ImageError as error:
            raise ImageError(str(error).replace('the layer writes', f'the archive entry "{member.name}" writes')
                             .replace('the same layer made', 'is')) from None
        path = os.path.join(parent, posixpath.basename(relative))
        link_relative = posixpath.normpath(member.linkname) if member.islnk() else None
        if not _write_entry(tar, member, path, target, link_relative, 'archive'):
            written.append(relative)
            continue
        if owner is not None:
            member.uid, member.gid = owner
        attributes.append((path, member))
        written.append(relative)
    # Directories last (writing into one changes its mtime, and a 0555 one refuses): innermost first.
    for path, member in reversed(attributes):
        _set_attributes(path, member)
    return written
