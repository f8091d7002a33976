from __future__ import annotations

import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import image_store
from ansible_collections.unboxed.lab.plugins.modules import image_build


def params(**overrides):
    base = dict(dockerfile='FROM scratch\n', context=[], name='talk:latest', build_args={}, base_images={},
                base_dir='/var/cache/unboxed/base', store='/var/lib/unboxed', state='present', lock_timeout=60,
                src=None, context_dir=None)
    base.update(overrides)
    return base


@pytest.mark.parametrize('overrides, fragment', [
    (dict(store='relative/store'), 'store must be an absolute path'),
    (dict(store='/'), 'store'),
    (dict(lock_timeout=-1), 'lock_timeout'),
    (dict(dockerfile=''), 'dockerfile is empty'),
    (dict(name='Talk:Latest'), 'not an image name'),
    (dict(name='talk:latest extra'), 'not an image name'),
    (dict(build_args={'1A': 'x'}), 'not an ARG name'),
    (dict(build_args={'A': ['x']}), 'build_args.A must be a string'),
    (dict(context=[{'path': '../x', 'type': 'file'}]), 'context[0]'),
    (dict(context=[{'path': 'x', 'type': 'socket'}]), 'context[0]'),
])
def test_request_problems(overrides, fragment):
    assert any(fragment in problem for problem in image_build.request_problems(params(**overrides)))


def test_good_request_has_no_problem():
    assert image_build.request_problems(params()) == []


def test_base_source_debian_archives(tmp_path):
    for suite, age in (('trixie', 100), ('trixie', 10), ('bookworm', 5)):
        path = tmp_path / f'debian-{suite}-minbase-amd64-{age}.tar.gz'
        path.write_bytes(b'')
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    (tmp_path / 'debian-trixie-minbase-amd64-x.partial.tar.gz').write_bytes(b'')
    assert image_build.base_source('debian:latest', {}, str(tmp_path)) == \
        ('archive', str(tmp_path / 'debian-trixie-minbase-amd64-10.tar.gz'))
    assert image_build.base_source('debian', {}, str(tmp_path))[1].endswith('trixie-minbase-amd64-10.tar.gz')
    assert image_build.base_source('debian:bookworm', {}, str(tmp_path))[1].endswith('bookworm-minbase-amd64-5.tar.gz')
    assert image_build.base_source('scratch', {}, str(tmp_path)) == ('scratch', None)
    with pytest.raises(image_build.BuildFailed, match='no Debian sid base archive'):
        image_build.base_source('debian:sid', {}, str(tmp_path))
    with pytest.raises(image_build.BuildFailed, match='fetches nothing from a registry'):
        image_build.base_source('alpine:3', {}, str(tmp_path))
    with pytest.raises(image_build.BuildFailed, match='does not exist on this host'):
        image_build.base_source('mine:1', {'mine:1': str(tmp_path / 'nothere')}, str(tmp_path))
    assert image_build.base_source('mine', {'mine:latest': str(tmp_path)}, str(tmp_path)) == ('image', str(tmp_path))


def test_cache_key_depends_on_parent_and_text():
    key = image_store.cache_key('a' * 64, '/bin/sh -c echo hi')
    assert key == image_store.cache_key('a' * 64, '/bin/sh -c echo hi')
    assert key != image_store.cache_key('b' * 64, '/bin/sh -c echo hi')
    assert key != image_store.cache_key('a' * 64, '|1 A=b /bin/sh -c echo hi')


