#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_build
short_description: Build a Dockerfile into layer directories, with a build cache and docker build's step output
version_added: 0.2.0
description:
  - Builds an image from a Dockerfile the way Docker's classic builder does, by hand, into a store laid out like
    Docker's C(overlay2) (C(/var/lib/unboxed/overlay2/<id>/diff), C(link), C(lower); see C(docs/build.md)).
  - C(FROM) starts from a base image - the Debian archive role C(base_rootfs) keeps on each host
    (C(FROM debian:latest)), an image in OCI layout (a directory or a tar of one), a C(docker save) archive, or
    C(scratch) - imported once into the store, its layers checked against their digests.
  - Each C(RUN) runs for real in the image built so far - an overlay of its layers with a fresh upper directory,
    in its own mount, PID and network namespaces (C(unshare), no network), C(chroot) into the merged directory -
    and the upper directory becomes the step's layer, deletions kept as overlay whiteouts. C(COPY)/C(ADD) write
    files from the build context into a layer the same way. C(ENV), C(CMD), C(ENTRYPOINT), C(WORKDIR), C(USER),
    C(LABEL), C(ARG), C(SHELL), C(EXPOSE), C(VOLUME), C(STOPSIGNAL) change the image config only and are recorded
    in its history as empty layers, as Docker records them.
  - A step is reused from the build cache when the same parent image was already built on by the same instruction
    (the same text, build args and COPY file checksums); a rerun prints C(Using cache) for every step and changes
    nothing. A step that fails stops the build there with its output and exit code; it leaves no layer behind and
    earlier steps stay cached. A first build that fails before it keeps anything leaves no store behind.
  - A run killed half way (SIGKILL, a lost connection) leaves no half layer - layers and images appear by rename,
    complete - and the next run, holding the store's lock, unmounts and removes what it left (see RV(healed)).
  - Run it through its action plugin (the usual way, O(src)) - it reads the Dockerfile and the files C(COPY)
    needs on the controller. The module itself takes the Dockerfile's text (O(dockerfile)) and those files (O(context)).
  - B(Not supported) (each refused with a clear message) - multi-stage builds, heredocs, BuildKit flags
    (C(RUN --mount)), C(HEALTHCHECK), C(ONBUILD), C(ADD) from a URL.
  - C(ADD) of a local tar archive (plain, gzip, bzip2 or xz, known by its content) unpacks it into the destination,
    as Docker does (C(COPY) copies it as a file); an archive entry that climbs out of the destination (C(..), an
    absolute name) or is written through a symbolic link is refused.
