"""unboxed.lab.image_build on a real kernel: real overlay mounts, real namespaces, through the ansible CLI.

The base is a tiny busybox image written here as an OCI layout (a tar layer, config, manifest, index with sha256
digests): nothing is fetched. The talk's own Dockerfile is built FROM the Debian archive of role base_rootfs when
this machine holds one.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import BIN, REPO, ansible_env, kill_module_after, make_busybox_rootfs, snapshot_mounts, snapshot_tree

from ansible_collections.unboxed.lab.plugins.module_utils import image_store

TALK = 'FROM debian:latest\nRUN echo "Texto" > /file01.txt\nCMD ["tail", "-f", "/dev/null"]\n'


def sha256(data: bytes) -> str:
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def tar_of_tree(root: str, extra=()) -> bytes:
    """An uncompressed layer tar of a directory, plus (name, TarInfo-kind) extras such as whiteout files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w', format=tarfile.PAX_FORMAT) as tar:
        if root:
            for name in sorted(os.listdir(root)):
                tar.add(os.path.join(root, name), arcname=name)
        for name, content in extra:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def write_oci(layout: str, layers: list[bytes], config_extra=None, gzip_layers=False, ref='busybox:test') -> dict:
    """Write an OCI image layout by hand; returns the digests."""
    blobs = os.path.join(layout, 'blobs', 'sha256')
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha256(data)
        with open(os.path.join(blobs, digest.split(':')[1]), 'wb') as handle:
            handle.write(data)
        return digest

    layer_descriptors, diff_ids = [], []
    for layer in layers:
        diff_ids.append(sha256(layer))
        blob = gzip.compress(layer) if gzip_layers else layer
        media = 'application/vnd.oci.image.layer.v1.tar' + ('+gzip' if gzip_layers else '')
        layer_descriptors.append({'mediaType': media, 'digest': put(blob), 'size': len(blob)})
    config = {'architecture': 'amd64', 'os': 'linux',
              'config': dict({'Env': ['PATH=/bin'], 'Cmd': ['sh']}, **(config_extra or {})),
              'rootfs': {'type': 'layers', 'diff_ids': diff_ids},
              'history': [{'created_by': f'layer {index}'} for index in range(len(layers))]}
    config_bytes = json.dumps(config).encode()
    manifest = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
                'config': {'mediaType': 'application/vnd.oci.image.config.v1+json', 'digest': put(config_bytes),
                           'size': len(config_bytes)},
                'layers': layer_descriptors}
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = put(manifest_bytes)
    with open(os.path.join(layout, 'oci-layout'), 'w', encoding='utf-8') as handle:
        json.dump({'imageLayoutVersion': '1.0.0'}, handle)
    with open(os.path.join(layout, 'index.json'), 'w', encoding='utf-8') as handle:
        json.dump({'schemaVersion': 2, 'manifests': [{
            'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'digest': manifest_digest,
            'size': len(manifest_bytes), 'annotations': {'org.opencontainers.image.ref.name': ref}}]}, handle)
    return {'manifest': manifest_digest, 'layers': [d['digest'] for d in layer_descriptors]}


@pytest.fixture(scope='module')
def busybox_layer(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('busybox') / 'rootfs')
    make_busybox_rootfs(root)
    with open(os.path.join(root, 'etc', 'motd'), 'w', encoding='utf-8') as handle:
        handle.write('from the base\n')
    os.makedirs(os.path.join(root, 'data'))
    for name in ('keep', 'drop'):
        with open(os.path.join(root, 'data', name), 'w', encoding='utf-8') as handle:
            handle.write(name + '\n')
    return tar_of_tree(root)


@pytest.fixture
def lab(workdir, busybox_layer):
    """A store, an OCI busybox image and a build context, all under the test's directory."""
    layout = str(workdir / 'busybox-oci')
    write_oci(layout, [busybox_layer])
    context = workdir / 'context'
    context.mkdir()
    return {'root': workdir, 'store': str(workdir / 'store'), 'oci': layout, 'context': str(context)}


class Builder:
    def __init__(self, run_module, lab):
        self.run_module, self.lab = run_module, lab

    def __call__(self, text, check=False, diff=False, **args):
        dockerfile = os.path.join(self.lab['context'], 'Dockerfile')
        with open(dockerfile, 'w', encoding='utf-8') as handle:
            handle.write(text)
        request = {'src': dockerfile, 'store': self.lab['store'], 'name': 'test:latest',
                   'base_images': {'busybox:test': self.lab['oci']}}
        request.update(args)
        return self.run_module('image_build', request, check=check, diff=diff)