def test_store_writes_atomically_and_reads_back(tmp_path):
    store = image_store.Store(str(tmp_path / 'store'))
    assert not store.exists() and store.image('0' * 64) is None
    store.ensure()
    scratch = store.scratch()
    upper = os.path.join(scratch, 'upper')
    os.mkdir(upper)
    with open(os.path.join(upper, 'file01.txt'), 'w', encoding='utf-8') as handle:
        handle.write('Texto\n')
    layer = store.commit_layer(scratch, upper, [])
    image_id = store.write_image({'config': {'Cmd': ['sh']}}, [layer])
    store.remember('k' * 64, image_id)
    assert store.cached('k' * 64) == image_id
    assert store.tag('talk:latest', image_id) is True and store.tag('talk:latest', image_id) is False
    assert store.image(image_id)['layers'] == [layer]
    summary = image_store.image_summary(store, image_id)
    assert summary['lowerdirs'] == [store.diff_dir(layer)] and summary['short_id'] == image_id[:12]
    image_store.remove_tree(store.diff_dir(layer))
    assert store.image(image_id) is None and store.cached('k' * 64) is None   # a missing layer is no cache hit
    removed = store.remove()
    assert store.root in removed and not os.path.exists(store.root)


def test_tree_digest_sees_content_and_mode(tmp_path):
    (tmp_path / 'f').write_text('a')
    first = image_store.tree_digest(str(tmp_path))
    (tmp_path / 'f').write_text('b')
    second = image_store.tree_digest(str(tmp_path))
    os.chmod(tmp_path / 'f', 0o600)
    assert len({first, second, image_store.tree_digest(str(tmp_path))}) == 3


def test_discard_created_takes_back_an_empty_store_skeleton_and_its_parents(tmp_path):
    store = image_store.Store(str(tmp_path / 'new' / 'parent' / 'store'))
    created = store.ensure()
    assert created[:3] == [str(tmp_path / 'new'), str(tmp_path / 'new' / 'parent'), store.root]
    assert store.ensure() == []
    assert set(store.discard_created(created)) == set(created)
    assert os.listdir(tmp_path) == []


def test_discard_created_keeps_everything_once_something_was_kept(tmp_path):
    store = image_store.Store(str(tmp_path / 'store'))
    created = store.ensure()
    store.write_image({'config': {}}, [])
    assert store.discard_created(created) == []
    assert os.path.isdir(store.tmp) and len(os.listdir(store.images_dir)) == 1


def test_discard_created_leaves_what_was_there_before(tmp_path):
    store = image_store.Store(str(tmp_path / 'store'))
    os.mkdir(store.root)
    (tmp_path / 'store' / 'repositories.json').write_text('{}\n')
    created = store.ensure()
    assert store.root not in created
    store.discard_created(created)
    assert os.listdir(store.root) == ['repositories.json']


def test_debris_names_what_a_killed_run_left_and_nothing_else(tmp_path):
    store = image_store.Store(str(tmp_path / 'store'))
    store.ensure()
    kept_scratch = store.scratch()
    os.mkdir(os.path.join(kept_scratch, 'upper'))
    kept = store.commit_layer(kept_scratch, os.path.join(kept_scratch, 'upper'), [])
    store.write_image({'config': {'n': 1}}, [kept])
    orphan_scratch = store.scratch()
    os.mkdir(os.path.join(orphan_scratch, 'upper'))
    orphan = store.commit_layer(orphan_scratch, os.path.join(orphan_scratch, 'upper'), [kept])
    step = store.scratch()
    half_json = os.path.join(store.images_dir, '.tmp-abc')
    with open(half_json, 'w', encoding='utf-8') as handle:
        handle.write('{"con')
    debris = store.debris()
    assert store.layer_dir(orphan) in debris and half_json in debris and step in debris
    assert kept_scratch in debris and orphan_scratch in debris       # the scratch dirs the test did not remove
    assert store.layer_dir(kept) not in debris
    orphan_link = [path for path in debris if '/l/' in path]
    assert len(orphan_link) == 1 and os.readlink(orphan_link[0]) == f'../{orphan}/diff'


def _tar_bytes(members, mode='w'):
    """A tar archive in memory: members are (name, kind, data) with kind file, dir, sym or lnk."""
    import io
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid = os.getuid(), os.getgid()
            info.mtime = 1_000_000
            if kind == 'dir':
                info.type, info.mode = tarfile.DIRTYPE, 0o750
                tar.addfile(info)
            elif kind in ('sym', 'lnk'):
                info.type = tarfile.SYMTYPE if kind == 'sym' else tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o640
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


