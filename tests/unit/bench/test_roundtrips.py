"""The round-trip counter of bench/run, on lines of a real `ansible-playbook site.yml -vvv` log (a rerun, lab bench)."""

from __future__ import annotations

import pytest

import roundtrips

SSH = ("<10.213.1.11> SSH: EXEC ssh -o ControlMaster=auto -o ControlPersist=60s -o 'User=\"student\"' "
       "-o 'ControlPath=\"/tmp/unboxed-bench-5glx01vx/cp-kh6pw1wm/a9e5678284\"' 10.213.1.11 ")
LOG = [
    "TASK [unboxed.lab.layers : Validating arguments against arg spec 'main' - Build the talk's image layers] ***",
    'ok: [lab1] => {',
    "TASK [unboxed.lab.base_rootfs : Look for the checksum of every archive the hosts need] ***",
    "<localhost> EXEC /bin/sh -c 'echo ~root && sleep 0'",
    "<localhost> EXEC /bin/sh -c '/work/main/.venv/bin/python3 /root/.ansible/tmp/ansible-tmp-1/AnsiballZ_stat.py && sleep 0'",
    "TASK [unboxed.lab.base_rootfs : Put the base into /overlay/lower1-base] ********",
    "<10.213.1.11> ESTABLISH SSH CONNECTION FOR USER: student",
    SSH + "'/bin/sh -c '\"'\"'echo ~student && sleep 0'\"'\"''",
    SSH + "'/bin/sh -c '\"'\"'( umask 77 && mkdir -p \"` echo /home/student/.ansible/tmp `\" ) && sleep 0'\"'\"''",
    SSH + "'/bin/sh -c '\"'\"'sudo -H -S -n  -u root /bin/sh -c '\"'\"'\"'\"'\"'\"'\"'\"'echo BECOME-SUCCESS-x ; "
          "/usr/bin/python3'\"'\"'\"'\"'\"'\"'\"'\"' && sleep 0'\"'\"''",
    "<10.213.1.11> PUT /var/cache/unboxed/base/debian.tar.gz TO /home/student/.ansible/tmp/ansible-tmp-2/debian.tar.gz",
    "<10.213.1.11> SSH: EXEC sftp -b - -C -o ControlMaster=auto -o ControlPersist=60s '[10.213.1.11]'",
    "TASK [unboxed.lab.chroot : Run ps ax and ip addr inside the chroot] ************",
    SSH + "'/bin/sh -c '\"'\"'sudo -H -S -n  -u root /bin/sh -c '\"'\"'echo BECOME-SUCCESS-y ; /usr/bin/python3'\"'\"' && sleep 0'",
    "<10.213.1.12> SSH: EXEC ssh 10.213.1.12 '/bin/sh -c '\"'\"'sudo -u root /bin/sh -c '\"'\"'echo BECOME-SUCCESS-z ; /usr/bin/python3'",
    "TASK [unboxed.lab.chroot : Show that the chroot shares the host's processes and network] ***",
    'ok: [lab1] => {',
    "PLAY RECAP *********************************************************************",
]
HOSTS = {'lab1': '10.213.1.11', 'lab2': '10.213.1.12'}


def test_each_process_the_connection_started_is_counted_for_its_task_and_seat():
    tasks = roundtrips.count(LOG, HOSTS)
    assert [task['slide'] for task in tasks] == ['layers', 'layers', 'layers', 'chroot', 'chroot']
    base = tasks[2]
    assert base['seats'] == {'lab1': {'module': 1, 'transfer': 1, 'shell': 2}}
    assert tasks[1]['controller'] == {'module': 1, 'transfer': 0, 'shell': 1} and tasks[1]['seats'] == {}
    assert tasks[3]['seats'] == {'lab1': {'module': 1, 'transfer': 0, 'shell': 0}, 'lab2': {'module': 1, 'transfer': 0, 'shell': 0}}
    assert tasks[4]['seats'] == {}            # debug: the controller's time only


def test_per_slide_gives_the_most_and_the_fewest_any_seat_needed():
    slides = roundtrips.per_slide(roundtrips.count(LOG, HOSTS), HOSTS)
    assert list(slides) == ['layers', 'chroot']
    assert slides['layers']['tasks'] == 3
    assert slides['layers']['max'] == {'module': 1, 'transfer': 1, 'shell': 2}
    assert slides['layers']['min'] == {'module': 0, 'transfer': 0, 'shell': 0}     # lab2 had nothing to do
    assert slides['layers']['controller'] == {'module': 1, 'transfer': 0, 'shell': 1}
    assert slides['chroot']['max'] == slides['chroot']['min'] == {'module': 1, 'transfer': 0, 'shell': 0}


@pytest.mark.parametrize('name, slide', [
    ('unboxed.lab.base_rootfs : Put the base into /overlay/lower1-base', 'layers'),
    ('unboxed.lab.seccomp : Try unshare --user in the confined container', 'seccomp'),
    ('Gathering Facts', 'play'),
])
def test_a_task_belongs_to_its_roles_slide(name, slide):
    assert roundtrips.slide_of(name) == slide