@pytest.fixture
def build(run_module, lab):
    return Builder(run_module, lab)


def cached_flags(result):
    return [step['cached'] for step in result['steps']]


def layer_files(layer_dir):
    found = []
    for dirpath, dirnames, filenames in os.walk(layer_dir):
        for name in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), layer_dir))
    return sorted(found)


BUSYBOX_FILE = 'FROM busybox:test\nRUN echo "Texto" > /file01.txt\nCMD ["tail", "-f", "/dev/null"]\n'


def test_build_rebuild_and_edit_line_two(build, lab):
    started = time.monotonic()
    first = build(BUSYBOX_FILE)
    cold = time.monotonic() - started
    assert not first['failed'], first.get('msg')
    assert first['changed'] is True
    lines = first['lines']
    assert lines[0] == 'Step 1/3 : FROM busybox:test'
    assert 'Step 2/3 : RUN echo "Texto" > /file01.txt' in lines
    assert any(line.startswith(' ---> Running in ') for line in lines)
    assert lines[-2].startswith('Successfully built ') and lines[-1] == 'Successfully tagged test:latest'
    run_layer = first['steps'][1]['layer']
    assert layer_files(run_layer) == ['file01.txt']
    with open(os.path.join(run_layer, 'file01.txt'), encoding='utf-8') as handle:
        assert handle.read() == 'Texto\n'
    image = first['image']
    assert image['config']['Cmd'] == ['tail', '-f', '/dev/null']
    assert image['command'] == ['tail', '-f', '/dev/null']
    assert [entry.get('empty_layer', False) for entry in image['history']] == [False, False, True]
    assert len(image['lowerdirs']) == 2 and image['lowerdirs'][0] == run_layer
    assert os.listdir(os.path.join(lab['store'], 'tmp')) == []
    assert snapshot_mounts(lab['root']) == []

    before = snapshot_tree(lab['store'])
    started = time.monotonic()
    again = build(BUSYBOX_FILE)
    warm = time.monotonic() - started
    assert again['changed'] is False
    assert cached_flags(again) == [True, True, True]
    assert again['lines'].count(' ---> Using cache') == 2
    assert again['image']['id'] == image['id']
    assert snapshot_tree(lab['store']) == before
    print(f'busybox cold build {cold:.2f} s, all-cache rebuild {warm:.2f} s')

    check = build(BUSYBOX_FILE.replace('Texto', 'Outro'), check=True, diff=True)
    assert check['changed'] is True
    assert [step['built'] for step in check['steps']] == [False, True, True]
    assert snapshot_tree(lab['store']) == before

    edited = build(BUSYBOX_FILE.replace('Texto', 'Outro'))
    assert edited['changed'] is True
    assert cached_flags(edited) == [True, False, False]
    assert edited['steps'][0]['image'] == first['steps'][0]['image']
    assert edited['image']['id'] != image['id']


def test_failing_run_keeps_store_and_cache(build, lab):
    # A first build whose RUN fails keeps only what the steps before it made: the imported FROM image (step 1's
    # cache), no layer of the RUN, nothing under tmp/.
    first = build('FROM busybox:test\nRUN echo partial > /half && exit 4\n')
    assert first['failed'] is True and first['rc'] == 4
    assert first['changed'] is True      # the FROM image was imported and stays cached
    assert len(os.listdir(os.path.join(lab['store'], 'overlay2'))) == 2      # the busybox layer and l/
    assert len(os.listdir(os.path.join(lab['store'], 'images'))) == 1
    assert os.listdir(os.path.join(lab['store'], 'tmp')) == []
    assert snapshot_mounts(lab['root']) == []
    ok = build('FROM busybox:test\nRUN echo one > /one\n')
    assert not ok['failed'], ok.get('msg')
    before = snapshot_tree(lab['store'])
    failed = build('FROM busybox:test\nRUN echo one > /one\nRUN echo partial > /half && echo to-stderr >&2 && exit 3\n'
                   'CMD ["sh"]\n')
    assert failed['failed'] is True
    assert failed['rc'] == 3
    assert 'Step 3 failed' in failed['msg'] and 'non-zero code: 3' in failed['msg']
    assert 'to-stderr' in failed['failed_step']['output']
    assert cached_flags(failed)[:2] == [True, True]
    assert snapshot_tree(lab['store']) == before, 'a failed RUN left something in the store'
    assert snapshot_mounts(lab['root']) == []


