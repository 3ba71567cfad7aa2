"""``privreid bench NAME [ARGS...]``: run one of the repository's benchmarks (``benchmarks/NAME.py``).

The benchmarks are scripts of a checkout, run by path as well (``python benchmarks/pipeline_fps.py``);
they are not part of an installed wheel, so this finds them next to the installed packages (a checkout,
or an editable install of one) and says so clearly when there are none. A benchmark is a module of
``benchmarks/`` with a ``main(argv)`` and a ``__main__`` block; its ``--help`` is its own. The list is
read from the files (their first docstring line), without importing them: listing stays instant.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from privreid.resources import PACKAGES_ROOT

PACKAGE = "benchmarks"


def benchmarks_dir() -> Path | None:
    """The checkout's ``benchmarks/`` folder, or None (an installed wheel has none)."""
    folder = PACKAGES_ROOT / PACKAGE
    return folder if (folder / "__init__.py").is_file() else None


def available(folder: Path) -> dict[str, str]:
    """Benchmark name -> its one-line description, for every runnable module of ``folder``."""
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, SyntaxError):
            continue
        has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        runs = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
        if has_main and runs:  # helpers (report.py, kafka_common.py) are neither
            doc = (ast.get_docstring(tree) or "").strip().splitlines()
            found[path.stem] = doc[0] if doc else ""
    return found


def usage(names: dict[str, str]) -> str:
    width = max((len(n) for n in names), default=0)
    lines = ["usage: privreid bench NAME [ARGS...]   (privreid bench NAME --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {help_}" for name, help_ in names.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    folder = benchmarks_dir()
    if folder is None:
        print(
            f"privreid bench: no benchmarks/ folder next to the installed packages ({PACKAGES_ROOT}); the "
            "benchmarks are scripts of a checkout: clone the repository and run `pip install -e .` there "
            "(or `python benchmarks/NAME.py` in it)",
            file=sys.stderr,
        )
        return 2
    names = available(folder)
    if not args or args[0] in ("-h", "--help", "help", "list"):
        print(usage(names))
        return 0
    name, rest = args[0].replace("-", "_"), args[1:]
    if name not in names:
        print(f"privreid bench: unknown benchmark {args[0]!r}\n\n{usage(names)}", file=sys.stderr)
        return 2
    root = str(folder.parent)
    if root not in sys.path:  # the scripts import benchmarks.* and the project from the checkout
        sys.path.insert(0, root)
    module = importlib.import_module(f"{PACKAGE}.{name}")
    sys.argv = [f"privreid bench {name}", *rest]  # argparse names the command as the user typed it
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
