"""unboxed.lab.layer with ``layers``: an image's layers checked in one run. The pure parts - each layer's options
checked and named layers[N].option, the layers together, the combined result - and check-mode planning on a
real directory (tmp_path); real runs are tests/system/test_layer.py's."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.modules import layer

DIGEST = 'a' * 64
FILES = [{'path': '/file01.txt', 'content': 'Texto\n'}]


def params(layers, **overrides):
    base = dict(path=None, layers=layers, state='present', files=None, archive=None, checksum=None, keep_archive_in=None,
                remote_src=False, archive_name=None, directory_mode='0755', lock_timeout=60)
    base.update(overrides)
    return base


def talk(root='/overlay'):
    return [{'path': f'{root}/lower1-base', 'archive': '/var/cache/unboxed/base/debian.tar.gz', 'checksum': DIGEST,
             'keep_archive_in': '/var/cache/unboxed/base'},
            {'path': f'{root}/lower2-file', 'files': FILES}]


def test_the_talks_two_layers_are_one_valid_request():
    problems, requests = layer.layers_requests(params(talk()))
    assert problems == []
    assert [(request.option, request.layer, request.directory_mode) for request in requests] == [
        ('layers[0]', '/overlay/lower1-base', 0o755), ('layers[1]', '/overlay/lower2-file', 0o755)]
    assert requests[0].params['archive'] == '/var/cache/unboxed/base/debian.tar.gz' and requests[0].wanted == []
    assert requests[1].wanted == [{'inner': '/file01.txt', 'content': b'Texto\n', 'mode': 0o644, 'uid': None, 'gid': None,
                                   'option': 'layers[1].files[0]'}]


@pytest.mark.parametrize('second, expected', [
    ({'path': '/overlay/lower2-file', 'files': [{'path': '/a', 'content': 'x', 'mode': 'u+rwx'}]},
     ["layers[1].files[0].mode must be an octal mode such as '0644' (quoted), got 'u+rwx'."]),
    ({'path': '/overlay/lower2-file', 'files': [{'path': '../escape', 'content': 'x'}]},
     ['layers[1].files[0].path "../escape" contains "..": a layer file must stay inside the layer directory.']),
    ({'path': '/overlay/lower2-file', 'files': []}, ['layers[1].files is empty: list at least one file for the layer (path and content).']),
    ({'path': '/overlay/lower2-file', 'files': 'file01.txt'}, ['layers[1].files must be a list of files, each a dictionary with path and '
                                                               'content, such as [{path: /file01.txt, content: "Texto\\n"}]; got the '
                                                               "string 'file01.txt'."]),
    ({'path': '/overlay/lower2-file'}, ['layers[1] needs files or archive with state=present: the files of the layer, such as files: '
                                        '[{path: /file01.txt, content: "Texto\\n"}], or the archive that holds them.']),
    ({'files': FILES}, ['layers[1].path is missing: each layer needs its directory, such as /overlay/lower2-file.']),
    ({'path': 42, 'files': FILES}, ['layers[1].path must be a path, as a string; got the number 42.']),
    ({'path': 'lower2-file', 'files': FILES}, ['layers[1].path must be an absolute path, got "lower2-file" (write it from /, e.g. '
                                               '/overlay/lower2-file).']),
    ({'path': '/etc', 'files': FILES}, ['layers[1].path is "/etc", a system directory (the host\'s configuration): using it would hide '
                                        'or damage the running system. Use a directory of its own, such as /overlay/merged.']),
    ({'path': '/overlay/lower2-file', 'files': FILES, 'mode': '0644'}, ['layers[1] has unknown key mode; a layer takes path, files, '
                                                                        'archive, checksum, keep_archive_in, remote_src, archive_name, '
                                                                        'directory_mode.']),
    ({'path': '/overlay/lower2-file', 'files': FILES, 'directory_mode': 'rwx'},
     ["layers[1].directory_mode must be an octal mode such as '0644' (quoted), got 'rwx'."]),
    ({'path': '/overlay/lower2-file', 'files': FILES, 'archive': '/tmp/x.tar', 'checksum': DIGEST},
     ['layers[1].files and layers[1].archive are mutually exclusive: a layer is either the files listed or the files of an archive.']),
    ({'path': '/overlay/lower2-file', 'archive': '/tmp/x.tar', 'checksum': 'nope'},
     ["layers[1].checksum must be the archive's SHA-256, 64 hexadecimal digits in lower case; got 'nope'."]),
    ({'path': '/overlay/lower2-file', 'archive': '/tmp/x.tar', 'checksum': DIGEST, 'remote_src': 'perhaps'},
     ["layers[1].remote_src must be true or false; got the string 'perhaps'."]),
    ({'path': '/overlay/lower2-file', 'archive': '/tmp/x.tar', 'checksum': DIGEST, 'archive_name': ['x']},
     ['layers[1].archive_name must be a string; got a list.']),
    ({'path': '/overlay/lower1-base', 'files': FILES}, ['layers[1].path /overlay/lower1-base is the directory of layers[0].path '
                                                        '/overlay/lower1-base again: list each layer once.']),
    ({'path': '/overlay/lower1-base/etc', 'files': FILES}, ['layers[1].path /overlay/lower1-base/etc lies inside layers[0].path '
                                                            '/overlay/lower1-base: each layer is a directory of its own, beside '
                                                            'the others.']),
    ({'path': '/overlay', 'files': FILES}, ['layers[0].path /overlay/lower1-base lies inside layers[1].path /overlay: each layer '
                                            'is a directory of its own, beside the others.']),
])
def test_a_bad_layer_is_named_by_its_place_in_the_list_and_its_option(second, expected):
    request = talk()
    request[1] = second
    problems, _requests = layer.layers_requests(params(request))
    assert problems == expected


@pytest.mark.parametrize('value, expected', [
    ('lower2-file', "layers must be a list of layers, each a dictionary with path and files or archive"),
    ([], 'layers is empty: list at least one layer (path, and files or archive).'),
    (['/overlay/lower2-file'], "layers[0] must be a dictionary with path and files or archive, such as {path: /overlay/lower2-file"),
    ([None], 'layers[0] must be a dictionary'),
])
def test_the_list_itself_must_be_a_list_of_layers(value, expected):
    problems, _requests = layer.layers_requests(params(value))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_every_problem_of_every_layer_is_told_at_once():
    problems, _requests = layer.layers_requests(params([{'path': 'a', 'files': FILES}, {'path': '/overlay/b', 'files': [{'path': '/x'}]}],
                                                       lock_timeout=-1))
    assert [problem.split(' ', 1)[0] for problem in problems] == ['lock_timeout', 'layers[0].path', 'layers[1].files[0].content']


def test_a_layer_takes_the_modules_directory_mode_unless_it_says_its_own():
    problems, requests = layer.layers_requests(params([{'path': '/srv/a', 'files': FILES},
                                                       {'path': '/srv/b', 'files': FILES, 'directory_mode': '0700'}],
                                                      directory_mode='0750'))
    assert problems == [] and [request.directory_mode for request in requests] == [0o750, 0o700]


def test_absent_layers_take_only_their_path():
    problems, requests = layer.layers_requests(params([{'path': '/srv/a'}, {'path': '/srv/b', 'files': FILES}], state='absent'))
    assert problems == ['layers[1].files lists what to write into the layer; state=absent removes the whole layer directory, '
                        'so leave files out.']
    assert [request.layer for request in requests] == ['/srv/a', '/srv/b']


@pytest.mark.parametrize('args, error', [
    ({'layers': talk()}, None),
    ({'layers': talk(), 'path': '/overlay/lower2-file'}, 'parameters are mutually exclusive: layers|path'),
    ({'layers': talk(), 'files': FILES}, 'parameters are mutually exclusive: layers|files'),
    ({'layers': talk(), 'archive': '/tmp/a.tar'}, 'parameters are mutually exclusive: layers|archive'),
    ({'files': FILES}, 'one of the following is required: path, layers'),
    ({'layers': [{'path': '/srv/a'}], 'state': 'absent'}, None),
])
def test_one_layer_or_a_list_of_them_never_both(args, error):
    result = ArgumentSpecValidator(layer.argument_spec(), **layer.constraints()).validate(args)
    assert result.error_messages == ([error] if error else [])


class CheckModule:
    """What the module's functions ask of AnsibleModule in check mode."""

    check_mode = True

    def __init__(self):
        self.params = {'lock_timeout': 60, 'state': 'present'}
        self.warnings = []

    def warn(self, text):
        self.warnings.append(text)