GOOD_MEMBERS = [('app', 'dir', None), ('app/run.sh', 'file', b'echo hi\n'), ('app/current', 'sym', 'run.sh'),
                ('app/again.sh', 'lnk', 'app/run.sh'), ('./top.txt', 'file', b'top\n')]


@pytest.mark.parametrize('mode', ['w', 'w:gz', 'w:bz2', 'w:xz'])
def test_add_unpacks_a_local_tar_archive_of_every_compression(tmp_path, mode):
    from ansible_collections.unboxed.lab.plugins.module_utils import oci
    tar = oci.open_add_archive(_tar_bytes(GOOD_MEMBERS, mode))
    assert tar is not None
    target = tmp_path / 'dest'
    target.mkdir()
    written = oci.unpack_add_archive(tar, str(target))
    assert sorted(written) == ['app', 'app/again.sh', 'app/current', 'app/run.sh', 'top.txt']
    assert (target / 'app' / 'run.sh').read_bytes() == b'echo hi\n'
    assert os.readlink(target / 'app' / 'current') == 'run.sh'
    assert os.stat(target / 'app' / 'again.sh').st_ino == os.stat(target / 'app' / 'run.sh').st_ino
    assert os.stat(target / 'app').st_mode & 0o777 == 0o750
    assert os.stat(target / 'top.txt').st_mode & 0o777 == 0o640 and os.stat(target / 'top.txt').st_mtime == 1_000_000


@pytest.mark.parametrize('data', [b'', b'just a text file\n', __import__('gzip').compress(b'not a tar inside\n')])
def test_add_copies_what_is_not_a_tar_archive(data):
    from ansible_collections.unboxed.lab.plugins.module_utils import oci
    assert oci.open_add_archive(data) is None


@pytest.mark.parametrize('members, fragment', [
    ([('../escaped', 'file', b'x')], '"../escaped" points outside the destination'),
    ([('app/../../escaped', 'file', b'x')], 'points outside the destination'),
    ([('/etc/evil', 'file', b'x')], '"/etc/evil" points outside the destination'),
    ([('ok', 'file', b'x'), ('hard', 'lnk', '../../etc/passwd')], 'is a hard link to "../../etc/passwd"'),
    ([('out', 'sym', '/'), ('out/escaped', 'file', b'x')], '"out/escaped" writes below out, which is a symbolic link'),
])
def test_add_refuses_archive_entries_that_escape_the_destination(tmp_path, members, fragment):
    from ansible_collections.unboxed.lab.plugins.module_utils import oci
    target = tmp_path / 'dest'
    target.mkdir()
    with pytest.raises(oci.ImageError, match=None) as raised:
        oci.unpack_add_archive(oci.open_add_archive(_tar_bytes(members)), str(target))
    assert fragment in str(raised.value)
    assert not (tmp_path / 'escaped').exists() and not os.path.exists('/escaped')
    if 'outside the destination' in fragment or 'hard link' in fragment:
        assert os.listdir(target) == []          # refused before anything was written


def test_add_archives_only_for_add_and_only_for_archive_files():
    import base64
    from ansible_collections.unboxed.lab.plugins.module_utils import dockerfile
    archive = base64.b64encode(_tar_bytes(GOOD_MEMBERS, 'w:gz')).decode()
    entries = [{'path': 'app.tgz', 'type': 'file', 'mode': 0o644, 'content': archive},
               {'path': 'notes.txt', 'type': 'file', 'mode': 0o644, 'content': base64.b64encode(b'hi\n').decode()}]
    for keyword, expected in (('ADD', ['app.tgz']), ('COPY', [])):
        parsed = dockerfile.parse(f'FROM scratch\n{keyword} app.tgz notes.txt /opt/\n')
        step = dockerfile.plan(parsed, {}, None).steps[1]
        assert [entry['path'] for entry, _tar in image_build.add_archives(step, entries)] == expected