def test_deletion_in_run_is_a_whiteout_that_hides_the_parent_file(build, lab, workdir, run_module):
    result = build('FROM busybox:test\nRUN rm /data/drop && rm -r /etc && mkdir /etc && echo new > /etc/only\n')
    assert not result['failed'], result.get('msg')
    layer = result['steps'][1]['layer']
    whiteout = os.lstat(os.path.join(layer, 'data', 'drop'))
    assert os.major(whiteout.st_rdev) == 0 and os.minor(whiteout.st_rdev) == 0
    assert os.path.exists(os.path.join(layer, 'etc', 'only'))
    assert os.getxattr(os.path.join(layer, 'etc'), 'trusted.overlay.opaque') == b'y'
    merged = workdir / 'merged'
    mount = run_module('overlay_mount', {'path': str(merged), 'lowerdirs': result['image']['lowerdirs']})
    assert not mount['failed'], mount.get('msg')
    try:
        assert sorted(os.listdir(merged / 'data')) == ['keep']
        assert sorted(os.listdir(merged / 'etc')) == ['only']
    finally:
        subprocess.run(['umount', str(merged)], check=True)


def test_oci_whiteouts_are_converted(build, lab, busybox_layer, workdir):
    top = tar_of_tree('', extra=[('data/.wh.drop', b''), ('etc/.wh..wh..opq', b''), ('etc/new', b'x\n')])
    layout = str(workdir / 'two-layers')
    write_oci(layout, [busybox_layer, top], gzip_layers=True, ref='two:layers')
    result = build('FROM two:layers\n', base_images={'two:layers': layout})
    assert not result['failed'], result.get('msg')
    top_layer = result['image']['layers'][1]
    device = os.lstat(os.path.join(top_layer, 'data', 'drop'))
    assert os.major(device.st_rdev) == 0 and not os.path.exists(os.path.join(top_layer, 'data', '.wh.drop'))
    assert os.getxattr(os.path.join(top_layer, 'etc'), 'trusted.overlay.opaque') == b'y'
    assert not os.path.exists(os.path.join(top_layer, 'etc', '.wh..wh..opq'))


@pytest.mark.parametrize('damage, fragment', [
    ('corrupt-layer', 'is corrupt'),
    ('wrong-diff-id', 'does not match the image config'),
    ('escaping-layer', 'outside the layer'),
    ('not-an-image', 'neither an OCI image layout'),
])
def test_bad_base_images_leave_the_store_unchanged(build, lab, workdir, busybox_layer, damage, fragment):
    layout = str(workdir / 'bad')
    if damage == 'escaping-layer':
        write_oci(layout, [tar_of_tree('', extra=[('../../escaped', b'x')])], ref='bad:image')
    elif damage == 'not-an-image':
        os.makedirs(layout)
    else:
        digests = write_oci(layout, [busybox_layer], ref='bad:image')
        if damage == 'corrupt-layer':
            blob = os.path.join(layout, 'blobs', 'sha256', digests['layers'][0].split(':')[1])
            with open(blob, 'r+b') as handle:
                handle.seek(600)
                handle.write(b'CORRUPTED')
        else:
            write_oci(layout, [busybox_layer + b'\0' * 1024], ref='bad:image')
            index_path = os.path.join(layout, 'index.json')
            # Keep the new manifest but point the config's diff_id at the old layer: a mismatch on unpack.
            with open(index_path, encoding='utf-8') as handle:
                index = json.load(handle)
            manifest_path = os.path.join(layout, 'blobs', 'sha256', index['manifests'][0]['digest'].split(':')[1])
            with open(manifest_path, encoding='utf-8') as handle:
                manifest = json.load(handle)
            manifest['layers'][0]['digest'] = digests['layers'][0]
            manifest_bytes = json.dumps(manifest).encode()
            with open(os.path.join(layout, 'blobs', 'sha256', sha256(manifest_bytes).split(':')[1]), 'wb') as handle:
                handle.write(manifest_bytes)
            index['manifests'][0]['digest'] = sha256(manifest_bytes)
            config_path = os.path.join(layout, 'blobs', 'sha256', manifest['config']['digest'].split(':')[1])
            with open(config_path, encoding='utf-8') as handle:
                config = json.load(handle)
            config['rootfs']['diff_ids'] = [sha256(b'something else')]
            config_bytes = json.dumps(config).encode()
            with open(os.path.join(layout, 'blobs', 'sha256', sha256(config_bytes).split(':')[1]), 'wb') as handle:
                handle.write(config_bytes)
            manifest['config']['digest'] = sha256(config_bytes)
            manifest_bytes = json.dumps(manifest).encode()
            with open(os.path.join(layout, 'blobs', 'sha256', sha256(manifest_bytes).split(':')[1]), 'wb') as handle:
                handle.write(manifest_bytes)
            index['manifests'][0]['digest'] = sha256(manifest_bytes)
            with open(index_path, 'w', encoding='utf-8') as handle:
                json.dump(index, handle)
    # A first build from the bad image leaves no store where there was none ...
    first = build('FROM bad:image\nRUN true\n', base_images={'bad:image': layout})
    assert first['failed'] is True and fragment in first['msg'], first['msg']
    assert not os.path.lexists(lab['store'])
    # ... and a later one leaves the store byte for byte as it was.
    assert not build('FROM busybox:test\n')['failed']
    before = snapshot_tree(lab['store'])
    result = build('FROM bad:image\nRUN true\n', base_images={'bad:image': layout})
    assert result['failed'] is True
    assert fragment in result['msg'], result['msg']
    assert snapshot_tree(lab['store']) == before
    assert not os.path.exists(str(workdir.parent / 'escaped'))


