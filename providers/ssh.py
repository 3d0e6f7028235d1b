"""`ssh` from the Pulumi host, as the dynamic providers that act on nodes run it: bounded, and
with the options and key the stack's stages use (components/stage.SSH_OPTIONS).

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

import subprocess
from typing import Any


def run_over_ssh(login: dict[str, Any], ip: str, command: str, timeout: float) -> subprocess.CompletedProcess:
    """Run `command` on `ip` as `login["ssh_user"]`; a command that outlives `timeout` counts as failed (124)."""
    argv = ["ssh", "-i", login["private_key_path"], *login["ssh_options"], f"{login['ssh_user']}@{ip}", command]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"no answer within {timeout:.0f} s")
