from __future__ import annotations

import pytest

from ansible_collections.unboxed.lab.plugins.module_utils import dockerfile

TALK = '''FROM debian:latest
RUN echo "Texto" > /file01.txt
CMD ["tail", "-f", "/dev/null"]
'''


def plan_of(text, build_args=None, base_config=None):
    return dockerfile.plan(dockerfile.parse(text), build_args, base_config)


def test_the_talks_dockerfile():
    steps = plan_of(TALK, base_config={'Env': ['PATH=/usr/bin'], 'Cmd': ['bash']}).steps
    assert [step.header for step in steps] == [
        'Step 1/3 : FROM debian:latest',
        'Step 2/3 : RUN echo "Texto" > /file01.txt',
        'Step 3/3 : CMD ["tail", "-f", "/dev/null"]',
    ]
    assert [step.kind for step in steps] == ['from', 'run', 'metadata']
    assert steps[0].image == 'debian:latest'
    assert steps[1].argv == ['/bin/sh', '-c', 'echo "Texto" > /file01.txt']
    assert steps[1].created_by == '/bin/sh -c echo "Texto" > /file01.txt'
    assert steps[2].config['Cmd'] == ['tail', '-f', '/dev/null']
    assert steps[2].created_by == '/bin/sh -c #(nop)  CMD ["tail" "-f" "/dev/null"]'
    assert steps[1].config['Cmd'] == ['bash']  # inherited until CMD replaces it


@pytest.mark.parametrize('text, expected', [
    # continuation lines joined, the escape character and the newline dropped
    ('FROM scratch\nRUN apt-get update && \\\n    apt-get install -y procps\n',
     'RUN apt-get update &&     apt-get install -y procps'),
    # a comment between continuation lines is dropped, as Docker does
    ('FROM scratch\nRUN echo one \\\n# a comment\n  two\n', 'RUN echo one   two'),
    # an empty continuation line is still accepted
    ('FROM scratch\nRUN echo a \\\n\n  b\n', 'RUN echo a   b'),
    # lowercase instructions and leading blanks
    ('from scratch\n   run   echo hi\n', 'RUN echo hi'),
    # the escape directive: backtick continues lines (Windows style); backslash is literal
    ('# escape=`\nFROM scratch\nRUN echo C:\\dir `\n  next\n', 'RUN echo C:\\dir   next'),
    # CRLF line endings
    ('FROM scratch\r\nRUN echo hi\r\n', 'RUN echo hi'),
    # a trailing continuation at the end of the file
    ('FROM scratch\nRUN echo end \\', 'RUN echo end'),
])
def test_continuations_and_comments(text, expected):
    parsed = dockerfile.parse(text)
    assert parsed.instructions[-1].original == expected


def test_line_numbers_follow_continuations_and_comments():
    text = '# syntax=docker/dockerfile:1\n\n# comment\nFROM scratch\nRUN a \\\n  b\n\nCMD ["x"]\n'
    parsed = dockerfile.parse(text)
    assert [(i.keyword, i.line) for i in parsed.instructions] == [('FROM', 4), ('RUN', 5), ('CMD', 8)]
    assert parsed.directives == {'syntax': 'docker/dockerfile:1'}


def test_directives_only_at_the_top():
    parsed = dockerfile.parse('FROM scratch\n# escape=`\nRUN echo a \\\n b\n')
    assert parsed.escape == '\\'
    assert parsed.instructions[-1].original == 'RUN echo a  b'