@pytest.mark.parametrize('dockerfile, fragment', [
    ('FROM busybox:test\nRUNN true\n', 'Dockerfile line 2, column 1: unknown instruction "RUNN"'),
    ('RUN true\n', 'RUN comes before FROM'),
    ('FROM busybox:test\nFROM busybox:test\n', 'multi-stage builds are not supported'),
    ('FROM busybox:test\nCMD ["tail", "-f" "/dev/null"]\n', 'Dockerfile line 2, column 19'),
    ('FROM busybox:test\nCOPY ../secret /x\n', 'Dockerfile line 2: COPY ../secret: "../secret" climbs out'),
    ('FROM busybox:test\nCOPY /etc/passwd /x\n', 'Dockerfile line 2: COPY /etc/passwd: "/etc/passwd" is an absolute path'),
    ('FROM busybox:test\nCOPY escape /x\n', 'leads out of the build context'),
    ('FROM busybox:test\nCOPY missing.txt /x\n', 'no such file or directory in the build context'),
    ('FROM nothere:1\n', 'fetches nothing from a registry'),
])
def test_bad_dockerfiles_change_nothing(build, lab, dockerfile, fragment):
    os.symlink('/etc/passwd', os.path.join(lab['context'], 'escape'))
    # Where there was no store, a bad first build leaves none (not even its empty directories).
    first = build(dockerfile)
    assert first['failed'] is True and fragment in first['msg'], first['msg']
    assert not os.path.lexists(lab['store'])
    assert not build('FROM busybox:test\n')['failed']
    before = snapshot_tree(lab['store'])
    result = build(dockerfile)
    assert result['failed'] is True
    assert fragment in result['msg'], result['msg']
    assert snapshot_tree(lab['store']) == before


