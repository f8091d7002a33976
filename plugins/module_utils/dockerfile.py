# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a Dockerfile the way Docker's classic builder does, and planning its steps.

The one place in unboxed that knows Dockerfile syntax: the ``image_build`` action plugin reads it on the
controller (to find the files COPY needs), the ``image_build`` module on the host (to build). Pure functions
only - nothing here touches a file.

- ``parse(text)`` splits the text into instructions: comments, line continuations, parser directives, the
  exec (JSON) and shell forms. A Dockerfile that does not parse raises DockerfileError with line and column.
- ``plan(instructions, build_args, base_config)`` walks them as the builder does - ARG and ENV in scope,
  ``$VAR`` substitution, WORKDIR relative to the previous one - and returns one Step per instruction with what
  it does, the text Docker records in the image history, and the image config after it.

Known differences from Docker (each refused with a message, never silently different): one stage only (a
second FROM, ``COPY --from``), no heredocs, no ``RUN --mount``, no HEALTHCHECK/ONBUILD, ADD of local files only
(a URL is refused; a local tar archive is copied as a file, not unpacked), and ``[...`` that is not a valid JSON
list of strings is an error (Docker would quietly run it as a shell command).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re

DEFAULT_SHELL = ('/bin/sh', '-c')
DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# What each instruction takes. Flags are the --name=value words Docker accepts before the arguments.
INSTRUCTION_FLAGS = {
    'FROM': ('platform',), 'RUN': (), 'CMD': (), 'ENTRYPOINT': (), 'ENV': (), 'LABEL': (), 'ARG': (),
    'WORKDIR': (), 'USER': (), 'COPY': ('chown', 'chmod'), 'ADD': ('chown', 'chmod'), 'SHELL': (),
    'EXPOSE': (), 'VOLUME': (), 'STOPSIGNAL': (),
}
# Known to Docker, not built here: each gets its own reason.
REFUSED_INSTRUCTIONS = {
    'HEALTHCHECK': 'HEALTHCHECK needs a container engine that runs the check; this builder has none',
    'ONBUILD': 'ONBUILD records instructions for images built FROM this one; this builder does not run them',
    'MAINTAINER': 'MAINTAINER is deprecated; write LABEL maintainer="..." instead',
}
# Flags Docker knows but this builder does not implement, with the reason.
REFUSED_FLAGS = {
    'from': 'COPY --from copies out of another build stage or image; multi-stage builds are not supported',
    'mount': 'RUN --mount is a BuildKit feature; this builder is the classic one',
    'network': 'RUN --network is a BuildKit feature; RUN always has no network here',
    'security': 'RUN --security is a BuildKit feature',
    'link': 'COPY --link is a BuildKit feature',
    'platform': 'FROM --platform picks another architecture; this builder builds for the host only',
}
DIRECTIVE = re.compile(r'#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*')
VARIABLE_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
FLAG = re.compile(r'--([a-z][a-z-]*)(?:=(.*))?', re.DOTALL)
OCTAL_MODE = re.compile(r'[0-7]{3,4}')
NUMERIC_OWNER = re.compile(r'([0-9]+)(?::([0-9]+))?')


class DockerfileError(ValueError):
    """A Dockerfile that cannot be built, with where the problem is."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.message, self.line, self.column = message, line, column
        where = ''
        if line is not None:
            where = f'Dockerfile line {line}' + (f', column {column}' if column is not None else '') + ': '
        super().__init__(where + message)


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction, continuation lines joined."""

    keyword: str      # upper case: RUN
    arguments: str    # the text after the keyword and its flags
    flags: tuple      # ((name, value), ...) in the order written
    line: int         # the line the instruction starts on (1-based)
    column: int       # the column where ``arguments`` starts, on its first line
    original: str     # as Docker prints it after "Step 2/3 : "

    def exec_form(self) -> list | None:
        """The JSON list of an exec-form instruction (``CMD ["tail", "-f", "/dev/null"]``), or None (shell form)."""
        text = self.arguments.strip()
        if not text.startswith('['):
            return None
        try:
            value = json.loads(text)
        except ValueError as error:
            column = self.column + (len(self.arguments) - len(self.arguments.lstrip())) + getattr(error, 'pos', 0)
            raise DockerfileError(
                f'{self.keyword} starts with "[" but is not a valid JSON list ({getattr(error, "msg", error)}). '
                f'Write the exec form with double quotes, e.g. {self.keyword} ["tail", "-f", "/dev/null"], or the '
                f'shell form without brackets.', self.line, column) from None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise DockerfileError(f'{self.keyword} in exec form must be a JSON list of strings.', self.line, self.column)
        return value


@dataclasses.dataclass
class Parsed:
    instructions: list
    directives: dict   # parser directives found at the top (name -> value)
    escape: str


def _logical_lines(text: str, escape: str):
    """(first line number, [(line number, text)], ...) per instruction: comments dropped, continuations joined."""
    pending = []
    for number, raw in enumerate(text.split('\n'), start=1):
        line = raw.rstrip('\r')
        stripped = line.strip()
        if not pending and not stripped:
            continue
        if stripped.startswith('#'):
            continue  # a comment line, also between continuation lines (Docker drops those too)
        if pending and not stripped:
            continue  # an empty continuation line: Docker still accepts it
        body = line.rstrip()
        if body.endswith(escape) and not body.endswith(escape * 2):
            pending.append((number, body[:-1]))
            continue
        pending.append((number, line))
        yield pending
        pending = []
    if pending:
        yield pending


def _directives(lines: list[str]) -> dict:
    """Parser directives: ``# name=value`` comment lines at the very top, before anything else."""
    found = {}
    for number, line in enumerate(lines, start=1):
        match = DIRECTIVE.fullmatch(line.strip())
        if not match:
            break
        name = match.group(1).lower()
        if name in found:
            raise DockerfileError(f'the parser directive "{name}" is given twice.', number, 1)
        found[name] = match.group(2)
    return found


def _split_flags(keyword: str, body: str, line: int, column: int):
    """(flags, remaining text, its column): ``--chown=1000:1000`` words before the arguments."""
    flags = []
    while True:
        stripped = body.lstrip()
        column += len(body) - len(stripped)
        body = stripped
        if not body.startswith('--'):
            return tuple(flags), body, column
        word = body.split(None, 1)[0]
        match = FLAG.fullmatch(word)
        if not match:
            raise DockerfileError(f'{keyword}: "{word}" is not a flag of the form --name=value.', line, column)
        name, value = match.group(1), match.group(2)
        allowed = INSTRUCTION_FLAGS.get(keyword, ())
        if name in REFUSED_FLAGS and (name not in allowed or name == 'platform'):
            raise DockerfileError(REFUSED_FLAGS[name] + '.', line, column)
        if name not in allowed:
            known = ', '.join(f'--{flag}' for flag in allowed) or 'none'
            raise DockerfileError(f'{keyword} has no flag --{name} (flags it takes here: {known}).', line, column)
        if value is None:
            raise DockerfileError(f'{keyword} --{name} needs a value: --{name}=VALUE.', line, column)
        flags.append((name, value))
        body = body[len(word):]
        column += len(word)


def parse(text: str) -> Parsed:
    """Split a Dockerfile into instructions. Raises DockerfileError (with line and column) when it does not parse."""
    if '\0' in text:
        raise DockerfileError('the Dockerfile contains a NUL byte: it is not a text file.')
    raw_lines = text.split('\n')
    directives = _directives(raw_lines)
    for name, value in directives.items():
        if name == 'escape' and value not in ('\\', '`'):
            raise DockerfileError(f'the escape directive takes \\ or ` (got "{value}").', 1, 1)
        if name not in ('escape', 'syntax', 'check'):
            # Docker treats an unknown directive as a comment; say so rather than guess.
            pass
    escape = directives.get('escape', '\\')
    instructions = []
    for pieces in _logical_lines(text, escape):
        first_line, first_text = pieces[0]
        stripped = first_text.lstrip()
        indent = len(first_text) - len(stripped)
        word_match = re.match(r'\S+', stripped)
        keyword = word_match.group(0)
        upper = keyword.upper()
        if upper in REFUSED_INSTRUCTIONS:
            raise DockerfileError(REFUSED_INSTRUCTIONS[upper] + '.', first_line, indent + 1)
        if upper not in INSTRUCTION_FLAGS:
            raise DockerfileError(
                f'unknown instruction "{keyword}". This builder knows {", ".join(sorted(INSTRUCTION_FLAGS))}.',
                first_line, indent + 1)
        rest = stripped[len(keyword):]
        joined = rest + ''.join(piece for _number, piece in pieces[1:])
        column = indent + len(keyword) + 1
        flags, arguments, arguments_column = _split_flags(upper, joined, first_line, column)
        arguments = arguments.strip()
        if not arguments:
            raise DockerfileError(f'{upper} needs arguments.', first_line, indent + 1)
        if arguments.startswith('<<') and upper in ('RUN', 'COPY', 'ADD'):
            raise DockerfileError(f'{upper} with a heredoc (<<) is a BuildKit feature; write the command on one line '
                                  f'(or continue it with {escape} at the end of each line).', first_line, arguments_column)
        original = ' '.join([upper] + [f'--{name}={value}' for name, value in flags] + [arguments])
        instructions.append(Instruction(upper, arguments, flags, first_line, arguments_column, original))
    if not instructions:
        raise DockerfileError('the Dockerfile has no instructions: it needs at least FROM.')
    return Parsed(instructions, directives, escape)


# ---------------------------------------------------------------------------------------------------------------
# Words: quotes, escapes and $VARIABLES, as Docker's shell lexer processes them in ENV, LABEL, COPY, WORKDIR...


class _Lexer:
    def __init__(self, text: str, env: dict, escape: str, line: int, column: int):
        self.text, self.env, self.escape, self.line, self.column = text, env, escape, line, column
        self.pos = 0

    def error(self, message: str):
        raise DockerfileError(message, self.line, self.column + self.pos)

    def peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else ''

    def words(self, split: bool) -> list[str]:
        words, current, started = [], [], False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if split and char in ' \t\r\n':
                if started:
                    words.append(''.join(current))
                    current, started = [], False
                self.pos += 1
                continue
            started = True
            if char == self.escape:
                self.pos += 1
                if self.pos < len(self.text):
                    current.append(self.text[self.pos])
                    self.pos += 1
                else:
                    current.append(char)
            elif char == "'":
                end = self.text.find("'", self.pos + 1)
                if end < 0:
                    self.error("a single quote (') is not closed.")
                current.append(self.text[self.pos + 1:end])
                self.pos = end + 1
            elif char == '"':
                current.append(self.double_quoted())
            elif char == '$':
                current.append(self.variable())
            else:
                current.append(char)
                self.pos += 1
        if started:
            words.append(''.join(current))
        return words

    def double_quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return ''.join(out)
            if char == self.escape and self.pos + 1 < len(self.text) and self.text[self.pos + 1] in '"$' + self.escape:
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '$':
                out.append(self.variable())
            else:
                out.append(char)
                self.pos += 1
        self.pos = start
        self.error('a double quote (") is not closed.')
        return ''  # not reached

    def variable(self) -> str:
        self.pos += 1  # the $
        if self.peek() == '{':
            self.pos += 1
            match = VARIABLE_NAME.match(self.text, self.pos)
            if not match:
                self.error('"${" must be followed by a variable name, as in ${NAME} or ${NAME:-default}.')
            name = match.group(0)
            self.pos = match.end()
            if self.peek() == '}':
                self.pos += 1
                return self.env.get(name, '')
            operator_match = re.compile(r':?[-+?]').match(self.text, self.pos)
            if not operator_match:
                self.error(f'unsupported modifier in ${{{name}...}}: use ${{{name}}}, ${{{name}:-default}} or ${{{name}:+alternative}}.')
            operator = operator_match.group(0)
            self.pos = operator_match.end()
            end = self._closing_brace()
            word = _Lexer(self.text[self.pos:end], self.env, self.escape, self.line, self.column + self.pos).words(split=False)
            word = word[0] if word else ''
            self.pos = end + 1
            value = self.env.get(name)
            is_set = value is not None and (value != '' or ':' not in operator)
            if operator.endswith('-'):
                return value if is_set else word
            if operator.endswith('+'):
                return word if is_set else ''
            if not is_set:
                self.error(f'{name} is not set: {word or "a value is required"}.')
            return value
        match = VARIABLE_NAME.match(self.text, self.pos)
        if not match:
            return '$'
        self.pos = match.end()
        return self.env.get(match.group(0), '')

    def _closing_brace(self) -> int:
        depth, index = 1, self.pos
        while index < len(self.text):
            if self.text[index] == '{':
                depth += 1
            elif self.text[index] == '}':
                depth -= 1
                if depth == 0:
                    return index
            index += 1
        self.error('"${" is not closed with "}".')
        return -1  # not reached


def expand_word(text: str, env: dict, escape: str = '\\', line: int | None = None, column: int = 1) -> str:
    """One word with its quotes removed and $VARIABLES substituted (whitespace kept)."""
    words = _Lexer(text, env, escape, line, column).words(split=False)
    return words[0] if words else ''


def expand_words(text: str, env: dict, escape: str = '\\', line: int | None = None, column: int = 1) -> list[str]:
    """Whitespace-separated words, each with quotes removed and $VARIABLES substituted."""
    return _Lexer(text, env, escape, line, column).words(split=True)


def _raw_words(text: str, escape: str) -> list[tuple[str, int]]:
    """Words split on unquoted whitespace with quotes and escapes kept, and their offsets (Docker's parseWords)."""
    words, current, start, quote, index = [], [], None, None, 0
    while index < len(text):
        char = text[index]
        if quote is None and char in ' \t':
            if current:
                words.append((''.join(current), start))
                current, start = [], None
            index += 1
            continue
        if start is None:
            start = index
        if char == escape and index + 1 < len(text) and quote != "'":
            current.append(text[index:index + 2])
            index += 2
            continue
        if quote is None and char in '"\'':
            quote = char
        elif quote == char:
            quote = None
        current.append(char)
        index += 1
    if current:
        words.append((''.join(current), start))
    return words


def name_value_pairs(instruction: Instruction, env: dict, escape: str) -> list[tuple[str, str]]:
    """ENV and LABEL: ``key=value key2="v 2"``, or the old ``ENV key value with spaces`` form."""
    words = _raw_words(instruction.arguments, escape)
    if '=' not in words[0][0]:
        if instruction.keyword != 'ENV' or len(words) < 2:
            raise DockerfileError(f'{instruction.keyword} needs name=value pairs (e.g. {instruction.keyword} '
                                  f'app=demo), got "{instruction.arguments}".', instruction.line, instruction.column)
        name = words[0][0]
        value_text = instruction.arguments[words[1][1]:]
        return [(name, expand_word(value_text, env, escape, instruction.line, instruction.column + words[1][1]))]
    pairs = []
    for word, offset in words:
        if '=' not in word:
            raise DockerfileError(f'{instruction.keyword}: "{word}" is not of the form name=value.',
                                  instruction.line, instruction.column + offset)
        raw_name, raw_value = word.split('=', 1)
        column = instruction.column + offset
        name = expand_word(raw_name, env, escape, instruction.line, column)
        if not name:
            raise DockerfileError(f'{instruction.keyword}: a name is missing before "=".', instruction.line, column)
        value = expand_word(raw_value, env, escape, instruction.line, column + len(raw_name) + 1)
        pairs.append((name, value))
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Planning: what each step does, with ARG/ENV in scope


@dataclasses.dataclass
class Step:
    number: int
    total: int
    instruction: Instruction
    kind: str                 # from, run, copy, metadata
    created_by: str           # as `docker history` shows it
    config: dict              # the image's config after this step
    image: str | None = None  # FROM: the image reference
    argv: list | None = None  # RUN: the command to run
    env: list | None = None   # RUN: NAME=value for the command (image Env, then build ARGs in scope)
    build_args: list | None = None  # RUN: ARGs in scope, as Docker puts them in front of the command (|1 A=b)
    sources: list | None = None     # COPY/ADD: paths in the build context
    destination: str | None = None  # COPY/ADD: absolute path in the image
    chown: tuple | None = None      # COPY/ADD --chown: (uid, gid)
    chmod: int | None = None        # COPY/ADD --chmod

    @property
    def header(self) -> str:
        return f'Step {self.number}/{self.total} : {self.instruction.original}'


@dataclasses.dataclass
class Plan:
    steps: list
    unused_build_args: list


def empty_config() -> dict:
    return {'Env': [], 'Cmd': None, 'Entrypoint': None, 'WorkingDir': '', 'User': '', 'Labels': None}


def env_dict(env_list) -> dict:
    return dict(item.split('=', 1) if '=' in item else (item, '') for item in env_list or [])


def _set_env(env_list, name, value) -> list:
    kept = [item for item in env_list if item.split('=', 1)[0] != name]
    return kept + [f'{name}={value}']


def _nop(text: str) -> str:
    return f'/bin/sh -c #(nop)  {text}'


def _json_list(items) -> str:
    return '[' + ' '.join(json.dumps(item) for item in items) + ']'


def from_reference(parsed: Parsed, build_args: dict | None = None) -> tuple[str, Instruction]:
    """The image the build starts FROM, with ARGs declared before FROM substituted. Refuses what is not one stage."""
    build_args = build_args or {}
    instructions = parsed.instructions
    global_args = {}
    first_from = None
    for instruction in instructions:
        if instruction.keyword == 'FROM':
            if first_from is not None:
                raise DockerfileError(
                    f'a second FROM (the first is on line {first_from.line}): multi-stage builds are not supported by '
                    f'this builder. Build one image per Dockerfile.', instruction.line, 1)
            first_from = instruction
        elif first_from is None and instruction.keyword != 'ARG':
            raise DockerfileError(f'{instruction.keyword} comes before FROM: a Dockerfile must start with FROM (only '
                                  f'ARG may come before it).', instruction.line, 1)
        elif first_from is None:
            for name, default in _arg_declarations(instruction, global_args, parsed.escape):
                global_args[name] = build_args.get(name, default) if name in build_args or default is not None else ''
    if first_from is None:
        raise DockerfileError('the Dockerfile has no FROM: every build starts FROM an image (e.g. FROM debian:latest).')
    words = expand_words(first_from.arguments, global_args, parsed.escape, first_from.line, first_from.column)
    if len(words) == 3 and words[1].lower() == 'as':
        words = words[:1]  # a stage name is harmless with one stage
    if len(words) != 1:
        raise DockerfileError(f'FROM takes one image name (optionally "AS name"), got "{first_from.arguments}".',
                              first_from.line, first_from.column)
    return words[0], first_from


def _arg_declarations(instruction: Instruction, env: dict, escape: str) -> list[tuple[str, str | None]]:
    declared = []
    for word, offset in _raw_words(instruction.arguments, escape):
        name, has_default, default = word.partition('=')
        if not VARIABLE_NAME.fullmatch(name):
            raise DockerfileError(f'ARG "{name}" is not a valid name (letters, digits and _, not starting with a digit).',
                                  instruction.line, instruction.column + offset)
        value = expand_word(default, env, escape, instruction.line, instruction.column + offset + len(name) + 1) \
            if has_default else None
        declared.append((name, value))
    return declared


def _owner(value: str, instruction: Instruction) -> tuple:
    match = NUMERIC_OWNER.fullmatch(value)
    if not match:
        raise DockerfileError(f'{instruction.keyword} --chown={value}: give numbers, uid or uid:gid (e.g. '
                              f'--chown=1000:1000); names are not looked up.', instruction.line, 1)
    uid = int(match.group(1))
    return uid, int(match.group(2)) if match.group(2) is not None else uid


def plan(parsed: Parsed, build_args: dict | None = None, base_config: dict | None = None) -> Plan:
    """Every step of the build, with its effect, starting from ``base_config`` (the FROM image's config)."""
    build_args = dict(build_args or {})
    image_name, _from_instruction = from_reference(parsed, build_args)
    escape = parsed.escape
    config = dict(empty_config(), **(base_config or {}))
    config['Env'] = list(config.get('Env') or [])
    shell = list(DEFAULT_SHELL)
    args_in_scope = {}   # name -> value for ARGs declared after FROM
    used_args = set()
    before_from = True
    instructions = parsed.instructions
    total = sum(1 for instruction in instructions if instruction.keyword != 'ARG' or not _before_from(instructions, instruction))
    steps = []
    number = 0
    for instruction in instructions:
        if before_from:
            if instruction.keyword == 'ARG':
                used_args.update(name for name, _default in _arg_declarations(instruction, {}, escape)
                                 if name in build_args)
                continue
            before_from = False
        number += 1
        keyword = instruction.keyword
        env_now = dict(args_in_scope)
        env_now.update(env_dict(config['Env']))   # ENV wins over ARG, as in Docker
        step = Step(number, 0, instruction, 'metadata', '', {})
        if keyword == 'FROM':
            step.kind, step.image = 'from', image_name
            step.created_by = f'FROM {image_name}'
        elif keyword == 'ARG':
            for name, default in _arg_declarations(instruction, env_now, escape):
                if name in build_args:
                    used_args.add(name)
                    args_in_scope[name] = build_args[name]
                else:
                    args_in_scope[name] = default if default is not None else ''
            step.created_by = _nop(f'ARG {instruction.arguments}')
        elif keyword == 'ENV':
            pairs = name_value_pairs(instruction, env_now, escape)
            for name, value in pairs:
                config['Env'] = _set_env(config['Env'], name, value)
            step.created_by = _nop('ENV ' + ' '.join(f'{name}={value}' for name, value in pairs))
        elif keyword == 'LABEL':
            pairs = name_value_pairs(instruction, env_now, escape)
            config['Labels'] = dict(config.get('Labels') or {}, **dict(pairs))
            step.created_by = _nop('LABEL ' + ' '.join(f'{name}={value}' for name, value in pairs))
        elif keyword in ('CMD', 'ENTRYPOINT'):
            exec_form = instruction.exec_form()
            value = exec_form if exec_form is not None else shell + [instruction.arguments]
            config['Cmd' if keyword == 'CMD' else 'Entrypoint'] = value
            if keyword == 'ENTRYPOINT' and not any(earlier.instruction.keyword == 'CMD' for earlier in steps):
                config['Cmd'] = None   # Docker: an ENTRYPOINT resets the CMD inherited from the base image
            step.created_by = _nop(f'{keyword} {_json_list(value)}')
        elif keyword == 'WORKDIR':
            path = expand_word(instruction.arguments, env_now, escape, instruction.line, instruction.column)
            config['WorkingDir'] = posixpath.normpath(posixpath.join(config.get('WorkingDir') or '/', path))
            step.created_by = _nop(f'WORKDIR {config["WorkingDir"]}')
        elif keyword == 'USER':
            config['User'] = expand_word(instruction.arguments, env_now, escape, instruction.line, instruction.column)
            step.created_by = _nop(f'USER {config["User"]}')
        elif keyword == 'SHELL':
            exec_form = instruction.exec_form()
            if not exec_form:
                raise DockerfileError('SHELL takes the exec form only, e.g. SHELL ["/bin/bash", "-c"].',
                                      instruction.line, instruction.column)
            shell = exec_form
            config['Shell'] = exec_form
            step.created_by = _nop(f'SHELL {_json_list(exec_form)}')
        elif keyword == 'EXPOSE':
            ports = dict(config.get('ExposedPorts') or {})
            for port in expand_words(instruction.arguments, env_now, escape, instruction.line, instruction.column):
                if not re.fullmatch(r'[0-9]{1,5}(-[0-9]{1,5})?(/(tcp|udp|sctp))?', port):
                    raise DockerfileError(f'EXPOSE "{port}" is not a port such as 80 or 53/udp.', instruction.line,
                                          instruction.column)
                ports[port if '/' in port else port + '/tcp'] = {}
            config['ExposedPorts'] = ports
            step.created_by = _nop(f'EXPOSE {" ".join(sorted(ports))}')
        elif keyword == 'VOLUME':
            exec_form = instruction.exec_form()
            volumes = exec_form if exec_form is not None else expand_words(
                instruction.arguments, env_now, escape, instruction.line, instruction.column)
            config['Volumes'] = dict(config.get('Volumes') or {}, **{volume: {} for volume in volumes})
            step.created_by = _nop(f'VOLUME {_json_list(volumes)}')
        elif keyword == 'STOPSIGNAL':
            config['StopSignal'] = expand_word(instruction.arguments, env_now, escape, instruction.line, instruction.column)
            step.created_by = _nop(f'STOPSIGNAL {config["StopSignal"]}')
        elif keyword == 'RUN':
            exec_form = instruction.exec_form()
            step.kind = 'run'
            step.argv = exec_form if exec_form is not None else shell + [instruction.arguments]
            if not step.argv:
                raise DockerfileError('RUN [] has no command.', instruction.line, instruction.column)
            step.build_args = [f'{name}={value}' for name, value in sorted(args_in_scope.items())]
            image_env = env_dict(config['Env'])
            step.env = list(config['Env']) + [f'{name}={value}' for name, value in sorted(args_in_scope.items())
                                              if name not in image_env]
            prefix = f'|{len(step.build_args)} {" ".join(step.build_args)} ' if step.build_args else ''
            step.created_by = prefix + (' '.join(step.argv) if exec_form is None else _json_list(step.argv))
        elif keyword in ('COPY', 'ADD'):
            step.kind = 'copy'
            exec_form = instruction.exec_form()
            words = [expand_word(word, env_now, escape, instruction.line, instruction.column) for word in exec_form] \
                if exec_form is not None else expand_words(instruction.arguments, env_now, escape, instruction.line,
                                                           instruction.column)
            if len(words) < 2:
                raise DockerfileError(f'{keyword} needs at least one source and a destination: {keyword} file01.txt /.',
                                      instruction.line, instruction.column)
            step.sources, destination = words[:-1], words[-1]
            for source in step.sources:
                if keyword == 'ADD' and re.match(r'[a-z][a-z0-9+.-]*://', source):
                    raise DockerfileError(f'ADD {source}: downloading from a URL is not supported; put the file into the '
                                          f'build context and COPY it.', instruction.line, instruction.column)
            trailing = destination.endswith('/')
            absolute = posixpath.normpath(posixpath.join(config.get('WorkingDir') or '/', destination))
            step.destination = absolute + ('/' if trailing and absolute != '/' else '')
            flags = dict(instruction.flags)
            if 'chown' in flags:
                step.chown = _owner(expand_word(flags['chown'], env_now, escape), instruction)
            if 'chmod' in flags:
                if not OCTAL_MODE.fullmatch(flags['chmod']):
                    raise DockerfileError(f'{keyword} --chmod={flags["chmod"]}: give an octal mode such as 644.',
                                          instruction.line, 1)
                step.chmod = int(flags['chmod'], 8)
            step.created_by = _nop(f'{keyword} {" ".join(step.sources)} {step.destination}')  # the checksum comes later
        step.config = _copy_config(config)
        steps.append(step)
    for step in steps:
        step.total = total
    return Plan(steps, sorted(set(build_args) - used_args))


def _before_from(instructions, instruction) -> bool:
    for candidate in instructions:
        if candidate is instruction:
            return True
        if candidate.keyword == 'FROM':
            return False
    return False


def _copy_config(config: dict) -> dict:
    return json.loads(json.dumps(config))


def container_command(config: dict) -> list:
    """What a container of the image runs: Entrypoint followed by Cmd (Docker's rule)."""
    return list(config.get('Entrypoint') or []) + list(config.get('Cmd') or [])
