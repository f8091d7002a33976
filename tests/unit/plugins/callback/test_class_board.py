"""The class board's pure parts: a grading round merged into the history, the class's progress, the page."""

from __future__ import annotations

import json

from ansible_collections.unboxed.lab.plugins.callback import class_board

SLIDES = ['layers', 'overlay', 'namespaces']
AT1 = '2026-11-29T19:10:00Z'
AT2 = '2026-11-29T19:20:00Z'
AT3 = '2026-11-29T19:30:00Z'


def round_of(**states):
    return {host: {slide: {'state': state, 'hint': None if state == 'done' else f'hint for {host}'}
                   for slide, state in zip(SLIDES, row)} for host, row in states.items()}


def test_first_done_is_kept_and_changes_are_events():
    board = class_board.empty_board(SLIDES)
    class_board.merge_round(board, round_of(lab1=('done', 'stuck', 'not_started')), {}, {}, {}, AT1)
    class_board.merge_round(board, round_of(lab1=('done', 'done', 'in_progress')), {}, {}, {}, AT2)
    class_board.merge_round(board, round_of(lab1=('not_started', 'done', 'in_progress')), {}, {}, {}, AT3)
    cells = board['seats']['lab1']['slides']
    assert cells['layers'] == {'state': 'not_started', 'hint': 'hint for lab1', 'since': AT3, 'done_at': AT1}
    assert cells['overlay']['done_at'] == AT2 and cells['overlay']['hint'] is None
    assert cells['namespaces']['since'] == AT2
    assert [(e['at'], e['slide'], e['state']) for e in board['events']] == [
        (AT1, 'layers', 'done'), (AT1, 'overlay', 'stuck'), (AT1, 'namespaces', 'not_started'),
        (AT2, 'overlay', 'done'), (AT2, 'namespaces', 'in_progress'), (AT3, 'layers', 'not_started')]
    assert board['rounds'] == 3 and board['updated'] == AT3


def test_an_unreachable_seat_keeps_what_it_showed_and_comes_back():
    board = class_board.empty_board(SLIDES)
    class_board.merge_round(board, round_of(lab1=('done', 'done', 'stuck')), {}, {}, {'lab1': {'student': 'Ana'}}, AT1)
    class_board.merge_round(board, {}, {'lab1': 'ssh: connect to host lab1 port 22: No route to host'}, {}, {}, AT2)
    seat = board['seats']['lab1']
    assert seat['reach'] == 'unreachable' and seat['student'] == 'Ana'
    assert seat['slides']['namespaces']['state'] == 'stuck'
    assert class_board.progress(board)['unreachable'] == 1
    class_board.merge_round(board, round_of(lab1=('done', 'done', 'done')), {}, {}, {}, AT3)
    assert board['seats']['lab1']['reach'] == 'ok'
    assert [e['state'] for e in board['events']][-2:] == ['unreachable', 'done']


def test_progress_counts_seats_per_slide():
    board = class_board.empty_board(SLIDES)
    class_board.merge_round(board, round_of(lab1=('done', 'done', 'stuck'), lab2=('done', 'in_progress', 'not_started')),
                            {}, {}, {}, AT1)
    summary = class_board.progress(board)
    assert summary['per_slide'] == {'layers': {'done': 2, 'stuck': 0, 'in_progress': 0},
                                    'overlay': {'done': 1, 'stuck': 0, 'in_progress': 1},
                                    'namespaces': {'done': 0, 'stuck': 1, 'in_progress': 0}}
    assert (summary['done'], summary['total'], summary['percent'], summary['stuck']) == (3, 6, 50, 1)


def test_the_page_reloads_itself_and_escapes_what_it_shows():
    board = class_board.empty_board(SLIDES)
    graded = round_of(lab1=('done', 'stuck', 'not_started'))
    graded['lab1']['overlay']['hint'] = '<script>alert(1)</script> lowerdir order'
    class_board.merge_round(board, graded, {}, {}, {'lab1': {'student': 'Zoë <b>', 'room': 'B204'}}, AT1)
    page = class_board.render_board(board, refresh=7)
    assert '<meta http-equiv="refresh" content="7">' in page
    assert '<script' not in page and '&lt;script&gt;alert(1)&lt;/script&gt; lowerdir order' in page
    assert 'Zoë &lt;b&gt;' in page
    assert 'data-state="stuck"' in page and '<span class="state">done</span><span class="when">19:10</span>' in page


def test_a_board_that_is_not_one_is_started_again(tmp_path):
    path = tmp_path / 'board.json'
    path.write_text(json.dumps({'format': 'something else', 'seats': {}}), encoding='utf-8')
    assert class_board.load_board(str(path), SLIDES) == class_board.empty_board(SLIDES)
    path.write_text('{not json', encoding='utf-8')
    assert class_board.load_board(str(path), SLIDES)['seats'] == {}
    board = class_board.empty_board(SLIDES)
    class_board.merge_round(board, round_of(lab1=('done', 'done', 'done')), {}, {}, {}, AT1)
    class_board.write_board(board, str(tmp_path), 10)
    again = class_board.load_board(str(path), SLIDES + ['chroot'])
    assert again['seats'] == board['seats'] and again['slides'] == SLIDES + ['chroot']
