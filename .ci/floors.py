"""Print `name==floor` for every dependency in pyproject.toml (the project's and the test extra's), one a line: a
pip constraints file that installs the lowest versions the project claims to work with (see .ci/floors.sh).

Every requirement must state its floor with `>=`: one without is an error, so no dependency goes untested.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
missing = []
for requirement in requirements:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
    floor = re.search(r">=\s*([^,;\s]+)", requirement)
    if floor is None:
        missing.append(requirement)
    else:
        print(f"{name}=={floor.group(1)}")
if missing:
    sys.exit(f"pyproject.toml: no `>=` floor in {', '.join(missing)}")