@pytest.mark.parametrize('text, line, column, fragment', [
    ('FROM scratch\nRUNN echo\n', 2, 1, 'unknown instruction "RUNN"'),
    ('FROM scratch\n  COPPY a b\n', 2, 3, 'unknown instruction "COPPY"'),
    ('RUN echo hi\n', 1, 1, 'RUN comes before FROM'),
    ('ARG X=1\n', None, None, 'has no FROM'),
    ('', None, None, 'no instructions'),
    ('# just a comment\n', None, None, 'no instructions'),
    ('FROM scratch\nFROM debian\n', 2, 1, 'multi-stage builds are not supported'),
    ('FROM scratch\nCMD ["tail", "-f" "/dev/null"]\n', 2, 19, 'not a valid JSON list'),
    ("FROM scratch\nCMD ['tail']\n", 2, 6, 'not a valid JSON list'),
    ('FROM scratch\nCMD [1, 2]\n', 2, 5, 'JSON list of strings'),
    ('FROM scratch\nRUN\n', 2, 1, 'RUN needs arguments'),
    ('FROM scratch\nRUN <<EOF\necho\nEOF\n', 2, 5, 'heredoc'),
    ('FROM scratch\nCOPY --from=build /a /b\n', 2, 6, 'multi-stage'),
    ('FROM scratch\nRUN --mount=type=cache,target=/x true\n', 2, 5, 'BuildKit'),
    ('FROM scratch\nCOPY --owner=1 a b\n', 2, 6, 'has no flag --owner'),
    ('FROM --platform=linux/arm64 debian\n', 1, 6, 'architecture'),
    ('FROM scratch\nHEALTHCHECK CMD true\n', 2, 1, 'HEALTHCHECK'),
    ('FROM scratch\nMAINTAINER me\n', 2, 1, 'LABEL maintainer'),
    ('# escape=x\nFROM scratch\n', 1, 1, 'escape directive'),
    ('FROM scratch\nENV A="unclosed\n', 2, 7, 'not closed'),
    ('FROM scratch\nLABEL a=1 b\n', 2, 11, 'not of the form name=value'),
    ('FROM scratch\nENV onlyname\n', 2, 5, 'name=value'),
    ('FROM scratch\nARG 1x=2\n', 2, 5, 'not a valid name'),
    ('FROM scratch\nWORKDIR ${X:?must be set}\n', 2, None, 'X is not set: must be set'),
    ('FROM scratch\nCOPY onlyone\n', 2, 6, 'at least one source and a destination'),
    ('FROM scratch\nADD https://example.org/x /x\n', 2, 5, 'URL'),
    ('FROM scratch\nCOPY --chown=www-data a /b\n', 2, 1, 'give numbers'),
    ('FROM scratch\nCOPY --chmod=rw a /b\n', 2, 1, 'octal mode'),
    ('FROM scratch\nSHELL /bin/bash -c\n', 2, 7, 'exec form only'),
    ('FROM scratch\nEXPOSE http\n', 2, 8, 'not a port'),
    ('FROM a b\n', 1, 6, 'one image name'),
])
def test_errors_name_line_and_column(text, line, column, fragment):
    with pytest.raises(dockerfile.DockerfileError) as raised:
        plan_of(text)
    error = raised.value
    assert fragment in str(error)
    assert error.line == line
    if column is not None:
        assert error.column == column
    if line is not None:
        assert str(error).startswith(f'Dockerfile line {line}')


@pytest.mark.parametrize('arguments, env, expected', [
    ('plain', {}, 'plain'),
    ('"double quoted"', {}, 'double quoted'),
    ("'single $HOME'", {'HOME': '/root'}, 'single $HOME'),
    ('$HOME/x', {'HOME': '/root'}, '/root/x'),
    ('${HOME}x', {'HOME': '/root'}, '/rootx'),
    ('${MISSING:-fallback}', {}, 'fallback'),
    ('${EMPTY:-fallback}', {'EMPTY': ''}, 'fallback'),
    ('${EMPTY-fallback}', {'EMPTY': ''}, ''),
    ('${SET:+alt}', {'SET': '1'}, 'alt'),
    ('${UNSET:+alt}', {}, ''),
    ('\\$HOME', {'HOME': '/root'}, '$HOME'),
    ('"a \\"quoted\\" word"', {}, 'a "quoted" word'),
    ('$', {}, '$'),
    ('a\\ b', {}, 'a b'),
    ('${A:-${B}}', {'B': 'nested'}, 'nested'),
])
def test_expand_word(arguments, env, expected):
    assert dockerfile.expand_word(arguments, env) == expected


def test_env_and_label_forms():
    text = '''FROM scratch
ENV A=1 B="two words" C=${A}x
ENV OLD legacy value with  spaces
LABEL org.example.title="The talk" "quoted key"=v version=$A
'''
    steps = plan_of(text).steps
    assert steps[1].config['Env'] == ['A=1', 'B=two words', 'C=x']  # $A is not yet set within the same ENV line
    assert steps[2].config['Env'][-1] == 'OLD=legacy value with  spaces'
    assert steps[3].config['Labels'] == {'org.example.title': 'The talk', 'quoted key': 'v', 'version': '1'}
    assert steps[1].created_by == '/bin/sh -c #(nop)  ENV A=1 B=two words C=x'


