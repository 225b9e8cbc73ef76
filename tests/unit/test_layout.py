"""The purity rule of docs/architecture.md: ``learners/``, ``buffers/`` and ``core/`` are pure code.

They never import ``stream``, Kafka, Redis, sockets or HTTP clients, and never open files.
Checked on the syntax tree (imports at any level, including inside functions, and
relative imports resolved), not with grep. Also: importing the registry must not pull in
torch or river (they load only when a learner that needs them is used).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_PACKAGES = ("learners", "buffers", "core")
FORBIDDEN_MODULES = {"stream", "kafka", "redis", "socket", "requests", "urllib", "http"}
# Calls that read or write files: builtin/io/os open, pathlib-style read/write helpers,
# numpy/pickle file I/O. (pickle.loads on bytes is not file I/O.)
FILE_CALL_NAMES = {"open"}
FILE_METHODS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "tofile"}
FILE_FUNCTIONS = {
    ("np", "load"), ("np", "save"), ("np", "savez"), ("np", "savez_compressed"), ("np", "loadtxt"),
    ("np", "savetxt"), ("np", "fromfile"), ("np", "genfromtxt"), ("numpy", "load"), ("numpy", "save"),
    ("pickle", "load"), ("pickle", "dump"), ("torch", "load"), ("torch", "save"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["ocld", *parts])  # the folders install as ocld.learners, ocld.buffers, ocld.stream


def _resolve_relative(module: str | None, level: int, current: str, is_package: bool) -> str:
    """Absolute name of ``from {'.' * level}{module} import ...`` inside module ``current``."""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([module] if module else [])])


def violations(source: str, current: str = "ocld.learners.example", is_package: bool = False) -> list[str]:
    """Every forbidden import or file-opening call in ``source`` as 'line: what'."""
    found: list[str] = []
    tree = ast.parse(source)

    def forbidden(name: str) -> bool:
        parts = name.split(".")
        if parts[0] == "ocld" and len(parts) > 1:
            return parts[1] == "stream"
        return parts[0] in FORBIDDEN_MODULES

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if forbidden(alias.name):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = _resolve_relative(node.module, node.level, current, is_package)
                names = [target] + [f"{target}.{a.name}" if target else a.name for a in node.names]
                # ``from .. import stream`` inside learners/ resolves to "" + "stream"
                names = [n.lstrip(".") for n in names]
            else:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names if node.module]
            bad = [n for n in names if n and forbidden(n)]
            if bad:
                found.append(f"{node.lineno}: from {'.' * node.level}{node.module or ''} import ... ({bad[0]})")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FILE_CALL_NAMES:
                found.append(f"{node.lineno}: {func.id}(...)")
            elif isinstance(func, ast.Name) and func.id == "__import__" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and forbidden(arg.value):
                    found.append(f"{node.lineno}: __import__({arg.value!r})")
            elif isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else None
                if func.attr in FILE_METHODS:
                    found.append(f"{node.lineno}: {owner or '...'}.{func.attr}(...)")
                elif (owner, func.attr) in FILE_FUNCTIONS:
                    found.append(f"{node.lineno}: {owner}.{func.attr}(...)")
                elif func.attr == "import_module" and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and forbidden(arg.value):
                        found.append(f"{node.lineno}: import_module({arg.value!r})")
    return found


def _pure_modules() -> list[Path]:
    files = sorted(p for pkg in PURE_PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    assert files, "found no modules under learners/, buffers/ or core/"
    return files


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_package_does_no_io(path: Path) -> None:
    bad = violations(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py")
    rule = "no stream/Kafka/Redis/sockets/HTTP imports, no file I/O"
    assert not bad, f"{path.relative_to(ROOT)} breaks the import rule ({rule}):\n" + "\n".join(bad)


def test_checker_catches_what_it_must() -> None:
    """The checker itself is not vacuous: each kind of violation is found, clean code is not flagged."""
    cases = {
        "import stream.snapshot": 1,
        "from stream import snapshot": 1,
        "import ocld.stream.store": 1,
        "from ocld.stream import snapshot": 1,
        "from ocld import stream": 1,
        "import kafka, numpy": 1,
        "from redis.client import Redis": 1,
        "def f():\n    import socket\n    return socket": 1,
        "class A:\n    def m(self):\n        from urllib.request import urlopen": 1,
        "import http.client as h": 1,
        "try:\n    import requests\nexcept ImportError:\n    pass": 1,
        "def f(p):\n    with open(p) as fh:\n        return fh.read()": 1,
        "import io\nio.open('x')": 1,
        "from pathlib import Path\nPath('x').read_text()": 1,
        "import numpy as np\nnp.save('x.npy', np.zeros(3))": 1,
        "import importlib\nimportlib.import_module('redis')": 1,
        "__import__('socket')": 1,
        "import numpy as np\nimport torch\nfrom scipy.linalg import blas\nx = np.frombuffer(b'', np.uint8)": 0,
        "import pickle\npickle.loads(b'')": 0,
        "from ocld.learners.base import Learner\nfrom . import base\nfrom ocld.buffers import ring": 0,
    }
    for source, expected in cases.items():
        assert len(violations(textwrap.dedent(source))) == expected, source
    # relative imports are resolved against the module's package
    assert violations("from .. import stream", "ocld.learners.kalman")
    assert violations("from ..stream.snapshot import encode", "ocld.learners.kalman")
    assert violations("from ...stream import x", "ocld.learners.sub.mod")
    assert not violations("from .base import Learner", "ocld.learners.kalman")
    assert not violations("from ..buffers import reservoir", "ocld.learners.kalman")


def _modules_after(code: str) -> dict[str, bool]:
    probe = "\n".join(
        [
            "import json, sys",
            code,
            "heavy = ('torch', 'river', 'kafka', 'redis', 'ocld.stream')",
            "print(json.dumps({h: any(m == h or m.startswith(h + '.') for m in sys.modules) for h in heavy}))",
        ]
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_registry_import_is_light() -> None:
    loaded = _modules_after("import ocld.learners.registry")
    assert not loaded["torch"], "import ocld.learners.registry imported torch"
    assert not loaded["river"], "import ocld.learners.registry imported river"
    assert not any(loaded[k] for k in ("kafka", "redis", "ocld.stream")), loaded


def test_resolving_every_component_is_light() -> None:
    """torch and river load only when a learner that needs them is built, not when its class is resolved."""
    loaded = _modules_after(
        "from ocld.learners.registry import COMPONENTS, resolve\nfor name in COMPONENTS: resolve(name)"
    )
    assert not loaded["torch"] and not loaded["river"], loaded
    assert not any(loaded[k] for k in ("kafka", "redis", "ocld.stream")), loaded


GENERIC_NAMES = ("stream", "learners", "buffers", "core")


def _all_python_files() -> list[Path]:
    dirs = ("ocld", "core", "stream", "learners", "buffers", "tests", "benchmarks", "scripts")
    return sorted(p for d in dirs if (ROOT / d).exists() for p in (ROOT / d).rglob("*.py"))


def test_nothing_imports_the_generic_top_level_names() -> None:
    """Code imports ``ocld.stream`` / ``ocld.learners`` / ``ocld.buffers``, never the bare folder names:
    those are generic names other distributions use, and importing a module under two names would give
    two copies of every class."""
    bad = []
    for path in _all_python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in GENERIC_NAMES]
    assert not bad, "import through the ocld namespace instead:\n" + "\n".join(bad)


def test_tests_never_import_benchmarks() -> None:
    """Shared test support lives under ``tests/`` (helpers, the crash and scale-out harness); benchmarks
    may import it, tests never import a benchmark."""
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "benchmarks"]
    assert not bad, "move what the test needs under tests/ instead:\n" + "\n".join(bad)


def test_public_api_resolves() -> None:
    """Every name in ``ocld.__all__`` resolves, and ``import ocld`` itself loads neither Kafka nor Redis."""
    loaded = _modules_after("import ocld")
    assert not any(loaded[k] for k in ("kafka", "redis", "torch", "ocld.stream")), loaded
    import ocld

    for name in ocld.__all__:
        if name == "MomentumKD" and not _has_torch():
            continue
        assert getattr(ocld, name) is not None, name


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
