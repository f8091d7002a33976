"""confine.py: capabilities, the confinement of a container, and Docker's seccomp profile semantics.

The seccomp tests use this host's libseccomp (Debian's libseccomp2) to resolve names and compile: that is the
library the module itself uses, and its answers are what is being tested.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import confine
from ansible_collections.unboxed.lab.plugins.module_utils import seccomp_docker

X86_64 = 'x86_64'
KERNEL = (6, 1)


def libseccomp_or_skip():
    try:
        confine.libseccomp()
    except confine.SeccompError as error:
        pytest.skip(str(error))


# ---- capabilities -------------------------------------------------------------------------------------------------

def test_dockers_default_set_is_its_well_known_mask():
    assert len(confine.DOCKER_CAPABILITIES) == 14
    assert confine.mask_text(confine.capability_mask(confine.DOCKER_CAPABILITIES)) == '00000000a80425fb'
    assert confine.names_of_mask(0xa80425fb) == sorted(confine.DOCKER_CAPABILITIES, key=confine.CAPABILITY_NUMBERS.get)


def test_the_capability_table_is_the_kernels_numbering():
    assert confine.CAPABILITY_NUMBERS['CAP_CHOWN'] == 0
    assert confine.CAPABILITY_NUMBERS['CAP_SYS_ADMIN'] == 21
    assert confine.CAPABILITY_NUMBERS['CAP_MKNOD'] == 27
    assert confine.CAPABILITY_NUMBERS['CAP_CHECKPOINT_RESTORE'] == 40


@pytest.mark.parametrize('word, name', [
    ('net_admin', 'CAP_NET_ADMIN'), ('NET_ADMIN', 'CAP_NET_ADMIN'), ('CAP_NET_ADMIN', 'CAP_NET_ADMIN'),
    ('cap_sys_admin', 'CAP_SYS_ADMIN'), (' chown ', 'CAP_CHOWN'), ('bogus', None), ('CAP_', None), ('', None),
])
def test_capability_names_take_any_case_and_an_optional_prefix(word, name):
    assert confine.capability_name(word) == name


@pytest.mark.parametrize('words, kept', [
    (None, None),
    (['all'], None),
    (['ALL'], None),
    (['none'], ()),
    ([], ()),
    (['docker'], tuple(sorted(confine.DOCKER_CAPABILITIES, key=confine.CAPABILITY_NUMBERS.get))),
    (['net_admin', 'CAP_CHOWN', 'chown'], ('CAP_CHOWN', 'CAP_NET_ADMIN')),
])
def test_resolve_capabilities(words, kept):
    assert confine.resolve_capabilities(words) == kept


def test_docker_plus_names_is_cap_add():
    kept = confine.resolve_capabilities(['docker', 'NET_ADMIN'])
    assert set(kept) == set(confine.DOCKER_CAPABILITIES) | {'CAP_NET_ADMIN'}
    assert list(kept) == sorted(kept, key=confine.CAPABILITY_NUMBERS.get)


@pytest.mark.parametrize('words, fragment', [
    (['cap_bogus'], 'capabilities: unknown capability "cap_bogus"'),
    (['docker', 'bogus', 'also_bogus'], 'unknown capability "bogus", "also_bogus"'),
    (['all', 'chown'], '"all" stands alone'),
    (['none', 'docker'], '"none" stands alone'),
])
def test_capabilities_problems(words, fragment):
    problems = confine.capabilities_problems('capabilities', words)
    assert problems and any(fragment in problem for problem in problems), problems


@pytest.mark.parametrize('words', [None, [], ['all'], ['none'], ['docker'], ['docker', 'net_admin'], ['CAP_SYS_ADMIN']])
def test_good_capabilities_have_no_problem(words):
    assert confine.capabilities_problems('capabilities', words) == []


def test_read_status_fields(tmp_path):
    (tmp_path / '7').mkdir()
    (tmp_path / '7' / 'status').write_text('Name:\tsh\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n'
                                           'NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n')
    assert confine.read_status_fields(7, proc=str(tmp_path)) == {
        'CapInh': '0000000000000000', 'CapEff': '00000000a80425fb', 'NoNewPrivs': '1', 'Seccomp': '2'}
    assert confine.read_status_fields(8, proc=str(tmp_path)) == {}


# ---- a container's confinement ------------------------------------------------------------------------------------

def test_the_default_confinement_is_none_at_all():
    assert not confine.Confinement().confined
    assert not confine.Confinement.build(['all'], False, 'unconfined').confined
    assert confine.Confinement.build(['docker']).confined
    assert confine.Confinement.build(no_new_privs=True).confined
    assert confine.Confinement.build(seccomp='docker').confined


def test_a_confinement_survives_the_state_file_and_an_old_record_means_none():
    confinement = confine.Confinement.build(['docker', 'net_admin'], True, '/srv/profile.json')
    assert confine.Confinement.from_dict(json.loads(json.dumps(confinement.to_dict()))) == confinement
    assert confine.Confinement.from_dict({}) == confine.Confinement()
    assert confine.Confinement().to_dict() == {'capabilities': 'all', 'no_new_privs': False, 'seccomp': 'unconfined'}


def test_the_bounding_set_of_all_is_every_capability_the_kernel_knows():
    assert confine.Confinement().bounding_names(last_cap=37)[-1] == 'CAP_AUDIT_READ'
    assert confine.Confinement.build(['none']).bounding_names() == []


def test_stage_settings_are_stable_json_with_numbers():
    settings = confine.stage_settings(confine.Confinement.build(['docker'], False, 'docker'))
    assert settings == confine.stage_settings(confine.Confinement.build(['docker'], False, 'docker'))
    assert json.loads(settings) == {'capabilities': [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31],
                                    'no_new_privs': False, 'seccomp': 'docker', 'seccomp_filter_fd': 3}
    assert json.loads(confine.stage_settings(confine.Confinement.build(no_new_privs=True)))['seccomp_filter_fd'] is None


def test_the_stage_functions_compile_and_are_put_before_the_callers_code():
    script = confine.stage_script('unboxed_confine_apply(unboxed_confine_prepare({}))\n')
    compile(script, 'stage', 'exec')
    assert script.startswith(confine.STAGE_FUNCTIONS)
    for step in ('prctl(38, 1', 'prctl(47, 4', 'prctl(24, number', 'libc.capset', 'prctl(22, 2'):
        assert step in confine.STAGE_FUNCTIONS


# ---- seccomp: Docker's profile semantics ----------------------------------------------------------------------------

def test_dockers_profile_is_the_data_we_expect():
    profile = seccomp_docker.PROFILE
    assert profile['defaultAction'] == 'SCMP_ACT_ERRNO' and profile['defaultErrnoRet'] == 1
    names = confine.docker_syscall_names()
    assert {'mkdir', 'clone', 'mknod', 'mount', 'unshare'} <= names and 'keyctl' not in names
    clone = [rule for rule in profile['syscalls'] if rule['names'] == ['clone'] and rule.get('args')]
    assert {'index': 0, 'value': 2114060288, 'op': 'SCMP_CMP_MASKED_EQ'} in [rule['args'][0] for rule in clone]


@pytest.mark.parametrize('release, version', [('6.1.0-18-amd64', (6, 1)), ('3.12.25-gentoo', (3, 12)),
                                              ('3.12-1-amd64', (3, 12)), ('5.10', (5, 10))])
def test_kernel_version(release, version):
    assert confine.kernel_version(release) == version


def plan(profile, caps=confine.DOCKER_CAPABILITIES, kernel=KERNEL, arch=X86_64):
    libseccomp_or_skip()
    return confine.plan_filter(profile, 'test.json', caps, kernel=kernel, arch=arch)


def numbers(*names):
    lib = confine.libseccomp()
    return {lib.seccomp_syscall_resolve_name_arch(confine.arch_token(X86_64), name.encode()) for name in names}


def rules_for(found, name):
    number, = numbers(name)
    return [rule for rule in found.rules if rule[0] == number]


def test_dockers_profile_without_cap_sys_admin_leaves_mount_and_unshare_to_the_default():
    found = plan(seccomp_docker.PROFILE)
    assert found.default_action == confine.ACTIONS['SCMP_ACT_ERRNO'] | errno.EPERM
    assert found.arches == ('x86_64', 'x86', 'x32')
    assert rules_for(found, 'mount') == [] and rules_for(found, 'unshare') == [] and rules_for(found, 'keyctl') == []
    assert rules_for(found, 'mkdir') == [(next(iter(numbers('mkdir'))), confine.ACTIONS['SCMP_ACT_ALLOW'], ())]
    # clone only without namespace flags (the masked argument), clone3 answers ENOSYS so that libc falls back.
    assert rules_for(found, 'clone') == [(next(iter(numbers('clone'))), confine.ACTIONS['SCMP_ACT_ALLOW'],
                                          ((0, confine.OPERATORS['SCMP_CMP_MASKED_EQ'], 2114060288, 0),))]
    assert rules_for(found, 'clone3')[0][1] == confine.ACTIONS['SCMP_ACT_ERRNO'] | errno.ENOSYS
    assert rules_for(found, 'arch_prctl') and not rules_for(found, 'riscv_flush_icache')


def test_dockers_profile_with_cap_sys_admin_allows_mount_and_any_clone():
    found = plan(seccomp_docker.PROFILE, caps=list(confine.DOCKER_CAPABILITIES) + ['CAP_SYS_ADMIN'])
    assert rules_for(found, 'mount') and rules_for(found, 'unshare')
    assert (next(iter(numbers('clone'))), confine.ACTIONS['SCMP_ACT_ALLOW'], ()) in rules_for(found, 'clone')
    assert rules_for(found, 'clone3') == [(next(iter(numbers('clone3'))), confine.ACTIONS['SCMP_ACT_ALLOW'], ())]


def test_min_kernel_includes_a_rule_only_from_that_version_on():
    profile = {'defaultAction': 'SCMP_ACT_ERRNO',
               'syscalls': [{'names': ['ptrace'], 'action': 'SCMP_ACT_ALLOW', 'includes': {'minKernel': '4.8'}}]}
    assert rules_for(plan(profile, kernel=(4, 8)), 'ptrace')
    assert not rules_for(plan(profile, kernel=(4, 7)), 'ptrace')
    assert rules_for(plan(profile, kernel=(5, 0)), 'ptrace')


def test_excludes_drop_a_rule_for_a_cap_an_arch_or_a_kernel():
    def rule(excludes):
        return {'defaultAction': 'SCMP_ACT_ALLOW',
                'syscalls': [{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO', 'excludes': excludes}]}
    assert rules_for(plan(rule({'caps': ['CAP_SYS_ADMIN']})), 'mkdir')
    assert not rules_for(plan(rule({'caps': ['CAP_CHOWN']})), 'mkdir')
    assert not rules_for(plan(rule({'arches': ['amd64']})), 'mkdir')
    assert rules_for(plan(rule({'arches': ['arm64']})), 'mkdir')
    assert not rules_for(plan(rule({'minKernel': '4.0'})), 'mkdir')


def test_an_errno_rule_without_errno_ret_answers_eperm_and_a_rule_like_the_default_is_left_out():
    profile = {'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': [
        {'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO'},
        {'names': ['rmdir'], 'action': 'SCMP_ACT_ALLOW'},
        {'name': 'chmod', 'action': 'SCMP_ACT_ERRNO', 'errnoRet': 122}]}
    found = plan(profile)
    assert rules_for(found, 'mkdir')[0][1] == confine.ACTIONS['SCMP_ACT_ERRNO'] | errno.EPERM
    assert rules_for(found, 'chmod')[0][1] == confine.ACTIONS['SCMP_ACT_ERRNO'] | 122
    assert rules_for(found, 'rmdir') == []


def test_architectures_and_arch_map():
    base = {'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': []}
    assert plan(dict(base, architectures=['SCMP_ARCH_X86'])).arches == ('x86_64', 'x86')
    assert plan(dict(base, archMap=[{'architecture': 'SCMP_ARCH_AARCH64', 'subArchitectures': ['SCMP_ARCH_ARM']}])
                ).arches == ('x86_64',)
    assert plan(base).arches == ('x86_64',)


def test_a_name_newer_than_this_libseccomp_in_dockers_list_is_skipped_a_typo_is_an_error():
    libseccomp_or_skip()
    unknown = [name for name in sorted(confine.docker_syscall_names()) if not confine.syscall_known_anywhere(name)]
    if unknown:
        profile = {'defaultAction': 'SCMP_ACT_ERRNO', 'syscalls': [{'names': [unknown[0], 'mkdir'], 'action': 'SCMP_ACT_ALLOW'}]}
        found = plan(profile)
        assert found.skipped == (unknown[0],) and rules_for(found, 'mkdir')
    with pytest.raises(confine.SeccompError, match='unknown system call "mkdri"'):
        plan({'defaultAction': 'SCMP_ACT_ERRNO', 'syscalls': [{'names': ['mkdri'], 'action': 'SCMP_ACT_ALLOW'}]})


@pytest.mark.parametrize('profile, fragment', [
    ({'defaultAction': 'SCMP_ACT_ALOW'}, 'unknown action "SCMP_ACT_ALOW"'),
    ({'defaultAction': 'SCMP_ACT_NOTIFY'}, 'needs a seccomp agent'),
    ({}, 'neither defaultAction nor syscalls'),
    ({'syscalls': [{'names': ['mkdir'], 'action': 'SCMP_ACT_ALLOW'}]}, 'unknown action ""'),
    ({'defaultAction': 'SCMP_ACT_ALLOW', 'architectures': ['SCMP_ARCH_X86'], 'archMap': [{}]}, "both 'architectures' and 'archMap'"),
    ({'defaultAction': 'SCMP_ACT_ALLOW', 'architectures': ['SCMP_ARCH_Z80']}, 'unknown architecture "SCMP_ARCH_Z80"'),
    ({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': [{'name': 'a', 'names': ['b'], 'action': 'SCMP_ACT_ERRNO'}]},
     "both 'name' and 'names'"),
    ({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': [{'names': [], 'action': 'SCMP_ACT_ERRNO'}]}, 'non-empty list'),
    ({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': [{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO', 'errnoRet': -1}]},
     'errnoRet -1 is not an error number'),
    ({'defaultAction': 'SCMP_ACT_ALLOW',
      'syscalls': [{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO', 'args': [{'index': 6, 'value': 1, 'op': 'SCMP_CMP_EQ'}]}]},
     'argument index 6'),
    ({'defaultAction': 'SCMP_ACT_ALLOW',
      'syscalls': [{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO', 'args': [{'index': 0, 'value': 1, 'op': 'SCMP_CMP_IS'}]}]},
     'unknown operator "SCMP_CMP_IS"'),
    ({'defaultAction': 'SCMP_ACT_ALLOW',
      'syscalls': [{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO', 'includes': {'minKernel': '4'}}]}, 'minKernel "4"'),
    ({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': {'names': ['mkdir']}}, '"syscalls" must be a list'),
])
def test_bad_profiles_say_what_is_wrong(profile, fragment):
    with pytest.raises(confine.SeccompError) as raised:
        plan(profile)
    assert fragment in str(raised.value) and 'profile test.json' in str(raised.value)


def test_seccomp_problems_name_the_option(tmp_path):
    libseccomp_or_skip()
    (tmp_path / 'bad.json').write_text('{"defaultAction": ')
    (tmp_path / 'list.json').write_text('[]')
    for seccomp, fragment in ((str(tmp_path / 'bad.json'), 'is not valid JSON'),
                              (str(tmp_path / 'list.json'), 'not an object'),
                              (str(tmp_path / 'missing.json'), 'cannot read the profile'),
                              ('relative.json', 'absolute path')):
        problems = confine.seccomp_problems('seccomp', confine.Confinement.build(seccomp=seccomp))
        assert len(problems) == 1 and problems[0].startswith('seccomp') and fragment in problems[0], problems
    assert confine.seccomp_problems('seccomp', confine.Confinement.build(seccomp='docker')) == []
    assert confine.seccomp_problems('seccomp', confine.Confinement()) == []


def test_argument_conditions_on_one_argument_become_separate_rules():
    libseccomp_or_skip()
    profile = {'defaultAction': 'SCMP_ACT_ERRNO', 'syscalls': [{'names': ['personality'], 'action': 'SCMP_ACT_ALLOW',
               'args': [{'index': 0, 'value': 0, 'op': 'SCMP_CMP_EQ'}, {'index': 0, 'value': 8, 'op': 'SCMP_CMP_EQ'}]}]}
    program = confine.compile_filter(plan(profile))
    assert program and len(program) % confine.BPF_INSTRUCTION_SIZE == 0


def test_dockers_profile_compiles_to_a_bpf_program_the_kernel_accepts_in_size():
    libseccomp_or_skip()
    launch = confine.prepare_launch(confine.Confinement.build(['docker'], False, 'docker'))
    instructions = len(launch.program) // confine.BPF_INSTRUCTION_SIZE
    assert 0 < instructions <= 4096  # BPF_MAXINSNS
    descriptor = launch.filter_fd()
    try:
        assert os.read(descriptor, len(launch.program) + 1) == launch.program
    finally:
        os.close(descriptor)
    assert confine.prepare_launch(confine.Confinement.build(['docker'])).filter_fd() is None
