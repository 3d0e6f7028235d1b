"""Stage scripts: one file per stage under scripts/, rendered from config.

Rendering replaces the `# @parameters` line of a stage with `readonly`
assignments (every value through shlex.quote) followed by scripts/lib.sh, and
each `# @helpers NAME` line with scripts/helpers/NAME.sh: helpers that only some
stages share. Secrets never become parameters: they reach a script on stdin.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Sequence, Union

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
PARAMETERS_MARKER = "# @parameters"
HELPERS_MARKER = re.compile(r"^# @helpers ([a-z-]+)$", re.MULTILINE)

Value = Union[str, int, bool, Sequence[str]]


def _assignment(name: str, value: Value) -> str:
    if isinstance(value, bool):
        return f"readonly {name}={int(value)}"
    if isinstance(value, (str, int)):
        return f"readonly {name}={shlex.quote(str(value))}"
    items = " ".join(shlex.quote(str(item)) for item in value)
    return f"readonly -a {name}=({items})"


def render(stage: str, node_name: str, params: dict[str, Value] | None = None) -> str:
    """The complete bash script of `stage` for the node `node_name`."""
    template = HELPERS_MARKER.sub(
        lambda found: (SCRIPTS_DIR / "helpers" / f"{found[1]}.sh").read_text(encoding="utf-8"),
        (SCRIPTS_DIR / f"{stage}.sh").read_text(encoding="utf-8"),
    )
    if template.count(PARAMETERS_MARKER) != 1:
        raise ValueError(f"scripts/{stage}.sh must contain exactly one '{PARAMETERS_MARKER}' line")
    assignments = [_assignment("STAGE", stage), _assignment("NODE_NAME", node_name)]
    assignments += [_assignment(name, value) for name, value in (params or {}).items()]
    lib = (SCRIPTS_DIR / "lib.sh").read_text(encoding="utf-8")
    return template.replace(PARAMETERS_MARKER, "\n".join(assignments) + "\n" + lib, 1)


def as_root(script: str) -> str:
    """The SSH command that runs a rendered script as root; stdin stays free for secrets."""
    return f"sudo -n bash -c {shlex.quote(script)}"