def test_copy_from_the_context_and_metadata(build, lab):
    context = lab['context']
    os.makedirs(os.path.join(context, 'site', 'sub'))
    with open(os.path.join(context, 'site', 'index.html'), 'w', encoding='utf-8') as handle:
        handle.write('<h1>hi</h1>\n')
    with open(os.path.join(context, 'site', 'sub', 'a.txt'), 'w', encoding='utf-8') as handle:
        handle.write('a\n')
    os.symlink('index.html', os.path.join(context, 'site', 'home.html'))
    text = ('FROM busybox:test\nARG WHO=class\nENV GREETING="hello $WHO"\nWORKDIR /srv\nCOPY site/ www/\n'
            'COPY --chmod=600 site/sub/a.txt /root/\nUSER 1000\nLABEL talk=unboxed\nENTRYPOINT ["sh", "-c"]\n'
            'CMD ["cat /srv/www/index.html"]\n')
    result = build(text, build_args={'WHO': 'students'})
    assert not result['failed'], result.get('msg')
    copy_layer = result['steps'][4]['layer']
    assert layer_files(copy_layer) == ['srv', 'srv/www', 'srv/www/home.html', 'srv/www/index.html', 'srv/www/sub',
                                       'srv/www/sub/a.txt']
    assert os.readlink(os.path.join(copy_layer, 'srv/www/home.html')) == 'index.html'
    assert oct(os.stat(os.path.join(result['steps'][5]['layer'], 'root', 'a.txt')).st_mode & 0o777) == '0o600'
    config = result['image']['config']
    assert 'GREETING=hello students' in config['Env']
    assert (config['WorkingDir'], config['User'], config['Labels']) == ('/srv', '1000', {'talk': 'unboxed'})
    assert result['image']['command'] == ['sh', '-c', 'cat /srv/www/index.html']
    # A changed file in the context rebuilds the COPY and what follows; the steps before stay cached.
    with open(os.path.join(context, 'site', 'index.html'), 'w', encoding='utf-8') as handle:
        handle.write('<h1>changed</h1>\n')
    again = build(text, build_args={'WHO': 'students'})
    assert cached_flags(again) == [True, True, True, True, False, False, False, False, False, False]


def write_tar(path, members, mode):
    """A tar archive on disk: members are (name, data) files, or (name, None) directories."""
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))


def test_add_unpacks_local_tar_archives_and_copy_copies_them(build, lab):
    context = lab['context']
    names = {'w': 'plain.tar', 'w:gz': 'app.tar.gz', 'w:bz2': 'app.tar.bz2', 'w:xz': 'app.tar.xz'}
    for mode, name in names.items():
        write_tar(os.path.join(context, name), [('app', None), ('app/hello.txt', f'{mode}\n'.encode())], mode)
    text = ('FROM busybox:test\n' + ''.join(f'ADD {name} /{index}/\n' for index, name in enumerate(names.values()))
            + 'COPY app.tar.gz /copied/\nRUN cat /0/app/hello.txt /3/app/hello.txt > /both\n')
    result = build(text)
    assert not result['failed'], result.get('msg')
    for index, mode in enumerate(names):
        layer = result['steps'][1 + index]['layer']
        assert layer_files(layer) == [str(index), f'{index}/app', f'{index}/app/hello.txt'], mode
        with open(os.path.join(layer, str(index), 'app', 'hello.txt'), encoding='utf-8') as handle:
            assert handle.read() == f'{mode}\n'
    copied = result['steps'][5]['layer']
    assert layer_files(copied) == ['copied', 'copied/app.tar.gz']
    with open(os.path.join(result['steps'][6]['layer'], 'both'), encoding='utf-8') as handle:
        assert handle.read() == 'w\nw:xz\n'
    assert build(text)['changed'] is False

    # An archive with an entry that climbs out of the destination: refused, the store as it was.
    write_tar(os.path.join(context, 'evil.tar'), [('ok.txt', b'fine\n'), ('../../escaped', b'x\n')], 'w')
    before = snapshot_tree(lab['store'])
    refused = build('FROM busybox:test\nADD evil.tar /opt/\n')
    assert refused['failed'] is True
    assert 'Dockerfile line 2: ADD evil.tar' in refused['msg'] and 'points outside the destination' in refused['msg']
    assert snapshot_tree(lab['store']) == before
    assert snapshot_mounts(lab['root']) == []


def test_built_image_runs_with_ns_container(build, lab, workdir, run_module):
    result = build(BUSYBOX_FILE)
    assert not result['failed'], result.get('msg')
    image = result['image']
    merged = str(workdir / 'c' / 'merged')
    mount = run_module('overlay_mount', {'path': merged, 'lowerdirs': image['lowerdirs'],
                                         'upperdir': str(workdir / 'c' / 'upper'),
                                         'workdir': str(workdir / 'c' / 'work'), 'create_dirs': True})
    assert not mount['failed'], mount.get('msg')
    state_dir = str(workdir / 'state')
    started = None
    try:
        started = run_module('ns_container', {'name': 'buildtest', 'rootfs': merged, 'command': image['command'],
                                              'env': image['env'], 'state_dir': state_dir})
        assert not started['failed'], started.get('msg')
        pid = started['pid']
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            assert handle.read().split(b'\0')[:3] == [b'tail', b'-f', b'/dev/null']
        with open(os.path.join(merged, 'file01.txt'), encoding='utf-8') as handle:
            assert handle.read() == 'Texto\n'
    finally:
        if started and not started.get('failed'):
            run_module('ns_container', {'name': 'buildtest', 'state': 'absent', 'state_dir': state_dir})
        subprocess.run(['umount', merged], check=False)


