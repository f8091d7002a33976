"""`make docs` for real: scripts/build-docs renders the collection's documentation with antsibull-docs and Sphinx,
and headless Chromium shows every module page with its options table and examples, and the index linking every
slide, with nothing loaded from outside the site."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import tempfile
from urllib.parse import urlparse

import pytest
import yaml

from test_lab_report_html import DevToolsPipe, find_chromium

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES_DIR = os.path.join(REPO, 'plugins', 'modules')
PLUGIN_PAGES = os.path.join('collections', 'unboxed', 'lab')
SLIDES = ('layers', 'build', 'overlay', 'chroot', 'namespaces', 'cgroups', 'capabilities', 'seccomp', 'network', 'userns')

# What a page shows: its title, every table's header and option names, the code blocks under Examples, links.
READ_PAGE = """JSON.stringify({
  title: (document.querySelector('h1') || {textContent: ''}).textContent,
  text: document.body.innerText,
  tables: Array.from(document.querySelectorAll('table')).map(table => ({
    header: Array.from(table.querySelectorAll('thead th')).map(cell => cell.textContent.trim()),
    options: Array.from(table.querySelectorAll('tbody .ansible-option-title')).map(title => title.textContent.trim()),
    visible: table.getBoundingClientRect().height > 0,
  })),
  examples: Array.from(document.querySelectorAll('section')).filter(section => {
      const heading = section.querySelector(':scope > h2, :scope > h3');
      return heading && heading.textContent.trim().startsWith('Examples');
    }).map(section => Array.from(section.querySelectorAll('pre')).map(pre => pre.textContent)).flat(),
  links: Array.from(document.querySelectorAll('a[href]')).map(link => ({text: link.textContent.trim(), href: link.href})),
})"""


def module_names() -> list[str]:
    return sorted(name[:-3] for name in os.listdir(MODULES_DIR) if name.endswith('.py') and not name.startswith('_'))


def module_doc(module: str) -> dict:
    """A module's DOCUMENTATION (its options) and EXAMPLES, read from its source as ansible-doc reads them."""
    with open(os.path.join(MODULES_DIR, f'{module}.py'), encoding='utf-8') as handle:
        tree = ast.parse(handle.read())
    strings = {node.targets[0].id: node.value.value for node in tree.body
               if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
               and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    try:
        documentation = yaml.safe_load(strings['DOCUMENTATION'])
    except (KeyError, yaml.YAMLError) as error:
        pytest.fail(f'unboxed.lab.{module}: its DOCUMENTATION is not YAML, so no page can show it: {error}')
    return {'documentation': documentation, 'examples': strings.get('EXAMPLES', '')}


class Browser:
    """One headless Chromium for every page (DevTools over a pipe, as test_lab_report_html drives it)."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix='docs-chromium-')
        self.pipe = DevToolsPipe(find_chromium(), self.profile)
        targets = self.pipe.call('Target.getTargets')['targetInfos']
        target = next(info['targetId'] for info in targets if info['type'] == 'page')
        self.session = self.pipe.call('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        self.pipe.call('Page.enable', self.session)
        self.pipe.call('Network.enable', self.session)
        self.pipe.call('Emulation.setDeviceMetricsOverride', self.session, width=1400, height=900, deviceScaleFactor=1, mobile=False)

    def show(self, page: str) -> dict:
        self.pipe.events.clear()
        self.pipe.call('Page.navigate', self.session, url=f'file://{page}')
        self.pipe.wait_for('Page.loadEventFired', self.session)
        shown = json.loads(self.pipe.call('Runtime.evaluate', self.session, expression=READ_PAGE, returnByValue=True)['result']['value'])
        shown['requested'] = [event['params']['request']['url'] for event in self.pipe.events
                              if event.get('method') == 'Network.requestWillBeSent']
        return shown

    def screenshot(self, path: str) -> None:
        import base64  # pylint: disable=import-outside-toplevel
        image = self.pipe.call('Page.captureScreenshot', self.session, format='png')['data']
        with open(path, 'wb') as handle:
            handle.write(base64.b64decode(image))

    def close(self):
        self.pipe.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    output = str(tmp_path_factory.mktemp('docs') / 'html')
    completed = subprocess.run([os.path.join(REPO, 'scripts', 'build-docs'), output], cwd=REPO, capture_output=True, text=True,
                               check=False, timeout=900, stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, f'scripts/build-docs failed:\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}'
    return output


@pytest.fixture(scope='module')
def browser():
    opened = Browser()
    yield opened
    opened.close()


def only_local(requested: list[str]) -> list[str]:
    return [url for url in requested if urlparse(url).scheme not in ('file', 'data')]


@pytest.mark.parametrize('module', module_names())
def test_module_page_shows_options_and_examples(site, browser, module):
    source = module_doc(module)
    documentation = source['documentation']
    page = os.path.join(site, PLUGIN_PAGES, f'{module}_module.html')
    assert os.path.isfile(page), f'no page for unboxed.lab.{module}'
    shown = browser.show(page)
    assert f'unboxed.lab.{module}' in shown['title']
    assert 'was malformed' not in shown['text'], f'antsibull-docs could not read unboxed.lab.{module}:\n{shown["text"][:1500]}'
    options_tables = [table for table in shown['tables'] if table['header'][:1] == ['Parameter']]
    assert options_tables and options_tables[0]['visible'], f'{module}: no visible table of parameters'
    missing = set(documentation['options']) - set(options_tables[0]['options'])
    assert not missing, f'{module}: options missing from the page: {sorted(missing)}'
    assert source['examples'].strip(), f'{module} has no EXAMPLES'
    assert shown['examples'], f'{module}: the page shows no example'
    first_example_task = yaml.safe_load(source['examples'])[0]['name']
    assert any(first_example_task in block for block in shown['examples'])
    assert only_local(shown['requested']) == [], 'the page loads something from outside the site'


def test_index_goes_slide_by_slide_and_links_each_slide(site, browser):
    shown = browser.show(os.path.join(site, 'index.html'))
    browser.screenshot(os.path.join(os.path.dirname(site), 'index.png'))
    text = shown['text']
    positions = [text.find(f'. {slide}') for slide in SLIDES]
    assert all(position >= 0 for position in positions) and positions == sorted(positions), 'the slides, in the talk\'s order'
    links = {link['href'].split('#')[0] for link in shown['links']}
    for slide in SLIDES:
        role_page = f'file://{os.path.join(site, PLUGIN_PAGES, slide)}_role.html'
        assert role_page in links, f'the index does not link the {slide} slide\'s role page'
    for guide in ('pull', 'build', 'local-lab', 'security'):
        assert f'file://{os.path.join(site, guide)}.html' in links, f'the index does not link {guide}'
    for command in ('mount -t overlay overlay', 'chroot /overlay/merged ps ax', 'unshare --fork --pid --net'):
        assert command in text, f'the index lacks the shell command {command!r}'
    assert only_local(shown['requested']) == []


def role_names() -> list[str]:
    return sorted(name for name in os.listdir(os.path.join(REPO, 'roles'))
                  if os.path.isfile(os.path.join(REPO, 'roles', name, 'meta', 'argument_specs.yml')))


@pytest.mark.parametrize('role', role_names())
def test_role_page_renders_its_argument_spec(site, browser, role):
    with open(os.path.join(REPO, 'roles', role, 'meta', 'argument_specs.yml'), encoding='utf-8') as handle:
        main_options = set((yaml.safe_load(handle)['argument_specs'].get('main') or {}).get('options') or {})
    shown = browser.show(os.path.join(site, PLUGIN_PAGES, f'{role}_role.html'))
    assert f'unboxed.lab.{role}' in shown['title']
    assert 'was malformed' not in shown['text'], f'antsibull-docs could not read the role {role}:\n{shown["text"][:1500]}'
    shown_options = {option for table in shown['tables'] if table['visible'] for option in table['options']}
    assert main_options <= shown_options, f'{role}: options missing from the page: {sorted(main_options - shown_options)}'
