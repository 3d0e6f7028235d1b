"""`ssh` from the Pulumi host, as the dynamic providers that act on nodes run it: bounded, and
with the options and key the stack's stages use (components/stage.SSH_OPTIONS).

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

import subprocess
from typing import IO, Any, Optional


def run_over_ssh(login: dict[str, Any], ip: str, command: str, timeout: float,
                 output: Optional[IO[bytes]] = None) -> subprocess.CompletedProcess:
    """Run `command` on `ip` as `login["ssh_user"]`; a command that outlives `timeout` counts as failed (124).
    Its stdout is text in the result, or, given `output`, bytes written there (the result's stdout empty)."""
    argv = ["ssh", "-i", login["private_key_path"], *login["ssh_options"], f"{login['ssh_user']}@{ip}", command]
    try:
        if output is None:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        result = subprocess.run(argv, stdout=output, stderr=subprocess.PIPE, timeout=timeout)
        return subprocess.CompletedProcess(argv, result.returncode, "", result.stderr.decode(errors="replace"))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"no answer within {timeout:.0f} s")