def test_store_absent_refuses_while_mounted_then_removes(build, lab, workdir, run_module):
    result = build(BUSYBOX_FILE)
    merged = str(workdir / 'm')
    run_module('overlay_mount', {'path': merged, 'lowerdirs': result['image']['lowerdirs'], 'create_dirs': True})
    try:
        refused = run_module('image_build', {'store': lab['store'], 'state': 'absent'})
        assert refused['failed'] and 'in use' in refused['msg']
        assert os.path.isdir(os.path.join(lab['store'], 'overlay2'))
    finally:
        subprocess.run(['umount', merged], check=True)
    predicted = run_module('image_build', {'store': lab['store'], 'state': 'absent'}, check=True)
    assert predicted['changed'] and os.path.isdir(lab['store'])
    removed = run_module('image_build', {'store': lab['store'], 'state': 'absent'})
    assert removed['changed'] and not os.path.exists(lab['store'])
    assert run_module('image_build', {'store': lab['store'], 'state': 'absent'})['changed'] is False


DEBIAN_ARCHIVES = glob.glob('/var/cache/unboxed/base/debian-trixie-*.tar.gz')


@pytest.mark.skipif(not DEBIAN_ARCHIVES, reason='no Debian trixie base archive (role base_rootfs) on this machine')
def test_the_talks_dockerfile_from_the_debian_archive(build, lab):
    started = time.monotonic()
    first = build(TALK, name='talk:latest')
    cold = time.monotonic() - started
    assert not first['failed'], first.get('msg')
    assert first['lines'][:2] == ['Step 1/3 : FROM debian:latest', first['lines'][1]]
    assert layer_files(first['steps'][1]['layer']) == ['file01.txt']
    assert first['image']['command'] == ['tail', '-f', '/dev/null']
    started = time.monotonic()
    again = build(TALK, name='talk:latest')
    warm = time.monotonic() - started
    assert again['changed'] is False and cached_flags(again) == [True, True, True]
    print(f'debian cold build {cold:.2f} s, all-cache rebuild {warm:.2f} s')
    shutil.rmtree(lab['store'])


def test_check_mode_before_the_base_archive_is_there_predicts_the_whole_build(build, lab, workdir):
    # A --check of site.yml on a fresh seat: base_rootfs's copy of the archive is only predicted.
    empty = workdir / 'no-base-yet'
    empty.mkdir()
    predicted = build(TALK, check=True, base_dir=str(empty), base_images={})
    assert not predicted['failed'], predicted.get('msg')
    assert predicted['changed'] is True
    assert [step['built'] for step in predicted['steps']] == [True, True, True]
    assert any('no Debian trixie base archive' in warning for warning in predicted.get('warnings', []))
    assert not os.path.exists(lab['store'])
    real = build(TALK, base_dir=str(empty), base_images={})
    assert real['failed'] and 'no Debian trixie base archive' in real['msg']


# --- Reliability: a build killed at any instant, and two builds at once ----------------------------------------------


