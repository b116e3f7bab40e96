"""Deferred imports (the GX helper's warm-up): a module runs at its first use or at ``load``, never twice,
and imports outside ``defer`` are not deferred."""

import builtins
import sys

import pytest

from curation_pipeline import deferred


@pytest.fixture()
def package(tmp_path, monkeypatch):
    """A package ``dpkg`` of modules ``a``, ``b`` and ``c`` that log their names when they run."""
    root = tmp_path / "dpkg"
    root.mkdir()
    body = "import builtins\nbuiltins.deferred_test_log.append(__name__)\nVALUE = __name__ + '!'\n"
    for name in ("__init__", "a", "b", "c"):
        (root / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(builtins, "deferred_test_log", [], raising=False)
    yield builtins.deferred_test_log
    for name in [n for n in sys.modules if n == "dpkg" or n.startswith("dpkg.")]:
        del sys.modules[name]


def test_modules_imported_inside_run_at_first_use_or_load(package):
    with deferred.defer(("dpkg", "not_imported_here")) as later:
        import dpkg.a
        import dpkg.b
    assert package == ["dpkg"]  # only the package ran: importing its modules reads its __path__
    assert later.names == ["dpkg", "dpkg.a", "dpkg.b"] and later.pending() == 2
    assert later not in sys.meta_path
    assert dpkg.a.VALUE == "dpkg.a!"  # first use runs it
    assert package == ["dpkg", "dpkg.a"] and later.pending() == 1
    later.load()
    assert package == ["dpkg", "dpkg.a", "dpkg.b"] and later.pending() == 0
    assert dpkg.b.VALUE == "dpkg.b!"
    later.load()  # nothing left: nothing runs twice
    import dpkg.c  # after defer: runs at once
    assert package == ["dpkg", "dpkg.a", "dpkg.b", "dpkg.c"]


def test_other_packages_are_not_deferred(package):
    with deferred.defer(("some_other_package",)) as later:
        import dpkg.a  # noqa: F401
    assert package == ["dpkg", "dpkg.a"] and later.names == [] and later.pending() == 0