def test_env_overrides_and_keeps_base_env_order():
    steps = plan_of('FROM scratch\nENV PATH=/opt/bin:$PATH HOME=/home\n',
                    base_config={'Env': ['PATH=/usr/bin', 'LANG=C']}).steps
    assert steps[1].config['Env'] == ['LANG=C', 'PATH=/opt/bin:/usr/bin', 'HOME=/home']


def test_arg_defaults_build_args_and_scope():
    text = '''ARG BASE=debian
ARG TAG
FROM $BASE:${TAG:-latest}
ARG GREETING=hello
ARG WHO
RUN echo $GREETING $WHO
ENV GREETING=env-wins
RUN echo again
'''
    result = plan_of(text, build_args={'WHO': 'class', 'UNUSED': 'x', 'TAG': 'trixie'})
    steps = result.steps
    assert steps[0].image == 'debian:trixie'
    assert [step.header.split(' : ')[0] for step in steps] == [f'Step {n}/6' for n in range(1, 7)]
    run = steps[3]
    assert run.build_args == ['GREETING=hello', 'WHO=class']
    assert run.env == ['GREETING=hello', 'WHO=class']
    assert run.created_by == '|2 GREETING=hello WHO=class /bin/sh -c echo $GREETING $WHO'
    assert steps[5].env == ['GREETING=env-wins', 'WHO=class']
    assert result.unused_build_args == ['UNUSED']
    # ARGs never reach the image config
    assert steps[-1].config['Env'] == ['GREETING=env-wins']


def test_build_arg_changes_the_run_text():
    text = 'FROM scratch\nARG V=1\nRUN echo $V\n'
    assert plan_of(text).steps[2].created_by != plan_of(text, {'V': '2'}).steps[2].created_by


def test_exec_and_shell_forms_and_shell_instruction():
    text = '''FROM scratch
RUN ["/bin/echo", "exec form"]
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN echo shell form | cat
ENTRYPOINT echo hi
CMD ["arg"]
'''
    steps = plan_of(text, base_config={'Cmd': ['bash']}).steps
    assert steps[1].argv == ['/bin/echo', 'exec form']
    assert steps[1].created_by == '["/bin/echo" "exec form"]'
    assert steps[3].argv == ['/bin/bash', '-o', 'pipefail', '-c', 'echo shell form | cat']
    assert steps[4].config['Entrypoint'] == ['/bin/bash', '-o', 'pipefail', '-c', 'echo hi']
    assert steps[4].config['Cmd'] is None  # ENTRYPOINT resets the base image's CMD
    assert dockerfile.container_command(steps[5].config) == ['/bin/bash', '-o', 'pipefail', '-c', 'echo hi', 'arg']


def test_workdir_user_copy_destination():
    text = '''FROM scratch
WORKDIR /app
WORKDIR sub
USER 1000:1000
COPY --chown=1000:100 --chmod=640 a.txt b.txt ./
COPY dir /opt/dir
COPY ["with space.txt", "/x/"]
EXPOSE 80 53/udp
'''
    steps = plan_of(text).steps
    assert steps[2].config['WorkingDir'] == '/app/sub'
    assert steps[3].config['User'] == '1000:1000'
    copy = steps[4]
    assert (copy.kind, copy.sources, copy.destination, copy.chown, copy.chmod) == \
        ('copy', ['a.txt', 'b.txt'], '/app/sub/', (1000, 100), 0o640)
    assert steps[5].destination == '/opt/dir'
    assert steps[6].sources == ['with space.txt'] and steps[6].destination == '/x/'
    assert steps[7].config['ExposedPorts'] == {'80/tcp': {}, '53/udp': {}}


def test_metadata_steps_do_not_change_earlier_configs():
    steps = plan_of('FROM scratch\nENV A=1\nENV A=2\n').steps
    assert steps[1].config['Env'] == ['A=1']
    assert steps[2].config['Env'] == ['A=2']


def test_from_with_stage_name_is_accepted():
    assert plan_of('FROM debian:bookworm AS base\nRUN true\n').steps[0].image == 'debian:bookworm'


def test_nul_byte_refused():
    with pytest.raises(dockerfile.DockerfileError, match='NUL'):
        dockerfile.parse('FROM scratch\0')
