"""ns_container's O(overlay): validated by overlay.py with the container's option names, and its pure helpers."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import overlay as overlay_utils
from ansible_collections.unboxed.lab.plugins.modules import ns_container
from ansible_collections.unboxed.lab.tests.unit.plugins.modules.test_ns_container_module import params

LAYERS = dict(lowerdirs=['/overlay/layer2', '/overlay/layer1'], upperdir='/overlay/upper', workdir='/overlay/work',
              options=[], create_dirs=True)


def test_the_overlay_suboptions_are_overlay_pys():
    spec = ns_container.argument_spec()
    assert spec['overlay']['options'] == overlay_utils.OPTION_SPEC
    assert spec['containers']['options']['overlay']['options'] == overlay_utils.OPTION_SPEC
    assert 'persist' not in spec['overlay']['options'] and 'fstab' not in spec['overlay']['options']


def test_a_good_overlay_has_no_problem_to_start_or_to_remove():
    assert ns_container.request_problems(params(overlay=dict(LAYERS))) == []
    assert ns_container.request_problems(params(state='absent', command=None, overlay=dict(LAYERS, lowerdirs=None))) == []


@pytest.mark.parametrize('overrides, layers, fragment', [
    (dict(rootfs=None), {}, 'overlay needs rootfs'),
    (dict(rootfs=None, state='absent'), {}, 'overlay needs rootfs'),
    (dict(), dict(lowerdirs=[]), 'overlay.lowerdirs is empty'),
    (dict(), dict(lowerdirs=['layer']), 'overlay.lowerdirs[0]'),
    (dict(), dict(lowerdirs=['/overlay/l', '/overlay/l']), 'overlay.lowerdirs lists "/overlay/l" more than once'),
    (dict(), dict(workdir=None), 'overlay.upperdir is set but overlay.workdir is empty'),
    (dict(), dict(upperdir='/overlay/merged/upper'), 'overlay.upperdir "/overlay/merged/upper" is inside rootfs'),
    (dict(), dict(workdir='/overlay/upper/work'), 'are inside one another'),
    (dict(), dict(options=['upperdir=/x']), 'overlay.options item "upperdir=/x" sets a layer'),
    (dict(), dict(lowerdirs=['/overlay/merged']), 'and rootfs "/overlay/merged" overlap'),
    (dict(), dict(upperdir='/etc/upper'), 'overlay.upperdir'),
])
def test_bad_overlay_names_the_suboption(overrides, layers, fragment):
    problems = ns_container.request_problems(params(overlay=dict(LAYERS, **layers), **overrides))
    assert any(fragment in problem for problem in problems), problems


def test_a_rootfs_problem_is_said_once():
    problems = ns_container.request_problems(params(rootfs='/usr', overlay=dict(LAYERS)))
    assert len([problem for problem in problems if problem.startswith('rootfs')]) == 1, problems


def test_an_item_overlay_is_named_with_its_item():
    items = [dict(name='web', rootfs='/overlay/merged', command=['tail', '-f', '/dev/null'],
                  overlay=dict(lowerdirs=['relative'], upperdir='/overlay/upper', workdir='/overlay/work'))]
    validated = ArgumentSpecValidator(ns_container.argument_spec(), **ns_container.constraints()).validate(
        dict(containers=items))
    assert validated.error_messages == []
    problems = ns_container.containers_problems(validated.validated_parameters)
    assert problems and problems[0].startswith('containers[0].overlay.lowerdirs[0]'), problems


@pytest.mark.parametrize('state, mounted', [('started', 'mounted'), ('restarted', 'mounted'), ('stopped', 'unmounted'),
                                            ('absent', 'unmounted')])
def test_overlay_params_mount_for_a_start_and_unmount_for_a_stop(state, mounted):
    result = ns_container.overlay_params(params(state=state, lock_timeout=7, overlay=dict(LAYERS)))
    assert result == dict(LAYERS, path='/overlay/merged', state=mounted, lock_timeout=7)
    # No persist key: overlay.py then leaves every fstab alone.
    assert 'persist' not in result


def test_diffs_go_before_or_after_the_containers():
    result = {'diff': {'before': 'a'}}
    ns_container.add_diffs(result, [{'before': 'mount'}], first=True)
    ns_container.add_diffs(result, {'before': 'net'})
    assert result['diff'] == [{'before': 'mount'}, {'before': 'a'}, {'before': 'net'}]
    without = {}
    ns_container.add_diffs(without, {'before': 'net'})
    assert without == {}


# ---- userns_remap with overlay: layer_shift's options, named as ns_container names them --------------------------------

def remapped(**overrides):
    return params(**dict(dict(userns_remap='dockremap', userns_remap_root='/var/lib/unboxed/remap', userns_remap_create=False,
                              overlay=dict(LAYERS)), **overrides))


def test_a_good_remapped_request_has_no_problem():
    assert ns_container.request_problems(remapped()) == []
    assert ns_container.request_problems(remapped(userns_remap_create=True)) == []


@pytest.mark.parametrize('overrides, layers, fragment', [
    (dict(userns_remap_root='remap'), {}, 'userns_remap_root'),
    (dict(userns_remap_root='/overlay/layer1/remap'), {}, 'userns_remap_root /overlay/layer1/remap is inside overlay.lowerdirs[1]'),
    (dict(), dict(lowerdirs=['/a/base', '/b/base']), 'overlay.lowerdirs[1] /b/base has the last path component "base"'),
    (dict(userns_remap='Bad User!'), {}, 'userns_remap'),
])
def test_bad_remapped_layers_name_ns_containers_options(overrides, layers, fragment):
    problems = ns_container.request_problems(remapped(overlay=dict(LAYERS, **layers), **overrides))
    assert any(fragment in problem for problem in problems), problems


@pytest.mark.parametrize('overrides', [dict(overlay=None), dict(userns_remap=None)])
def test_userns_remap_create_needs_userns_remap_and_overlay(overrides):
    problems = ns_container.request_problems(remapped(userns_remap_create=True, **overrides))
    assert problems == ['userns_remap_create needs userns_remap and overlay: the remap user is made (when missing) by the '
                        'run that shifts the overlay\'s layers into its range. Give both, or leave userns_remap_create out.']


def test_layers_are_shifted_only_to_start():
    assert ns_container.remapping_layers(remapped())
    assert ns_container.remapping_layers(remapped(state='restarted'))
    assert not ns_container.remapping_layers(remapped(state='absent'))
    assert not ns_container.remapping_layers(remapped(overlay=None))
    assert not ns_container.remapping_layers(params(overlay=dict(LAYERS)))


def test_shift_params_are_layer_remaps_options():
    shift = ns_container.shift_params(remapped(userns_remap_create=True, lock_timeout=5), ['/overlay/upper'])
    assert shift == dict(user='dockremap', src=LAYERS['lowerdirs'], root='/var/lib/unboxed/remap',
                         directories=['/overlay/upper'], create_user=True, state='present', lock_timeout=5)


def test_the_containers_directories_and_their_own_parent(tmp_path):
    own = tmp_path / 'c'
    layers = dict(LAYERS, upperdir=str(own / 'upper'), workdir=str(own / 'work'))
    request = remapped(rootfs=str(own / 'merged'), overlay=layers)
    # Missing: the parent is the container's own and is made for the mapped root too.
    assert ns_container.container_directories(request) == [str(own), str(own / 'upper'), str(own / 'work'),
                                                           str(own / 'merged')]
    own.mkdir()
    (own / 'upper').mkdir()
    assert ns_container.container_directories(request)[0] == str(own)
    # A parent that holds anything else is shared: never given away.
    (own / 'notes').write_text('mine')
    assert ns_container.container_directories(request) == [str(own / 'upper'), str(own / 'work'), str(own / 'merged')]
    # Directories in different places: no common parent.
    apart = remapped(rootfs=str(tmp_path / 'merged'), overlay=layers)
    assert ns_container.container_directories(apart) == [str(own / 'upper'), str(own / 'work'), str(tmp_path / 'merged')]
