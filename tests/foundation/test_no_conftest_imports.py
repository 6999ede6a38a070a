"""A test module must not `import conftest` by that bare name.

conftest.py files outside packages are all loaded as the module `conftest`, so the name means
whichever pytest loaded last: a new conftest.py elsewhere silently changes what the import
finds (CI failed on exactly this). Shared helpers go in a module with its own name.
"""

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
BARE = re.compile(r"^\s*(from\s+conftest\s+import|import\s+conftest\b)", re.M)


def test_no_test_imports_conftest_by_its_bare_name():
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if BARE.search(p.read_text())]
    assert offenders == []
