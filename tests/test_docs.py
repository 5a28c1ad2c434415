"""The docs point at things that exist, and stay a reference.

Every relative link in README.md, CHANGELOG.md, docs/**/*.md and
configs/*/README.md, and every repository path those files name (in backticks
or in code blocks), must exist, so that moving or renaming a file cannot leave
a stale pointer behind. The README stays a front page, the pages keep to their
budgets, and no page names a commit: history lives in git and CHANGELOG.md.

What counts as a repository path (the one rule): a token of the form
``first/rest`` whose first part is one of the repository's own top-level
folders (``REPO_ROOTS``). Anything else is not checked: URLs, absolute paths,
``mmdet::``/``mmseg::`` config bases, and what runs create or users supply
(``work_dirs/``, ``data/``, ``checkpoints/``, ``.venv/``, ``/path/to/...``),
and what the installation generates (``GENERATED``). Placeholders (``<...>``,
``*``, ``...``) are skipped and ``{a,b}`` is expanded. Anchors (``#...``) are
not checked.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# The repository root: the nearest folder above this file with setup.py
# (tests/ may be nested).
ROOT = next(
    p for p in Path(__file__).resolve().parents if (p / 'setup.py').is_file())

# The repository's own top-level folders: a path starting with one of them
# must exist.
REPO_ROOTS = ('configs', 'docs', 'mmepsa', 'requirements', 'tests', 'tools',
              '.ci')
# Made by the installation, not kept in the repository (`pip install -e .`
# links tools and configs into mmepsa/.mim for mim).
GENERATED = ('mmepsa/.mim', )
README_MAX_LINES = 250
KIB = 1024
# Budgets of the reference pages, in bytes (issue #31): one current table
# per machine class, the demo's figures once, and all of docs/ together.
PAGE_BUDGETS = {
    'docs/performance.md': 12 * KIB,
    'docs/demo.md': 6 * KIB,
}
# every markdown file under docs/, run tables included (issue #35: 75 KB,
# room for the deployment backends)
DOCS_BUDGET = 75 * 1000
# A word of 7-40 hex digits with at least one digit and one letter: what a
# commit hash looks like (git confirms which ones are commits).
HEX_WORD = re.compile(r'(?<![0-9A-Za-z_])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])'
                      r'[0-9a-f]{7,40}(?![0-9A-Za-z_])')

LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
INLINE_CODE = re.compile(r'`([^`\n]+)`')
FENCE = re.compile(r'^(```|~~~)')
PATH = re.compile(r'(?<![\w./:$-])((?:' +
                  '|'.join(re.escape(r)
                           for r in REPO_ROOTS) + r')/[\w./{},*<>+-]*)')


def doc_files():
    files = [ROOT / 'README.md', ROOT / 'CHANGELOG.md']
    files += sorted((ROOT / 'docs').rglob('*.md'))
    files += sorted((ROOT / 'configs').glob('*/README.md'))
    return [f for f in files if f.is_file()]


def expand_braces(path):
    match = re.search(r'\{([^{}]*)\}', path)
    if not match:
        return [path]
    return [
        p for alt in match.group(1).split(',')
        for p in expand_braces(path[:match.start()] + alt + path[match.end():])
    ]


def split_markdown(text):
    """(prose, code): the text outside and inside fenced code blocks."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return '\n'.join(prose), '\n'.join(code)


def link_targets(prose):
    for target in LINK.findall(prose):
        if (re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I)
                or target.startswith('#')):
            continue  # a URL (http:, mailto:...) or an anchor in the same page
        yield target.split('#', 1)[0]


def repo_paths(text):
    for token in PATH.findall(text):
        token = token.rstrip('.,:;')
        if any(p in token for p in ('<', '>', '*', '...')):
            continue  # a placeholder
        if token.startswith(GENERATED):
            continue
        yield from expand_braces(token)


