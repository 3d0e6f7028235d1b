"""Build the program under mocks for 3, 10 and 50 workers and print, for each:
evaluation time, resource count, and the length of the longest dependency chain to a
ready cluster (the cluster ready check).

Run: .venv/bin/python benchmarks/mock_scaling.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import with_keys  # noqa: E402
from tests.program import load_stack_config, run_program  # noqa: E402

WORKER_COUNTS = (3, 10, 50)
REPEATS = 5


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        key = Path(directory) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        base = with_keys(load_stack_config("dev"), (key, Path(f"{key}.pub")))
        print(f"{'workers':>7} {'eval ms (median of %d)' % REPEATS:>24} {'resources':>9} {'longest chain':>13}")
        for count in WORKER_COUNTS:
            config = {**base, "workers": {**base["workers"], "count": count}}
            timings, run = [], None
            for _ in range(REPEATS):
                start = time.perf_counter()
                run = run_program(config)
                timings.append((time.perf_counter() - start) * 1000)
                if run.error:
                    raise SystemExit(f"{count} workers: {run.error}")
            print(f"{count:>7} {statistics.median(timings):>24.0f} {len(run.registrations):>9} {run.longest_chain('k8s-ready'):>13}")


if __name__ == "__main__":
    main()