author:
  - unboxed developers (@unboxed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Predicts which steps would build and which come from the cache; changes nothing, runs nothing.
        Steps after one that would build are predicted to build too.
  diff_mode:
    support: full
    details: The image the tag names before and after, and the steps that build.
  platform:
    platforms: posix
options:
  src:
    description:
      - B(Action plugin.) The Dockerfile on the controller, looked up like M(ansible.builtin.copy)'s C(src)
        (a role's C(files/) first). Its directory is the build context unless O(context_dir) says otherwise.
      - Exactly one of O(src) and O(dockerfile) is required.
    type: path
  context_dir:
    description:
      - B(Action plugin.) The build context on the controller - the directory C(COPY) sources are relative to.
        Default - the directory of O(src).
    type: path
  dockerfile:
    description:
      - The Dockerfile's text. The action plugin fills it in from O(src).
    type: str
  context:
    description:
      - The build context's files that C(COPY)/C(ADD) take, as the action plugin gathered them - each a dict with
        C(path) (relative), C(type) (V(file), V(directory) or V(link)), C(mode), C(content) (base64) or C(target).
    type: list
    elements: dict
    default: []
  name:
    description:
      - The tag to give the image, as C(docker build -t), for example V(talk:latest).
    type: str
  build_args:
    description:
      - Values for the Dockerfile's C(ARG)s, as C(docker build --build-arg NAME=VALUE).
    type: dict
    default: {}
  base_images:
    description:
      - Where the images named by C(FROM) come from - image name to a file or directory on the host - a Debian root
        file system archive (C(.tar.gz), C(.tar)), an OCI image layout directory, or a tar of an OCI layout or of
        C(docker save).
      - Without an entry, C(FROM debian:SUITE) takes the newest C(debian-SUITE-*.tar.gz) in O(base_dir) (the archives
        of role C(base_rootfs)), C(latest) meaning C(trixie), and C(FROM scratch) starts from nothing.
    type: dict
    default: {}
  base_dir:
    description:
      - Where the Debian base archives are, see O(base_images).
    type: path
    default: /var/cache/unboxed/base
  store:
    description:
      - The image store. Must not be a system directory.
    type: path
    default: /var/lib/unboxed
  state:
    description:
      - V(present) builds the image.
      - V(absent) removes the store - its C(overlay2), C(images), C(cache), C(tmp) and C(repositories.json), then
        the store directory when nothing else is in it - refusing while a mounted overlay uses a layer of it.
    type: str
    choices: [present, absent]
    default: present
  lock_timeout:
    description:
      - Seconds to wait for another run that works on the same store.
    type: int
    default: 60
notes:
  - Requires root (mounts and namespaces) and a kernel with overlayfs. C(RUN) has no network (its own empty network
    namespace), so package installation needs a base that already holds the packages.
  - RV(image.lowerdirs) and RV(image.config) are what M(unboxed.lab.overlay_mount) and M(unboxed.lab.ns_container)
    need to run the image (see the example).
seealso:
  - module: unboxed.lab.overlay_mount
  - module: unboxed.lab.ns_container
  - module: unboxed.lab.layer
"""

EXAMPLES = r"""
- name: Build the talk's Dockerfile (FROM debian:latest, RUN echo "Texto" > /file01.txt, CMD tail -f /dev/null)
  unboxed.lab.image_build:
    src: Dockerfile
    name: talk:latest
  register: build

- name: Show the steps as docker build prints them
  ansible.builtin.debug:
    var: build.lines

- name: Mount the image's layers with an upper directory of the container's own
  unboxed.lab.overlay_mount:
    path: /srv/talk/merged
    lowerdirs: "{{ build.image.lowerdirs }}"
    upperdir: /srv/talk/upper
    workdir: /srv/talk/work
    create_dirs: true

- name: Start the image's CMD in its own namespaces
  unboxed.lab.ns_container:
    name: talk
    rootfs: /srv/talk/merged
    command: "{{ build.image.command }}"
    env: "{{ build.image.env }}"

- name: Build with a build arg and an OCI image as the base
  unboxed.lab.image_build:
    src: files/app/Dockerfile
    name: app:1
    build_args:
      GREETING: hello
    base_images:
      alpine:3.20: /srv/images/alpine-oci
"""

RETURN = r"""
lines:
  description: The build's output as C(docker build) prints it, one line per item, including each RUN's output.
  returned: when O(state=present)
  type: list
  elements: str
  sample:
    - "Step 1/3 : FROM debian:latest"
    - " ---> c93961f83a1e"
    - "Step 2/3 : RUN echo \"Texto\" > /file01.txt"
    - " ---> Running in 5c3e1d4a9b7f"
    - " ---> 0f2b1c9e8d7a"
    - "Step 3/3 : CMD [\"tail\", \"-f\", \"/dev/null\"]"
    - " ---> Using cache"
    - " ---> 7a6b5c4d3e2f"
    - "Successfully built 7a6b5c4d3e2f"
    - "Successfully tagged talk:latest"
steps:
  description:
    - One item per step - C(number), C(instruction), C(cached) (from the cache), C(built) (built by this run, or
      in check mode would be), C(image) (short id, null when predicted), C(layer) (the layer directory the step
      made, null for a metadata step), C(empty_layer), and for RUN C(rc) and C(output).
  returned: when O(state=present)
  type: list
  elements: dict
  sample:
    - {number: 2, instruction: "RUN echo \"Texto\" > /file01.txt", cached: true, built: false, image: 0f2b1c9e8d7a,
       layer: /var/lib/unboxed/overlay2/3f.../diff, empty_layer: false}
image:
  description:
    - The built image - C(id), C(short_id), C(layers) (layer directories, bottom first), C(lowerdirs) (top first, for
      M(unboxed.lab.overlay_mount)), C(config) (Cmd, Entrypoint, Env, WorkingDir, User, Labels... as
      C(docker inspect) shows them), C(history) (as C(docker history), empty layers included), C(command)
      (Entrypoint + Cmd), C(env) (the config's Env as a dict) and C(workdir).
    - In check mode, when a step would build, C(id) is null.
  returned: when O(state=present)
  type: dict
  contains:
    id:
      description: The image id, C(sha256:...) (the SHA-256 of the image config).
      type: str
    short_id:
      description: The 12 characters docker build prints.
      type: str
    layers:
      description: The layer directories, bottom first.
      type: list
      elements: str
    lowerdirs:
      description: The layer directories, top first - the O(unboxed.lab.overlay_mount#module:lowerdirs) of a container of the image.
      type: list
      elements: str
    config:
      description: The image's config as C(docker inspect) shows it (Cmd, Entrypoint, Env, WorkingDir, User, Labels...).
      type: dict
    history:
      description: The image's history, as C(docker history) (bottom first, C(empty_layer) for metadata steps).
      type: list
      elements: dict
    diff_ids:
      description: The layers' digests, bottom first.
      type: list
      elements: str
    command:
      description: What a container of the image runs - Entrypoint followed by Cmd.
      type: list
      elements: str
    env:
      description: The config's Env as a dict.
      type: dict
    workdir:
      description: The config's WorkingDir, or null.
      type: str
failed_step:
  description: The step that failed - C(number), C(instruction), C(rc), C(output).
  returned: when a RUN fails
  type: dict
removed:
  description: What O(state=absent) removed (in check mode, would remove).
  returned: when O(state=absent)
  type: list
  elements: str
healed:
  description:
    - What an interrupted earlier run had left in the store and this run removed first (with the store's lock
      held) - step directories under C(tmp/) (their overlays unmounted), temporary files, layers no image names.
      In check mode, what a real run would remove.
  returned: when there was something
  type: list
  elements: str
warnings_text:
  description: Build args that no ARG consumed, as Docker warns.
  returned: when O(state=present)
  type: list
  elements: str
"""

import base64
import datetime
import glob
import os
import posixpath
import secrets
import tarfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.unboxed.lab.plugins.module_utils import build_context
from ansible_collections.unboxed.lab.plugins.module_utils import command as cmd
from ansible_collections.unboxed.lab.plugins.module_utils import container
from ansible_collections.unboxed.lab.plugins.module_utils import dockerfile
from ansible_collections.unboxed.lab.plugins.module_utils import image_store
from ansible_collections.unboxed.lab.plugins.module_utils import locking
from ansible_collections.unboxed.lab.plugins.module_utils import mountinfo
from ansible_collections.unboxed.lab.plugins.module_utils import oci
from ansible_collections.unboxed.lab.plugins.module_utils import paths

DEBIAN_LATEST = 'trixie'   # what FROM debian:latest means today (role base_rootfs builds the same default)
BASE_CMD = ['bash']         # the Debian image's own CMD


def argument_spec():
    return dict(
        dockerfile=dict(type='str'),
        context=dict(type='list', elements='dict', default=[]),
        name=dict(type='str'),
        build_args=dict(type='dict', default={}),
        base_images=dict(type='dict', default={}),
        base_dir=dict(type='path', default='/var/cache/unboxed/base'),
        store=dict(type='path', default=image_store.STORE_ROOT),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        lock_timeout=dict(type='int', default=60),
        # Options of the action plugin; it removes them before the module runs.
        src=dict(type='path'),
        context_dir=dict(type='path'),
    )


class BuildFailed(Exception):
    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def request_problems(params) -> list[str]:
    problems = []
    store = params['store']
    problems.extend(filter(None, [paths.absolute_path_problem('store', store) or paths.system_directory_problem('store', store)]))
    if params['lock_timeout'] < 0:
        problems.append(f'lock_timeout must be 0 or more seconds, got {params["lock_timeout"]}.')
    if params['state'] == 'present' and not params['dockerfile']:
        problems.append('dockerfile is empty: give the Dockerfile (src, through the action plugin, or its text).')
    if params['name'] is not None and not _valid_tag(params['name']):
        problems.append(f'name "{params["name"]}" is not an image name such as talk:latest (lowercase letters, digits, '
                        f'".", "_", "-", "/", and a ":tag").')
    for key, value in (params['build_args'] or {}).items():
        if not dockerfile.VARIABLE_NAME.fullmatch(str(key)):
            problems.append(f'build_args: "{key}" is not an ARG name.')
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            problems.append(f'build_args.{key} must be a string, got {type(value).__name__}.')
    for index, entry in enumerate(params['context'] or []):
        relative = entry.get('path')
        if not isinstance(relative, str) or build_context.source_problem(relative) or entry.get('type') not in (
                'file', 'directory', 'link'):
            problems.append(f'context[{index}] is not an entry the action plugin makes (path relative, type file, '
                            f'directory or link).')
    return problems


def _valid_tag(name: str) -> bool:
    import re
    return bool(re.fullmatch(r'[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?', name))


# ---------------------------------------------------------------------------------------------------------------
# FROM: where the base comes from, and importing it once


class BaseArchiveMissing(BuildFailed):
    """FROM debian:SUITE before role base_rootfs put that suite's archive on the seat."""


def base_source(reference: str, base_images: dict, base_dir: str):
    """(kind, path) for the FROM image: kind is scratch, archive (Debian root fs), or image (OCI / docker save)."""
    if reference == 'scratch':
        return 'scratch', None
    path = base_images.get(reference)
    if path is None and ':' not in reference:
        path = base_images.get(reference + ':latest')
    if path is not None:
        path = str(path)
        if os.path.isdir(path):
            return 'image', path
        if not os.path.isfile(path):
            raise BuildFailed(f'base_images["{reference}"] is {path}, which does not exist on this host.')
        if path.endswith(('.tar.gz', '.tgz')) and not _is_image_archive(path):
            return 'archive', path
        return 'image', path
    repository, _sep, tag = reference.partition(':')
    if repository in ('debian', 'library/debian', 'docker.io/library/debian'):
        suite = DEBIAN_LATEST if tag in ('', 'latest', 'stable') else tag
        candidates = sorted(glob.glob(os.path.join(glob.escape(base_dir), f'debian-{glob.escape(suite)}-*.tar.gz')),
                            key=os.path.getmtime)
        candidates = [candidate for candidate in candidates if not candidate.endswith('.partial.tar.gz')]
        if candidates:
            return 'archive', candidates[-1]
        raise BaseArchiveMissing(f'FROM {reference}: no Debian {suite} base archive (debian-{suite}-*.tar.gz) in {base_dir}. '
                                 f'Run the base_rootfs role first (base_rootfs_suite: {suite}), or name a file in base_images.')
    raise BuildFailed(f'FROM {reference}: this builder fetches nothing from a registry. Give the image as a file - an '
                      f'OCI layout or a docker save archive (skopeo copy docker://{reference} oci:DIR makes one where a '
                      f'registry is reachable) - in base_images: {{"{reference}": "/path/to/it"}}.')


def _is_image_archive(path: str) -> bool:
    try:
        with tarfile.open(path, 'r:*') as tar:
            for member in tar:
                return member.name.lstrip('./') in ('oci-layout', 'index.json', 'manifest.json', 'blobs')
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def base_key(kind: str, path: str | None) -> str:
    """The cache key of an imported base: the digest of the file (archive) or of the image's manifest."""
    if kind == 'scratch':
        return image_store.sha256_hex(b'scratch')
    if kind == 'archive':
        return image_store.sha256_hex(b'archive:' + image_store.file_sha256(path).encode())
    if os.path.isdir(path):
        return image_store.sha256_hex(b'image:' + oci.read_layout(path)['digest'].encode())
    return image_store.sha256_hex(b'image-file:' + image_store.file_sha256(path).encode())


def import_base(module, store, kind: str, path: str | None, reference: str) -> str:
    """Import the FROM image into the store; returns its image id. Nothing is kept unless all of it is good."""
    if kind == 'scratch':
        return store.write_image({'architecture': 'amd64', 'os': 'linux', 'config': dockerfile.empty_config(),
                                  'rootfs': {'type': 'layers', 'diff_ids': []}, 'history': []}, [])
    scratch = store.scratch()
    try:
        if kind == 'archive':
            diff = os.path.join(scratch, 'diff')
            os.mkdir(diff, 0o755)
            diff_id = oci.gzip_tar_digest(path) if path.endswith(('.gz', '.tgz')) else \
                'sha256:' + image_store.file_sha256(path)
            tar = module.get_bin_path('tar', required=True)
            cmd.run_checked(module, [tar, '--extract', '--numeric-owner', '--xattrs', '--xattrs-include=*',
                                     '--file', path, '--directory', diff],
                            what=f'unpack the base archive {path}', fail=_raise)
            layer = store.commit_layer(scratch, diff, [])
            created = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc).strftime(
                '%Y-%m-%dT%H:%M:%SZ')
            config = {'architecture': 'amd64', 'os': 'linux',
                      'config': dict(dockerfile.empty_config(), Env=[f'PATH={dockerfile.DEFAULT_PATH}'], Cmd=BASE_CMD),
                      'rootfs': {'type': 'layers', 'diff_ids': [diff_id]},
                      'history': [{'created': created, 'created_by': f'/bin/sh -c #(nop) ADD file:{os.path.basename(path)} in / '},
                                  {'created': created, 'created_by': '/bin/sh -c #(nop)  CMD ["bash"]', 'empty_layer': True}]}
            return store.write_image(config, [layer])
        layout = path
        if not os.path.isdir(path):
            layout = oci.unpack_archive(path, os.path.join(scratch, 'archive'))
        image = oci.read_layout(layout, reference)
        layers = []
        for index, (blob, compression, diff_id) in enumerate(image['layers']):
            diff = os.path.join(scratch, f'layer{index}')
            os.mkdir(diff, 0o755)
            oci.extract_layer(blob, compression, diff, diff_id)
        for index in range(len(image['layers'])):
            layer_scratch = os.path.join(scratch, f'commit{index}')
            os.mkdir(layer_scratch)
            layers.append(store.commit_layer(layer_scratch, os.path.join(scratch, f'layer{index}'), list(layers)))
        config = dict(image['config'])
        config['config'] = dict(dockerfile.empty_config(), **(config.get('config') or {}))
        return store.write_image(config, layers)
    except (oci.ImageError, OSError) as error:
        raise BuildFailed(f'FROM {reference}: cannot import {path}: {error} The store is unchanged.') from None
    finally:
        image_store.remove_tree(scratch)


def _raise(msg, **result):
    raise BuildFailed(msg, **result)


# ---------------------------------------------------------------------------------------------------------------
# RUN and COPY: an overlay of the image so far with a fresh upper directory


class Scratch:
    """upper/work/merged of one step under the store's tmp/, mounted as an overlay; unmounted and removed on exit."""

    def __init__(self, module, store, lower_layers: list[str]):
        self.module, self.store, self.lower_layers = module, store, lower_layers
        self.path = store.scratch()
        self.upper = os.path.join(self.path, 'upper')
        self.work = os.path.join(self.path, 'work')
        self.merged = os.path.join(self.path, 'merged')
        self.mounted = False

    def __enter__(self):
        for directory in (self.upper, self.work, self.merged):
            os.mkdir(directory, 0o755)
        lowers = [self.store.diff_dir(layer) for layer in reversed(self.lower_layers)]
        if not lowers:
            empty = os.path.join(self.path, 'empty')
            os.mkdir(empty, 0o755)
            lowers = [empty]
        options = f'lowerdir={":".join(lowers)},upperdir={self.upper},workdir={self.work}'
        mount = self.module.get_bin_path('mount', required=True)
        cmd.run_checked(self.module, [mount, '-t', 'overlay', 'overlay', '-o', options, self.merged],
                        what=f'mount the overlay for this step at {self.merged}', fail=_raise)
        self.mounted = True
        return self

    def unmount(self):
        if not self.mounted:
            return
        umount = self.module.get_bin_path('umount', required=True)
        rc, _out, _err = cmd.run(self.module, [umount, self.merged])
        if rc != 0:
            cmd.run(self.module, [umount, '--lazy', self.merged])
        self.mounted = mountinfo.find_mount(self.merged) is not None

    def __exit__(self, *exc):
        self.unmount()
        if self.mounted or mountinfo.mounts_below(self.path):
            self.module.warn(f'{self.path} is still mounted; it was left in place. Unmount it and remove it by hand.')
            return False
        image_store.remove_tree(self.path)
        return False


def _user_ids(merged: str, user: str):
    """(uid, gid) of a USER value, names looked up in the image's own /etc/passwd and /etc/group."""
    name, _sep, group = user.partition(':')

    def lookup(database, key):
        if key.isdigit():
            return int(key), None
        host_path = paths.resolve_inside(merged, f'/etc/{database}')
        try:
            with open(host_path or '/nonexistent', encoding='utf-8', errors='replace') as handle:
                for line in handle:
                    fields = line.rstrip('\n').split(':')
                    if len(fields) > 3 and fields[0] == key:
                        return int(fields[2]), int(fields[3]) if database == 'passwd' else None
        except OSError:
            pass
        raise BuildFailed(f'USER {user}: "{key}" is not in the image\'s /etc/{database}.')

    uid, primary_gid = lookup('passwd', name)
    gid = lookup('group', group)[0] if group else (primary_gid if primary_gid is not None else 0)
    return uid, gid


def run_step(module, store, lower_layers: list[str], step, config: dict):
    """Run a RUN step; returns (rc, output lines, scratch) with the scratch still holding the upper directory."""
    binaries = container.Binaries(**{field: module.get_bin_path(field, required=True)
                                     for field in ('unshare', 'chroot', 'sh', 'hostname', 'mount')})
    scratch = Scratch(module, store, lower_layers)
    with scratch:
        merged = scratch.merged
        workdir = config.get('WorkingDir') or None
        if workdir and not paths.resolve_inside(merged, workdir):
            os.makedirs(paths.join_inside(merged, workdir), 0o755, exist_ok=True)   # Docker creates WORKDIR too
        user = config.get('User') or ''
        spec = container.ContainerSpec.build(
            rootfs=merged, command=step.argv, namespaces=('mount', 'pid', 'net'),
            mount_proc=os.path.isdir(os.path.join(merged, 'proc')), root_method='chroot',
            workdir=workdir or ('/' if user else None))
        stages = container.launch_stages(spec, binaries)
        if user:
            uid, gid = _user_ids(merged, user)
            stages[0] = stages[0] + [f'--setgid={gid}', f'--setuid={uid}']
        environment = list(step.env)
        names = {item.split('=', 1)[0] for item in environment}
        if 'PATH' not in names:
            environment.append(f'PATH={dockerfile.DEFAULT_PATH}')
        if 'HOME' not in names:
            environment.append('HOME=/root')
        argv = [module.get_bin_path('env', required=True), '-i'] + environment + container.launch_argv(stages)
        rc, out, err = cmd.run(module, argv)
        scratch.unmount()
        if scratch.mounted:
            raise BuildFailed(f'the overlay of this step at {merged} could not be unmounted; the step was not kept.')
        if rc == 0:
            image_store.drop_overlay_private_xattrs(scratch.upper)
            layer = store.commit_layer(scratch.path, scratch.upper, lower_layers)
            return rc, (out + err).splitlines(), layer
        return rc, (out + err).splitlines(), None


def _directory_inside(merged: str, inner_dir: str) -> str:
    """The host directory for ``inner_dir`` inside the image, following the image's own links; created if missing."""
    current_inner = '/'
    for part in [piece for piece in inner_dir.split('/') if piece]:
        candidate_inner = posixpath.join(current_inner, part)
        resolved = paths.resolve_inside(merged, candidate_inner)
        if resolved is None:
            host = paths.resolve_inside(merged, current_inner) or merged
            os.mkdir(os.path.join(host, part), 0o755)
            resolved = os.path.join(host, part)
        elif not os.path.isdir(resolved):
            raise BuildFailed(f'{candidate_inner} is a file in the image, not a directory.')
        current_inner = '/' + os.path.relpath(resolved, merged).lstrip('.').lstrip('/')
    return paths.resolve_inside(merged, current_inner) or merged


def copy_step(module, store, lower_layers: list[str], step, entries: list[dict]):
    """COPY/ADD: write the context files into a fresh layer on top of the image so far; returns the layer id."""
    archives = add_archives(step, entries)
    targets = [(inner, entry) for inner, entry in build_context.copy_targets(entries, step.sources, step.destination)
               if not any(entry is archive for archive, _tar in archives)]
    with Scratch(module, store, lower_layers) as scratch:
        for entry, tar in archives:
            # ADD of a local tar archive unpacks it into the destination (a directory, created when missing).
            target = _directory_inside(scratch.merged, step.destination)
            try:
                oci.unpack_add_archive(tar, target, step.chown)
            except (oci.ImageError, OSError, tarfile.TarError) as error:
                raise BuildFailed(f'Dockerfile line {step.instruction.line}: ADD {entry["path"]}: cannot unpack the '
                                  f'archive into {step.destination}: {error} The store is unchanged.') from None
        for inner, entry in targets:
            parent = _directory_inside(scratch.merged, posixpath.dirname(inner))
            host_path = os.path.join(parent, posixpath.basename(inner))
            if entry['type'] == 'directory':
                if not os.path.isdir(host_path):
                    _unlink_if_present(host_path)
                    os.mkdir(host_path, 0o755)
                os.chmod(host_path, entry['mode'] if step.chmod is None else step.chmod)
            else:
                if os.path.isdir(host_path) and not os.path.islink(host_path):
                    raise BuildFailed(f'{step.instruction.keyword}: {inner} is a directory in the image; cannot put the '
                                      f'file {entry["path"]} there (end the destination with "/" to copy into it).')
                _unlink_if_present(host_path)
                if entry['type'] == 'link':
                    os.symlink(entry['target'], host_path)
                else:
                    with open(host_path, 'xb') as handle:
                        handle.write(base64.b64decode(entry['content']))
                    os.chmod(host_path, entry['mode'] if step.chmod is None else step.chmod)
            uid, gid = step.chown if step.chown else (0, 0)
            os.lchown(host_path, uid, gid)
        scratch.unmount()
        if scratch.mounted:
            raise BuildFailed(f'the overlay of this step at {scratch.merged} could not be unmounted; the step was not kept.')
        image_store.drop_overlay_private_xattrs(scratch.upper)
        return store.commit_layer(scratch.path, scratch.upper, lower_layers)


def add_archives(step, entries: list[dict]) -> list[tuple[dict, object]]:
    """(entry, open tarfile) of each ADD source that is itself a local tar archive (plain, gzip, bzip2, xz: known
    by its content, as Docker knows it). A file inside a directory source is copied, never unpacked."""
    if step.instruction.keyword != 'ADD':
        return []
    found = []
    for source in step.sources:
        for entry in build_context.entries_named(entries, source):
            if entry['type'] == 'file':
                tar = oci.open_add_archive(base64.b64decode(entry['content']))
                if tar is not None:
                    found.append((entry, tar))
    return found


def _unlink_if_present(path: str) -> None:
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
        os.unlink(path)


# ---------------------------------------------------------------------------------------------------------------


def step_created_by(step, entries: list[dict]) -> str:
    """The history text, which is also the cache key's instruction part. COPY carries its files' checksum."""
    if step.kind != 'copy':
        return step.created_by
    taken = build_context.matching_entries(entries, step.sources)
    kind = 'file' if len(taken) == 1 and taken[0]['type'] == 'file' else 'dir'
    flags = ''.join(f' --{name}={value}' for name, value in step.instruction.flags)
    return f'/bin/sh -c #(nop) {step.instruction.keyword}{flags} {kind}:{build_context.checksum(taken)} in {step.destination} '


def build(module, params, store, check_mode: bool) -> dict:
    parsed = dockerfile.parse(params['dockerfile'])
    build_args = {str(key): str(value) for key, value in (params['build_args'] or {}).items()}
    reference, _from = dockerfile.from_reference(parsed, build_args)
    try:
        kind, path = base_source(reference, params['base_images'] or {}, params['base_dir'])
    except BaseArchiveMissing as error:
        # A --check of the whole site on a fresh seat: base_rootfs's copy of the archive is only predicted.
        if not check_mode:
            raise
        module.warn(f'{error} Check mode assumes an earlier task of this run puts it there; a real run fails if it '
                    f'is still missing.')
        kind, path = 'archive', None
    entries = params['context'] or []
    try:
        key = None if path is None and kind == 'archive' else base_key(kind, path)
    except oci.ImageError as error:
        raise BuildFailed(f'FROM {reference}: cannot import {path}: {error} The store is unchanged.') from None
    except OSError as error:
        raise BuildFailed(f'FROM {reference}: cannot read {path}: {error.strerror}.') from None
    image_id = store.cached(key) if key else None
    lines, steps, changed = [], [], False
    plan_base = store.image(image_id)['config'].get('config') if image_id else None
    if plan_base is None and kind == 'archive':
        plan_base = dict(dockerfile.empty_config(), Env=[f'PATH={dockerfile.DEFAULT_PATH}'], Cmd=BASE_CMD)
    planned = dockerfile.plan(parsed, build_args, plan_base)
    for step in planned.steps:
        if step.kind == 'copy':
            missing = [source for source in step.sources if not build_context.entries_named(entries, source)]
            if missing:
                raise BuildFailed(f'Dockerfile line {step.instruction.line}: {step.instruction.keyword} {missing[0]}: '
                                  f'not in the build context sent with the task (run the module through its action '
                                  f'plugin, with src).')
    first = planned.steps[0]
    lines.append(first.header)
    base_imported = image_id is None
    if image_id is None and not check_mode:
        image_id = import_base(module, store, kind, path, reference)
        store.remember(key, image_id)
        changed = True
    lines.append(f' ---> {image_store.short_id(image_id) if image_id else "(would import " + (path or "the Debian base") + ")"}')
    steps.append({'number': 1, 'instruction': first.instruction.original, 'cached': not base_imported,
                  'built': base_imported, 'image': image_store.short_id(image_id) if image_id else None,
                  'layer': None, 'empty_layer': False, 'source': path})
    failed_step = None
    for step in planned.steps[1:]:
        lines.append(step.header)
        created_by = step_created_by(step, entries)
        key = image_store.cache_key(image_id, created_by) if image_id else None
        cached = store.cached(key) if key else None
        record = {'number': step.number, 'instruction': step.instruction.original, 'cached': bool(cached),
                  'built': not cached, 'image': None, 'layer': None, 'empty_layer': step.kind == 'metadata'}
        steps.append(record)
        if cached:
            lines += [' ---> Using cache', f' ---> {image_store.short_id(cached)}']
            image_id = cached
        elif check_mode:
            lines.append(' ---> (would build)')
            image_id = None
            continue
        else:
            parent = store.image(image_id)
            layers = list(parent['layers'])
            history_entry = {'created': now(), 'created_by': created_by}
            diff_ids = list((parent['config'].get('rootfs') or {}).get('diff_ids') or [])
            container_id = secrets.token_hex(6)
            if step.kind == 'run':
                lines.append(f' ---> Running in {container_id}')
                rc, output, layer = run_step(module, store, layers, step, parent['config']['config'])
                lines += output
                record.update(rc=rc, output=output)
                if rc != 0:
                    failed_step = dict(record, built=False)
                    lines.append(f'The command \'{" ".join(step.argv)}\' returned a non-zero code: {rc}')
                    break
                layers.append(layer)
                diff_ids.append(image_store.tree_digest(store.diff_dir(layer)))
                lines.append(f'Removing intermediate container {container_id}')
            elif step.kind == 'copy':
                layer = copy_step(module, store, layers, step, entries)
                layers.append(layer)
                diff_ids.append(image_store.tree_digest(store.diff_dir(layer)))
            else:
                lines.append(f' ---> Running in {container_id}')
                lines.append(f'Removing intermediate container {container_id}')
                history_entry['empty_layer'] = True
            if step.kind != 'metadata':
                record['layer'] = store.diff_dir(layers[-1])
            config = {'architecture': parent['config'].get('architecture', 'amd64'),
                      'os': parent['config'].get('os', 'linux'), 'created': history_entry['created'],
                      'config': step.config, 'rootfs': {'type': 'layers', 'diff_ids': diff_ids},
                      'history': list(parent['config'].get('history') or []) + [history_entry]}
            new_id = store.write_image(config, layers, parent=image_id)
            store.remember(key, new_id)
            changed = True
            image_id = new_id
            lines.append(f' ---> {image_store.short_id(image_id)}')
        record['image'] = image_store.short_id(image_id)
        if image_id and step.kind != 'metadata' and record['layer'] is None:
            document = store.image(image_id)
            record['layer'] = store.diff_dir(document['layers'][-1]) if document['layers'] else None
    warnings_text = []
    if planned.unused_build_args:
        warnings_text.append(f'[Warning] One or more build-args {planned.unused_build_args} were not consumed')
    result = {'lines': lines, 'steps': steps, 'warnings_text': warnings_text, 'changed': changed}
    if failed_step:
        result['failed_step'] = failed_step
        return result
    tags_before = store.tags()
    if image_id:
        lines.append(f'Successfully built {image_store.short_id(image_id)}')
        if params['name']:
            if check_mode:
                changed = changed or tags_before.get(params['name']) != image_id
            else:
                changed = store.tag(params['name'], image_id) or changed
            lines.append(f'Successfully tagged {params["name"]}')
        result['image'] = image_description(store, image_id)
    else:
        changed = True
        result['image'] = {'id': None}
    result['changed'] = changed
    before = tags_before.get(params['name'] or '', None)
    built = [f'step {item["number"]}: {item["instruction"]}' for item in steps if item['built']]
    result['diff'] = {'before': f'{params["name"] or "image"}: {before or "(none)"}\n',
                      'after': f'{params["name"] or "image"}: {image_id or "(a new image)"}\n'
                               + ''.join(f'builds {line}\n' for line in built)}
    return result


def heal(module, store) -> list[str]:
    """Unmount and remove what a killed run left in the store (its step overlays under tmp/, temporary files,
    layers committed before their image); returns what went. Called with the store's lock held."""
    debris = store.debris()
    if not debris:
        return []
    umount = module.get_bin_path('umount', required=True)
    for entry in reversed(mountinfo.mounts_below(store.tmp)):
        rc, _out, _err = cmd.run(module, [umount, entry.mount_point])
        if rc != 0:
            cmd.run(module, [umount, '--lazy', entry.mount_point])
    still = mountinfo.mounts_below(store.tmp)
    if still:
        raise BuildFailed(f'{still[0].mount_point} (a step overlay an interrupted run left) cannot be unmounted; '
                          f'unmount it by hand (umount {still[0].mount_point}), then run again.')
    for path in debris:
        if os.path.isdir(path) and not os.path.islink(path):
            image_store.remove_tree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    return debris


def image_description(store, image_id: str) -> dict:
    summary = image_store.image_summary(store, image_id)
    config = summary['config']
    summary['command'] = dockerfile.container_command(config)
    summary['env'] = dockerfile.env_dict(config.get('Env'))
    summary['workdir'] = config.get('WorkingDir') or None
    return summary


def absent(module, store, check_mode: bool):
    in_use = [use for layer_dir in store.layer_dirs() for use in mountinfo.uses_of_tree(layer_dir)]
    entries = [os.path.join(store.root, entry) for entry in image_store.STORE_ENTRIES
               if os.path.lexists(os.path.join(store.root, entry))]
    if in_use:
        where = sorted({use.entry.mount_point for use in in_use})
        msg = (f'the image store {store.root} is in use: {", ".join(where)} mounts its layers. Unmount first '
               f'(unboxed.lab.overlay_mount state=unmounted), then run again.')
        if check_mode:
            module.warn(msg + ' Check mode assumes an earlier task of this run unmounts it.')
        else:
            module.fail_json(msg=msg, removed=[])
    if not entries:
        module.exit_json(changed=False, removed=[])
    if check_mode:
        module.exit_json(changed=True, removed=entries, diff={'before': f'{store.root}: present\n', 'after': f'{store.root}: absent\n'})
    removed = store.remove()
    module.exit_json(changed=True, removed=removed, diff={'before': f'{store.root}: present\n', 'after': f'{store.root}: absent\n'})


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[('src', 'dockerfile')])
    params = module.params
    if params['src'] or params['context_dir']:
        module.fail_json(msg='src and context_dir are read by the action plugin on the controller; this module got them '
                             'unread. Call it as unboxed.lab.image_build from a play (the action plugin runs then).')
    problems = request_problems(params)
    if problems:
        module.fail_json(msg=' '.join(problems), problems=problems)
    store = image_store.Store(paths.normalize(params['store']))
    if params['state'] == 'absent':
        with locking.exclusive('layer', store.root, timeout=params['lock_timeout'], note='image_build absent') \
                if not module.check_mode else _no_lock():
            absent(module, store, module.check_mode)
    try:
        if module.check_mode:
            healed = store.debris()
            result = build(module, params, store, check_mode=True)
        else:
            with locking.exclusive('layer', store.root, timeout=params['lock_timeout'], note='image_build'):
                created = store.ensure()
                try:
                    healed = heal(module, store)
                    result = build(module, params, store, check_mode=False)
                except BaseException:
                    store.discard_created(created)
                    raise
                if 'failed_step' in result:
                    store.discard_created(created)
    except dockerfile.DockerfileError as error:
        module.fail_json(msg=str(error), line=error.line, column=error.column, changed=False)
    except BuildFailed as error:
        module.fail_json(msg=str(error), changed=False, **error.details)
    except locking.LockTimeout as error:
        module.fail_json(msg=locking.timeout_message(f'the image store {store.root}', error))
    if healed:
        result['healed'] = healed
        result['changed'] = True
        module.warn(f'An earlier run on {store.root} was interrupted; removed what it left: {", ".join(healed)}.')
    if 'failed_step' in result:
        step = result['failed_step']
        module.fail_json(msg=f'Step {step["number"]} failed: {step["instruction"]} returned a non-zero code: {step["rc"]}. '
                             f'No layer was kept for it; earlier steps stay in the build cache.',
                         rc=step['rc'], **result)
    for warning in result['warnings_text']:
        module.warn(warning)
    module.exit_json(**result)


class _no_lock:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == '__main__':
    main()