def async_build(tmp_dir, args, record_to=None):
    """``ansible -m unboxed.lab.image_build`` in the background (the action plugin, then the module)."""
    argv = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
            '-e', f'ansible_python_interpreter={sys.executable}', '-m', 'unboxed.lab.image_build', '-a', json.dumps(args)]
    return subprocess.Popen(argv, cwd=REPO, env=ansible_env(tmp_dir, record_to=record_to), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def build_args_for(lab):
    dockerfile = os.path.join(lab['context'], 'Dockerfile')
    with open(dockerfile, 'w', encoding='utf-8') as handle:
        handle.write(BUSYBOX_FILE)
    return {'src': dockerfile, 'store': lab['store'], 'name': 'test:latest', 'base_images': {'busybox:test': lab['oci']}}


def run_and_kill(tmp_dir, args, delay):
    """Start a build, wait for the module process, SIGKILL it ``delay`` seconds later (None: let it finish).
    Returns how long the module process lived."""
    proc = async_build(tmp_dir, args)
    lived = kill_module_after(proc, 'image_build', delay)
    assert lived is not None, 'the module process was never seen'
    return lived, proc.returncode


@pytest.fixture(scope='module')
def build_run_time(tmp_path_factory, busybox_layer):
    """How long the module process of a cold busybox build lives on this machine, measured once."""
    if os.geteuid() != 0:
        pytest.skip('needs root')
    scratch = tmp_path_factory.mktemp('calibrate')
    layout = str(scratch / 'oci')
    write_oci(layout, [busybox_layer])
    (scratch / 'context').mkdir()
    lab = {'store': str(scratch / 'store'), 'oci': layout, 'context': str(scratch / 'context')}
    lived, _rc = run_and_kill(str(scratch), build_args_for(lab), None)
    assert len(os.listdir(os.path.join(lab['store'], 'images'))) == 3, 'the calibration build did not complete'
    shutil.rmtree(lab['store'])
    return lived


def visible_state_is_whole(store_root):
    """Every layer under overlay2/ is complete (diff and link), every image names only whole layers, every
    cache entry leads to a whole image: what a reader of the store can see is never half made."""
    store = image_store.Store(store_root)
    for layer_dir in store.layer_dirs():
        assert os.path.isdir(os.path.join(layer_dir, 'diff')) and os.path.isfile(os.path.join(layer_dir, 'link')), layer_dir
    for name in os.listdir(store.images_dir) if os.path.isdir(store.images_dir) else []:
        if not name.startswith('.tmp-'):
            assert store.image(name[:-len('.json')]) is not None, name
    for key in os.listdir(store.cache_dir) if os.path.isdir(store.cache_dir) else []:
        if not key.startswith('.tmp-'):
            assert store.cached(key) is not None, key


@pytest.mark.parametrize('fraction', [0.3, 0.45, 0.55, 0.65, 0.75, 0.85])
def test_a_build_killed_at_any_instant_leaves_no_half_layer_and_the_rerun_heals(run_module, lab, build_run_time,
                                                                                fraction):
    args = build_args_for(lab)
    _lived, rc = run_and_kill(str(lab['root'].parent), args, fraction * build_run_time)
    # Where the kill lands depends on this machine's speed at that moment (a loaded machine may finish first, rc 0):
    # whatever it is, what the store shows must be whole and the rerun must heal it.
    if os.path.isdir(lab['store']):
        visible_state_is_whole(lab['store'])
    left = image_store.Store(lab['store']).debris() if os.path.isdir(lab['store']) else []

    rerun = run_module('image_build', args)
    assert rerun['failed'] is False, rerun.get('msg')
    assert sorted(rerun.get('healed', [])) == sorted(left)
    assert snapshot_mounts(lab['root']) == [], f'killed at {fraction:.0%} of {build_run_time:.2f} s: a mount stayed'
    store = image_store.Store(lab['store'])
    assert store.debris() == [] and os.listdir(store.tmp) == []
    visible_state_is_whole(lab['store'])
    layers = rerun['image']['layers']
    assert len(layers) == 2 and layer_files(layers[1]) == ['file01.txt']
    # Nothing duplicated: the layers on disk are exactly the image's (a killed import or step left none extra).
    assert sorted(store.layer_dirs()) == sorted(os.path.dirname(layer) for layer in layers)
    assert rerun['image']['command'] == ['tail', '-f', '/dev/null']
    print(f'killed at {fraction:.0%} of {build_run_time:.2f} s (rc {rc}): left {len(left)} things: {left}')


def test_two_builds_at_once_make_one_image(lab):
    args = build_args_for(lab)
    records = [str(lab['root'].parent / f'record-{index}.jsonl') for index in range(2)]
    procs = [async_build(str(lab['root'].parent), args, record_to=record) for record in records]
    outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    results = []
    for record in records:
        with open(record, encoding='utf-8') as handle:
            results.append(json.loads(handle.readline()))
    assert [entry['status'] for entry in results] == ['ok', 'ok'], outputs
    # One builds, the other waits for the store's lock and then finds every step in the cache.
    assert sorted(entry['result']['changed'] for entry in results) == [False, True], outputs
    assert len({entry['result']['image']['id'] for entry in results}) == 1
    store = image_store.Store(lab['store'])
    assert len(os.listdir(store.images_dir)) == 3           # FROM, RUN, CMD: each once
    assert len(store.layer_dirs()) == 2 and store.debris() == []
    assert snapshot_mounts(lab['root']) == []
