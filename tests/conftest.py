"""Group tests for `pytest -n 2 --dist loadgroup` (see scripts/test).

* each assignment's grading round trip (tests/test_grading.py grades one batch per
  assignment in a module-scoped fixture) stays on one worker, so the batch is graded
  once while different assignments grade in parallel;
* every other file stays on one worker: nbval runs a notebook's cells in order in one
  kernel, and module-scoped fixtures (the browser) are started once.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = item.nodeid.split("::")[0]
        callspec = getattr(item, "callspec", None)
        if group.endswith("test_grading.py") and callspec is not None and "graded" in callspec.params:
            group = f"grading-{callspec.params['graded']}"
        item.add_marker(pytest.mark.xdist_group(name=group))