def test_check_mode_plans_every_layer_and_a_parent_is_created_once(tmp_path):
    root = tmp_path / 'overlay'
    _problems, requests = layer.layers_requests(params([{'path': f'{root}/lower2-file', 'files': FILES},
                                                        {'path': f'{root}/lower3', 'files': [{'path': '/x/y', 'content': 'y\n'}]}]))
    results, failure = layer.converge(CheckModule(), requests)
    assert failure is None and not root.exists()
    assert [result['actions'] for result in results] == [
        [f'create directory {root}', f'create directory {root}/lower2-file', f'create {root}/lower2-file/file01.txt'],
        [f'create directory {root}/lower3', f'create directory {root}/lower3/x', f'create {root}/lower3/x/y']]
    combined = layer.layers_result(requests, results, None)
    assert combined['changed'] is True and len(combined['actions']) == 6
    assert [diff['after_header'] for diff in combined['diff']] == [f'{root}/lower2-file/file01.txt', f'{root}/lower3/x/y']
    assert all('diff' not in result for result in combined['layers'])
    assert 'transferred' not in combined


def test_a_layer_that_holds_what_is_asked_is_no_change_and_the_others_still_are(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'file01.txt').write_text('Texto\n')
    (tmp_path / 'a' / 'file01.txt').chmod(0o644)
    _problems, requests = layer.layers_requests(params([{'path': f'{tmp_path}/a', 'files': FILES},
                                                        {'path': f'{tmp_path}/b', 'files': FILES}]))
    results, failure = layer.converge(CheckModule(), requests)
    assert failure is None and [result['changed'] for result in results] == [False, True]
    assert layer.layers_result(requests, results, None)['changed'] is True
    _problems, requests = layer.layers_requests(params([{'path': f'{tmp_path}/a', 'files': FILES}]))
    assert layer.layers_result(requests, *layer.converge(CheckModule(), requests))['changed'] is False


