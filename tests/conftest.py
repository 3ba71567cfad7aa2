"""Shared test fixtures: where the offline data lives, and skips with a reason when it does not.

``../shared/data`` (override: ``PRIVREID_SHARED_DATA``) holds research-only data and third-party
models; a user's fresh clone has none of it, so tests that need it skip and say why.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("PRIVREID_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
VTEST_CANDIDATES = [
    Path(os.environ.get("PRIVREID_DATA", Path.home() / ".cache" / "privreid" / "data")) / "vtest.avi",
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
]

pytest_plugins = [p for p in ("tests.kafka_fixtures",) if (REPO_ROOT / (p.replace(".", "/") + ".py")).exists()]


def shared_path(relative: str) -> Path:
    """Path inside ``../shared/data``; skips the calling test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs {relative} from the offline data folder ({SHARED_DATA}), which is absent")
    return path


def vtest_path() -> Path:
    """OpenCV's sample video, fetched by scripts/setup.sh; skips when it is absent."""
    for candidate in VTEST_CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.skip("needs OpenCV's vtest.avi (run scripts/setup.sh, which unpacks Debian's opencv-doc)")


@pytest.fixture
def vtest() -> Path:
    return vtest_path()


# ---- markers ---------------------------------------------------------------------------------------------
# Registered in pytest.ini (--strict-markers). needs_data, kafka and rtsp are set here from what a test
# uses, so a new test file is marked without a line of its own; slow and gpu are explicit (pytestmark or
# a decorator) because no fixture says how long a test runs or that it needs CUDA.
#
# A test gets a marker when the test function, its class, a fixture it uses (transitively) or a module-level
# name either of those refers to — also one imported from another tests/ module — mentions a seed below.
# The walk is static (ast), over module-level definitions only; docstrings do not count.
_SEEDS: dict[str, tuple[frozenset[str], tuple[str, ...], frozenset[str]]] = {
    # marker: (names, substrings of string constants, whole string constants)
    "needs_data": (
        frozenset({"shared_path", "SHARED_DATA"}),
        ("shared/data", "PRIVREID_SHARED_DATA"),
        frozenset({"shared"}),
    ),  # Path(...) / "shared" / "data"
    "kafka": (
        frozenset({"kafka_broker", "restartable_broker", "EmbeddedBroker", "KafkaRuntime", "_broker_or_skip"}),
        (),
        frozenset({"embedded"}),
    ),  # --kafka embedded / KAFKA.BOOTSTRAP embedded
    "rtsp": (frozenset({"_gst_available"}), ("rtsp_server",), frozenset()),  # tests/rtsp_server.py (GStreamer)
}
_AUTO_MARKS = tuple(_SEEDS)
TESTS_DIR = REPO_ROOT / "tests"


class _ModuleTaint:
    """Which module-level names of one tests/ file lead to each automatic marker."""

    _cache: dict[Path, _ModuleTaint] = {}
    _busy: set[Path] = set()

    def __init__(self, path: Path) -> None:
        self.tainted: dict[str, set[str]] = {m: set() for m in _AUTO_MARKS}
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, SyntaxError, ValueError):
            return
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)
        }
        defs: dict[str, tuple[set[str], list[str]]] = {}

        def add(name: str, node: ast.AST) -> None:
            refs, strings = defs.setdefault(name, (set(), []))
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name):
                    refs.add(sub.id)
                elif isinstance(sub, ast.arg):
                    refs.add(sub.arg)  # a fixture requested by argument name
                elif isinstance(sub, ast.Attribute):
                    refs.add(sub.attr)  # module.shared_path, broker.EmbeddedBroker
                elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and id(sub) not in docstrings:
                    strings.append(sub.value)

        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                add(stmt.name, stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            add(sub.id, stmt)
            elif isinstance(stmt, ast.ImportFrom):
                other = self._resolve(path, stmt)
                for alias in stmt.names:
                    local = alias.asname or alias.name
                    for mark in _AUTO_MARKS:
                        if other is not None and alias.name in other.tainted[mark]:
                            self.tainted[mark].add(local)
                        elif alias.name in _SEEDS[mark][0]:
                            self.tainted[mark].add(local)
        for mark, (names, parts, wholes) in _SEEDS.items():
            tainted = self.tainted[mark]
            tainted.update(names)
            for name, (_, strings) in defs.items():
                if any(s in wholes or any(p in s for p in parts) for s in strings):
                    tainted.add(name)
            changed = True
            while changed:
                changed = False
                for name, (refs, _) in defs.items():
                    if name not in tainted and refs & tainted:
                        tainted.add(name)
                        changed = True

    @staticmethod
    def _resolve(path: Path, stmt: ast.ImportFrom) -> _ModuleTaint | None:
        """The analysis of a ``from tests.x import ...`` / ``from .x import ...`` module; None for others."""
        module = stmt.module or ""
        if stmt.level == 1:
            base = path.parent
        elif stmt.level == 0 and module.split(".")[0] == "tests":
            base, module = TESTS_DIR, module.partition(".")[2]
        else:
            return None
        target = base.joinpath(*module.split(".")).with_suffix(".py") if module else base / "__init__.py"
        return _ModuleTaint.of(target) if target.is_file() else None

    @classmethod
    def of(cls, path: Path) -> _ModuleTaint:
        path = path.resolve()
        if path not in cls._cache:
            if path in cls._busy:  # an import cycle between test modules: no taint through it
                return cls.__new__(cls)._empty()
            cls._busy.add(path)
            try:
                cls._cache[path] = cls(path)
            finally:
                cls._busy.discard(path)
        return cls._cache[path]

    def _empty(self) -> _ModuleTaint:
        self.tainted = {m: set() for m in _AUTO_MARKS}
        return self


def _fixture_modules(item: pytest.Item) -> list[tuple[str, Path | None]]:
    """(fixture name, file that defines the fixture) for every fixture the test uses, transitively."""
    info = getattr(item, "_fixtureinfo", None)
    out: list[tuple[str, Path | None]] = []
    for name in getattr(item, "fixturenames", ()):
        where = None
        defs = info.name2fixturedefs.get(name) if info is not None else None
        if defs:
            func = getattr(defs[-1], "func", None)
            module = sys.modules.get(getattr(func, "__module__", "") or "")
            if getattr(module, "__file__", None):
                where = Path(module.__file__)
        out.append((name, where))
    return out


def automatic_marks(item: pytest.Item) -> set[str]:
    """The automatic markers (needs_data, kafka, rtsp) that ``item`` gets."""
    where = getattr(item, "path", None)
    if where is None or Path(where).suffix != ".py":
        return set()
    path = Path(where)
    own = _ModuleTaint.of(path)
    names = {getattr(item, "originalname", None) or item.name.split("[")[0], "pytestmark"}
    if getattr(item, "cls", None) is not None:
        names.add(item.cls.__name__)
    found = {m for m in _AUTO_MARKS if names & own.tainted[m]}
    for fixture, where in _fixture_modules(item):
        ours = where is not None and where.suffix == ".py" and TESTS_DIR in where.resolve().parents
        taint = _ModuleTaint.of(where) if ours else own
        found.update(m for m in _AUTO_MARKS if fixture in taint.tainted[m] or fixture in own.tainted[m])
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = []
    for item in items:
        present = {m.name for m in item.iter_markers()}
        for mark in sorted(automatic_marks(item) - present):
            item.add_marker(getattr(pytest.mark, mark))
        if "gpu" in present:
            gpu_items.append(item)
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu)")
        for item in gpu_items:
            item.add_marker(skip)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
