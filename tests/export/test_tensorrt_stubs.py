"""Every ``trt.X`` / ``trt.X.Y`` segbench names itself exists in NVIDIA's API, as ``tensorrt-stubs`` types it.

The stand-in module in ``tests/fakes`` only shows that the calls are wired as segbench means them; this
test checks the names against the stub files of TensorRT 10.13's bindings (``tensorrt-stubs``, read as
text: nothing is imported). What Polygraphy calls is Polygraphy's concern.

``tensorrt-stubs`` declares ``tensorrt`` itself as a dependency, which pip cannot install without NVIDIA's
index, so it is installed on its own: ``pip install --no-deps tensorrt-stubs==10.13.0.35.1``.
"""

from __future__ import annotations

import ast
import re
from importlib import metadata
from pathlib import Path

import pytest

from segbench.backends.tensorrt import engine

ROOT = Path(__file__).resolve().parents[2]
# The modules that may call TensorRT directly (the builder goes through Polygraphy): the whole package.
MODULES = tuple(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "segbench/backends/tensorrt").glob("*.py")))
STUB_FILES = ("tensorrt/__init__.pyi", "tensorrt_bindings/tensorrt.pyi")


def stub_paths() -> dict[str, Path]:
    try:
        dist = metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed: pip install --no-deps tensorrt-stubs==10.13.0.35.1")
    found = {str(f): Path(dist.locate_file(f)) for f in dist.files or () if str(f) in STUB_FILES}
    assert set(found) == set(STUB_FILES), (
        f"tensorrt-stubs {dist.version} lacks {set(STUB_FILES) - set(found)}"
    )
    return found


CLASS = re.compile(r"^class (\w+)(?:\(([^)]*)\))?:", re.M)
MEMBER = re.compile(r"^    (?:def |class )?(\w+)\s*[(:=]", re.M)


def class_members(text: str) -> dict[str, set[str]]:
    """Each top-level class's member names, inherited ones (from classes in the same file) included.

    Read per class block with regular expressions, not ``ast``: the generated bindings stub has
    signatures Python cannot parse (a non-default argument after a default one in ``add_scale_nd``).
    """
    heads = list(CLASS.finditer(text))
    own, bases = {}, {}
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        block = text[head.end() : following.start() if following else len(text)]
        own[head.group(1)] = set(MEMBER.findall(block))
        bases[head.group(1)] = [b.strip() for b in (head.group(2) or "").split(",") if b.strip()]

    def members(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        names = set(own[name])
        for base in bases[name]:
            if base in own and base not in seen:
                names |= members(base, seen | {name})
        return names

    return {name: members(name) for name in own}


@pytest.fixture(scope="module")
def api() -> tuple[set[str], dict[str, set[str]]]:
    """The names ``import tensorrt`` offers, and the members of each bindings class."""
    paths = stub_paths()
    package = ast.parse(paths["tensorrt/__init__.pyi"].read_text(encoding="utf-8"))
    top = set()
    for node in package.body:
        if isinstance(node, ast.ImportFrom):
            top.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            top.update(t.id for t in targets if isinstance(t, ast.Name))
    return top, class_members(paths["tensorrt_bindings/tensorrt.pyi"].read_text(encoding="utf-8"))


def trt_chains(path: Path) -> set[tuple[str, ...]]:
    """``("X",)`` and ``("X", "Y")`` for every ``trt.X`` / ``trt.X.Y`` in ``path``."""
    chains = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "trt" and parts:
            parts.reverse()
            chains.add(tuple(parts[:1]))
            if len(parts) > 1:
                chains.add(tuple(parts[:2]))
    return chains


def used_chains() -> set[tuple[str, ...]]:
    chains = set().union(*(trt_chains(ROOT / module) for module in MODULES))
    # Names segbench looks up with getattr(trt.DataType, name).
    chains |= {("DataType", name) for name, _ in engine._TORCH_DTYPES}
    return chains


def test_segbench_names_tensorrt_attributes_to_check():
    chains = used_chains()
    # The runtime's own calls are found (so the test below cannot pass on an empty set).
    assert {("TensorIOMode", "INPUT"), ("IOutputAllocator",), ("Runtime",), ("DataType", "HALF"),
            ("init_libnvinfer_plugins",)} <= chains  # fmt: skip


def test_every_tensorrt_attribute_segbench_uses_exists_in_the_stubs(api):
    top, classes = api
    missing = []
    for chain in sorted(used_chains()):
        absent = chain[0] not in top or (len(chain) == 2 and chain[1] not in classes.get(chain[0], set()))
        if absent:
            missing.append(".".join(chain))
    assert not missing, f"not in tensorrt-stubs: {', '.join('trt.' + name for name in missing)}"
