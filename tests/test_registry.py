"""The one registration convention: decorator, lookup, aliases, package scanning, clear errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from privreid.registry import Registry, RegistryError


def test_register_get_and_aliases() -> None:
    things: Registry[type] = Registry("thing", key="THING.KIND")

    @things.register("Alpha", aliases=("a",))
    class Alpha:
        pass

    assert things.get("alpha") is Alpha
    assert things.get(" A ") is Alpha
    assert "ALPHA" in things and "beta" not in things
    assert things.names() == ["alpha"]
    with pytest.raises(RegistryError, match=r"unknown thing 'beta' in THING.KIND; known: alpha"):
        things.get("beta")


def test_registering_a_name_twice_is_refused() -> None:
    things: Registry[object] = Registry("thing")
    things.add("x", 1)
    things.add("x", 1)  # the same object again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="registered twice"):
        things.add("x", 2)


def test_package_is_scanned_lazily_and_a_broken_module_is_named(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "regpkg_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from privreid.registry import Registry\nITEMS = Registry('item', key='--item', package='regpkg_demo')\n"
    )
    (pkg / "good.py").write_text(
        textwrap.dedent(
            """
            from regpkg_demo import ITEMS

            @ITEMS.register("good")
            def make():
                return "made"
            """
        )
    )
    (pkg / "broken.py").write_text("import module_that_does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import regpkg_demo

        assert "regpkg_demo.good" not in sys.modules  # nothing imported before the first lookup
        assert regpkg_demo.ITEMS.get("good")() == "made"
        with pytest.raises(RegistryError, match=r"regpkg_demo.broken: ModuleNotFoundError"):
            regpkg_demo.ITEMS.get("missing")
    finally:
        for name in [m for m in sys.modules if m.startswith("regpkg_demo")]:
            del sys.modules[name]