def stale_pointers(md_file):
    prose, code = split_markdown(md_file.read_text(encoding='utf-8'))
    stale = []
    for target in link_targets(prose):
        if target and not (md_file.parent / target).exists():
            stale.append(f'link ({target})')
    named = [
        m for span in INLINE_CODE.findall(prose) for m in repo_paths(span)
    ]
    named += list(repo_paths(code))
    for path in named:
        if not (ROOT / path).exists():
            stale.append(f'path `{path}`')
    return stale


@pytest.mark.parametrize(
    'md_file', doc_files(), ids=lambda f: str(f.relative_to(ROOT)))
def test_links_and_paths_exist(md_file):
    stale = stale_pointers(md_file)
    assert not stale, (f'{md_file.relative_to(ROOT)} points at what does '
                       'not exist: ' + ', '.join(stale))


def test_the_rule_finds_stale_pointers(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text(
        'See [the guide](missing.md#intro), [here](#anchor), '
        '[site](https://example.com),\n'
        '`tools/no_such_tool.py`, `configs/mask_rcnn/{README.md,nothing.py}`, '
        '`work_dirs/x/epoch_1.pth`, `mmdet::mask_rcnn/x.py`, '
        '`tools/<name>.py`.\n'
        '```shell\npython tools/gone.py data/coco/x.json\n```\n',
        encoding='utf-8')
    assert stale_pointers(page) == [
        'link (missing.md)', 'path `tools/no_such_tool.py`',
        'path `configs/mask_rcnn/nothing.py`', 'path `tools/gone.py`'
    ]


def test_readme_is_a_front_page():
    lines = (ROOT / 'README.md').read_text(encoding='utf-8').count('\n')
    assert lines <= README_MAX_LINES, (
        f'README.md has {lines} lines (at most {README_MAX_LINES}): move the '
        'detail to docs/')


@pytest.mark.parametrize('page,budget', sorted(PAGE_BUDGETS.items()))
def test_page_within_budget(page, budget):
    size = (ROOT / page).stat().st_size
    assert size <= budget, (
        f'{page} is {size} bytes (at most {budget}): keep the current state '
        'only, each fact once; history goes to CHANGELOG.md and git')


def test_docs_within_budget():
    sizes = {
        str(f.relative_to(ROOT)): f.stat().st_size
        for f in (ROOT / 'docs').rglob('*.md')
    }
    total = sum(sizes.values())
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    assert total <= DOCS_BUDGET, (
        f'the markdown under docs/ is {total} bytes (at most {DOCS_BUDGET}); '
        f'largest: {largest}')


def hex_words(text):
    """The words of ``text`` that look like commit hashes."""
    return sorted(set(HEX_WORD.findall(text)))


def test_the_rule_finds_hex_words():
    text = ('fixed in a257cce (see 0f45cef...), '
            'performance/cpu-2cores-2026-12-01-671555d.md; not 1234567 (no '
            'letter), deadbeef (no digit), abc123 (too short), abc1234x, '
            '1e-5, epyc-2cores.json, 2026-12-01 or 8x3x224x224')
    assert hex_words(text) == ['0f45cef', '671555d', 'a257cce']


def _git_commits(words):
    """The ``words`` that name a commit of this checkout."""
    return [
        w for w in words
        if subprocess.run(['git', 'cat-file', '-e', f'{w}^{{commit}}'],
                          cwd=ROOT,
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0
    ]


@pytest.mark.parametrize(
    'md_file', doc_files(), ids=lambda f: str(f.relative_to(ROOT)))
def test_no_commit_hashes(md_file):
    if shutil.which('git') is None or not (ROOT / '.git').exists():
        pytest.skip('needs git and a checkout with .git')
    words = hex_words(md_file.read_text(encoding='utf-8'))
    commits = _git_commits(words)
    assert not commits, (
        f'{md_file.relative_to(ROOT)} names commits {commits}: docs state '
        'the current state; history lives in git and CHANGELOG.md')