def test_a_layer_the_host_refuses_stops_the_run_before_any_change_naming_it(tmp_path):
    (tmp_path / 'b').write_text('a file, not a layer directory\n')
    _problems, requests = layer.layers_requests(params([{'path': f'{tmp_path}/a', 'files': FILES},
                                                        {'path': f'{tmp_path}/b', 'files': FILES}]))
    results, failure = layer.converge(CheckModule(), requests)
    assert results == [] and failure.index == 1
    combined = layer.layers_result(requests, results, failure)
    assert combined['msg'] == f'layers[1] ({tmp_path}/b): path "{tmp_path}/b" exists and is not a directory.'
    assert combined['changed'] is False and [result['changed'] for result in combined['layers']] == [False]
    assert combined['problems'] == [f'path "{tmp_path}/b" exists and is not a directory.']


def test_an_archive_layer_is_compared_by_its_record(tmp_path):
    base = tmp_path / 'lower1-base'
    base.mkdir()
    (tmp_path / '.lower1-base.sha256').write_text(f'{DIGEST}  debian.tar.gz\n')
    spec = {'path': str(base), 'archive': '/var/cache/unboxed/base/debian.tar.gz', 'checksum': DIGEST}
    _problems, requests = layer.layers_requests(params([spec, {'path': f'{tmp_path}/lower2-file', 'files': FILES}]))
    results, failure = layer.converge(CheckModule(), requests)
    assert failure is None and [result['changed'] for result in results] == [False, True]
    combined = layer.layers_result(requests, results, None)
    assert combined['transferred'] is False and combined['layers'][0]['record'] == f'{DIGEST}  debian.tar.gz'

    _problems, requests = layer.layers_requests(params([dict(spec, checksum='b' * 64)]))
    results, failure = layer.converge(CheckModule(), requests)
    assert results[0]['changed'] is True and results[0]['actions'][-1] == f'record {"b" * 64}  debian.tar.gz in {tmp_path}/.lower1-base.sha256'
    assert layer.layers_result(requests, results, None)['diff'][0]['before'] == f'{DIGEST}  debian.tar.gz\n'


def test_layers_that_need_their_archive_are_named_and_nothing_is_said_changed():
    requests = [layer.Request('layers[0]', '/o/a', {}, [], 0o755), layer.Request('layers[1]', '/o/b', {}, [], 0o755)]
    results = [dict(path='/o/a', actions=['unpack debian.tar.gz into /o/a'], command='tar', transferred=False, changed=False,
                    needs_transfer=True), dict(path='/o/b', actions=[], command='mkdir', changed=False)]
    combined = layer.layers_result(requests, results, None)
    assert combined['needs_transfer'] == [0] and combined['changed'] is False
    assert 'needs_transfer' not in combined['layers'][0]


@pytest.fixture
def layer_action():
    # The action plugin is controller code: ansible-test's module unit tests run without it (pytest tests/unit has it).
    return pytest.importorskip('ansible_collections.unboxed.lab.plugins.action.layer')


@pytest.mark.parametrize('text, sent, expected', [
    ('layers[0].files[1].mode must be', [1], 'layers[1].files[1].mode must be'),
    ('layers[1] (/o/c): path "/o/c" exists', [0, 2], 'layers[2] (/o/c): path "/o/c" exists'),
    (['layers[0].path is missing', 'layers[1].files is empty'], [1, 3], ['layers[1].path is missing', 'layers[3].files is empty']),
    ('lock_timeout must be 0 or more seconds', [2], 'lock_timeout must be 0 or more seconds'),
])
def test_the_plugin_names_a_layer_by_its_place_in_the_task_not_in_what_it_sent(layer_action, text, sent, expected):
    assert layer_action.renumber(text, sent) == expected


@pytest.mark.parametrize('spec, state, expected', [
    ({'path': '/o/a', 'archive': 'debian.tar.gz'}, 'present', True),
    ({'path': '/o/a', 'archive': 'debian.tar.gz', 'remote_src': 'yes'}, 'present', False),
    ({'path': '/o/a', 'archive': 'debian.tar.gz', 'remote_src': 'perhaps'}, 'present', False),
    ({'path': '/o/a', 'archive': 'debian.tar.gz'}, 'absent', False),
    ({'path': '/o/a', 'files': FILES}, 'present', False),
    ({'path': '/o/a', 'archive': ['debian.tar.gz']}, 'present', False),
    ('/o/a', 'present', False),
])
def test_the_plugin_looks_on_the_controller_only_for_an_archive_of_the_controller(layer_action, spec, state, expected):
    assert layer_action.from_controller(spec, state) is expected
