"""Heavy libraries stay off the import paths of the functions that do not need them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "sklearn", "scipy", "joblib", "matplotlib")


def _imported_after(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {name.split(".")[0] for name in json.loads(out)}


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("kpi_sentinel.handlers.scorer", {"numpy"}),  # numpy is the detector; nothing heavier
        ("kpi_sentinel.handlers.planner", set()),  # the planner runs without any numeric library
        ("kpi_sentinel.adapters.aws", set()),
        ("kpi_sentinel.handlers.triage", set()),  # routing and incidents: plain Python
        ("kpi_sentinel.handlers.report", set()),  # recording alerts needs no plots: matplotlib is lazy
    ],
)
def test_given_a_function_handler_when_imported_then_no_heavy_library_is_loaded(
    module: str, allowed: set[str]
) -> None:
    loaded = _imported_after(module)
    assert not loaded & set(HEAVY), f"{module} imports {sorted(loaded & set(HEAVY))}"
    if not allowed:
        assert "numpy" not in loaded, f"{module} imports numpy"


def test_given_the_retrainer_when_imported_then_it_has_what_it_needs_but_no_plotting() -> None:
    loaded = _imported_after("kpi_sentinel.handlers.retrainer")
    assert {"pandas", "sklearn", "joblib"} <= loaded
    assert "matplotlib" not in loaded
