# Sphinx configuration of `make docs` (scripts/build-docs): the collection's plugin pages as antsibull-docs writes
# them for docs.ansible.com, in the Ansible theme, beside docs/*.md. Based on what `antsibull-docs sphinx-init`
# writes, without intersphinx (this machine reaches no documentation site; links to ansible.builtin stay text).
# pylint: disable=invalid-name

project = 'unboxed.lab'
copyright = 'unboxed developers'  # pylint: disable=redefined-builtin
title = 'unboxed.lab: build a container by hand, with Ansible'
html_short_title = 'unboxed.lab'

extensions = ['sphinx_antsibull_ext', 'myst_parser']
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
# docs/index.md, the talk slide by slide, is the first page; contents.rst holds the tree of every page.
root_doc = 'contents'
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

pygments_style = 'ansible'
highlight_language = 'YAML+Jinja'

html_theme = 'sphinx_ansible_theme'
html_show_sphinx = False
display_version = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False
html_theme_options = {'collapse_navigation': False, 'navigation_depth': 3}
html_context = {'display_github': False}
