"""mmepsa, its tools and configs stay usable on the oldest Python that
``python_requires`` admits (3.8): the grammar, and the runtime-evaluated
annotations that 3.8 cannot evaluate (``list[int]``, ``int | None``)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OLDEST = (3, 8)
SOURCES = sorted(
    str(p.relative_to(ROOT)) for folder in ('mmepsa', 'tools', 'configs')
    for p in (ROOT / folder).rglob('*.py') if '.mim' not in p.parts)
BUILTIN_GENERICS = {'list', 'dict', 'tuple', 'set', 'frozenset', 'type'}


def _runtime_annotations(tree: ast.Module):
    """Annotations Python evaluates when the module runs (all of them,
    unless ``from __future__ import annotations``)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs,
                        args.vararg, args.kwarg):
                if arg is not None and arg.annotation is not None:
                    yield arg.annotation
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def _too_new(annotation: ast.AST):
    for node in ast.walk(annotation):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return 'X | Y (PEP 604, Python 3.10)'
        if isinstance(node, ast.Subscript) and isinstance(
                node.value, ast.Name) and node.value.id in BUILTIN_GENERICS:
            return f'{node.value.id}[...] (PEP 585, Python 3.9)'
    return None


def test_sources_found():
    assert 'mmepsa/models/backbones/epsanet.py' in SOURCES
    assert 'tools/train.py' in SOURCES
    assert any(s.startswith('configs/') for s in SOURCES)


@pytest.mark.parametrize('path', SOURCES)
def test_parses_on_the_oldest_python(path):
    source = (ROOT / path).read_text()
    tree = ast.parse(source, filename=path, feature_version=OLDEST)
    if re.search(r'^from __future__ import annotations', source, re.M):
        return
    for annotation in _runtime_annotations(tree):
        problem = _too_new(annotation)
        assert problem is None, (
            f'{path}:{annotation.lineno}: {problem} is evaluated at run time '
            f'and fails on Python {OLDEST[0]}.{OLDEST[1]}; use typing')


@pytest.mark.parametrize('snippet,problem', [
    ('def f(x: list[int]) -> None: pass', 'PEP 585'),
    ('def f(x: int | None): pass', 'PEP 604'),
    ('y: dict[str, int] = {}', 'PEP 585'),
])
def test_the_check_finds_new_annotations(snippet, problem):
    annotations = list(_runtime_annotations(ast.parse(snippet)))
    assert any(problem in (_too_new(a) or '') for a in annotations)


def test_parse_check_rejects_new_grammar():
    with pytest.raises(SyntaxError):  # match is Python 3.10 grammar
        ast.parse('match x:\n    case 1: pass\n', feature_version=OLDEST)


def test_python_requires_and_classifiers_agree():
    setup = (ROOT / 'setup.py').read_text()
    low = re.search(r"python_requires='>=(\d+)\.(\d+)'", setup)
    assert low and tuple(map(int, low.groups())) == OLDEST
    minors = sorted(
        int(m) for m in re.findall(
            r"'Programming Language :: Python :: 3\.(\d+)'", setup))
    assert minors == list(range(OLDEST[1], minors[-1] + 1)), minors
    assert minors[-1] >= 11  # the project's own set-up runs 3.11
