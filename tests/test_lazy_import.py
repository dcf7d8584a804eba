"""`import lrkit` loads names on first use: the grader's worker and the command line need no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lrkit


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()


@pytest.mark.slow
def test_the_course_tools_import_without_torch() -> None:
    assert _fresh("import sys, lrkit.course, lrkit.course.cli; print('torch' in sys.modules)") == "False"


def test_every_exported_name_resolves_to_its_module() -> None:
    assert set(lrkit.__all__) == set(lrkit._EXPORTS)
    for name, module in lrkit._EXPORTS.items():
        value = getattr(lrkit, name)
        assert getattr(value, "__module__", f"lrkit.{module}").startswith("lrkit."), name
    assert set(lrkit.__all__) <= set(dir(lrkit))


def test_submodules_load_on_attribute_access_and_unknown_names_raise() -> None:
    assert lrkit.claims.set_chapter is not None and lrkit.spectra.__name__ == "lrkit.spectra"
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        lrkit.no_such_thing  # noqa: B018
