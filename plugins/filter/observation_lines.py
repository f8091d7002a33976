# -*- coding: utf-8 -*-
# Copyright: unboxed developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""verify.yml's summary: one readable line per observation of the talk."""

from __future__ import annotations

DOCUMENTATION = r"""
name: observation_lines
author: unboxed developers (@unboxed-lab)
version_added: 0.2.0
short_description: One line per observation of the talk, for verify.yml's summary
description:
  - Each role's C(verify.yml) notes its observations as dictionaries with C(slide), C(check) (what the talk shows),
    C(ok) and C(seen) (what was seen).
  - "This filter renders them as C(ok   SLIDE: CHECK - SEEN) or C(FAIL SLIDE: CHECK - SEEN), in the order given."
positional: _input
options:
  _input:
    description: The observations.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Summarize the observations of this host
  ansible.builtin.debug:
    msg: "{{ layers_observations | unboxed.lab.observation_lines }}"
"""

RETURN = r"""
_value:
  description: One line per observation.
  type: list
  elements: str
  sample:
    - 'ok   overlay: file01.txt says Texto - Texto'
    - 'FAIL namespaces: inside the container, only lo exists and it is DOWN - lo, eth0'
"""

from ansible.errors import AnsibleFilterError

REQUIRED_KEYS = ('slide', 'check', 'ok', 'seen')


def observation_lines(observations) -> list[str]:
    lines = []
    for index, observation in enumerate(observations or []):
        missing = [key for key in REQUIRED_KEYS if not isinstance(observation, dict) or key not in observation]
        if missing:
            raise AnsibleFilterError(f'observation_lines: observation {index + 1} lacks {", ".join(missing)}: {observation!r}')
        verdict = 'ok  ' if observation['ok'] else 'FAIL'
        lines.append(f"{verdict} {observation['slide']}: {observation['check']} - {str(observation['seen']).strip()}")
    return lines


class FilterModule:
    def filters(self):
        return {'observation_lines': observation_lines}
