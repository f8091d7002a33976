"""slide_grade's request: validation (every problem at once, naming the option) and the talk's paths."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.unboxed.lab.plugins.module_utils import grading
from ansible_collections.unboxed.lab.plugins.modules import slide_grade


def params(**overrides):
    validated = ArgumentSpecValidator(slide_grade.argument_spec()).validate(overrides)
    assert not validated.error_messages, validated.error_messages
    return validated.validated_parameters


def test_defaults_are_the_talks_layout():
    assert slide_grade.talk_from(params()) == grading.Talk()
    assert slide_grade.request_problems(params()) == []


def test_every_path_follows_root():
    talk = slide_grade.talk_from(params(root='/srv/lab/'))
    assert talk.lowerdirs == ('/srv/lab/lower2-file', '/srv/lab/lower1-base')
    assert (talk.upperdir, talk.workdir, talk.merged) == ('/srv/lab/upper', '/srv/lab/work', '/srv/lab/merged')
    assert talk.mount_command == ('mount -t overlay overlay -o lowerdir=/srv/lab/lower2-file:/srv/lab/lower1-base,'
                                  'upperdir=/srv/lab/upper,workdir=/srv/lab/work /srv/lab/merged')


def test_explicit_paths_win_and_are_normalized():
    talk = slide_grade.talk_from(params(lowerdirs=['/l/top/', '/l//base'], merged='/m/./merged'))
    assert talk.lowerdirs == ('/l/top', '/l/base') and talk.merged == '/m/merged'


@pytest.mark.parametrize('overrides, words', [
    ({'root': 'overlay'}, 'root must be an absolute path, got "overlay"'),
    ({'merged': 'merged'}, 'merged must be an absolute path'),
    ({'lowerdirs': ['/overlay/lower2-file', 'lower1-base']}, 'lowerdirs[1] must be an absolute path'),
    ({'lowerdirs': []}, 'lowerdirs is empty'),
    ({'file_name': 'a/file01.txt'}, 'file_name "a/file01.txt" must be a plain file name'),
    ({'file_name': '..'}, 'file_name ".." must be a plain file name'),
    ({'command': []}, 'command is empty'),
    ({'store': 'var/lib/unboxed'}, 'store must be an absolute path'),
])
def test_bad_input_names_the_option(overrides, words):
    problems = slide_grade.request_problems(params(**overrides))
    assert len(problems) == 1 and words in problems[0], problems


def test_every_problem_at_once():
    problems = slide_grade.request_problems(params(root='x', upperdir='u', command=[]))
    assert len(problems) == 3


def test_unknown_slide_is_refused_by_the_spec_with_the_list():
    validated = ArgumentSpecValidator(slide_grade.argument_spec()).validate({'slide': 'overlays'})
    assert validated.error_messages
    assert 'overlay' in validated.error_messages[0] and 'namespaces' in validated.error_messages[0]


def test_the_spec_offers_every_slide_of_grading():
    assert slide_grade.argument_spec()['slide']['choices'] == ['all', *grading.SLIDES]
