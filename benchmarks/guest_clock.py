"""Boot the e2e guest image under QEMU software emulation (TCG), as libvirt runs it here
(`-cpu qemu64`, 2 vCPUs), once with its plain kernel command line and once with
`tsc=reliable`, and print for each: the clocksource the guest kernel chose and the cost
of one clock read, with one vCPU busy and with both.

Go programs (etcd, kube-apiserver, the kubelet, containerd) read the clock all the
time, so its cost under emulation is part of every stage's speed.

Run: .venv/bin/python benchmarks/guest_clock.py
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.stack import E2E_CMDLINE, GUEST_CMDLINE, IMAGE, INITRD, KERNEL  # noqa: E402

READS = 300_000
BOOT_SECONDS = 300

# Runs as the guest's init: times READS clock reads in one process, then in two at once,
# less the cost of a loop that calls a function doing nothing, and prints one line the host parses.
GUEST_PROGRAM = f"""
import os, time
def per_read_ns():
    start = time.perf_counter_ns()
    for _ in range({READS}):
        time.monotonic_ns()
    reads = time.perf_counter_ns() - start
    start = time.perf_counter_ns()
    for _ in range({READS}):
        int()
    return (reads - (time.perf_counter_ns() - start)) / {READS}
def on_both_vcpus():
    pipes = []
    for _ in range(2):
        read, write = os.pipe()
        if os.fork() == 0:
            os.write(write, str(per_read_ns()).encode())
            os._exit(0)
        os.close(write)
        pipes.append(read)
    return max(float(os.read(read, 64)) for read in pipes)
source = open("/sys/devices/system/clocksource/clocksource0/current_clocksource").read().strip()
print("RESULT", source, round(per_read_ns()), round(on_both_vcpus()), flush=True)
"""


def boot(cmdline: str, console: Path) -> tuple[str, int, int]:
    """Boots the image with `cmdline` and the program as init; returns its clocksource and timings."""
    program = base64.b64encode(GUEST_PROGRAM.encode()).decode()
    # Words after `--` reach init as its arguments; the program travels without spaces.
    init = f"init=/usr/bin/python3 -- -c exec(__import__('base64').b64decode('{program}'))"
    subprocess.run(
        [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64", "-smp", "2", "-m", "1024",
            "-kernel", str(KERNEL), "-initrd", str(INITRD),
            # panic=-1 with -no-reboot: QEMU exits as soon as init does.
            "-append", f"{cmdline} panic=-1 {init}",
            "-drive", f"file={IMAGE},if=virtio,snapshot=on", "-nic", "none", "-display", "none",
            "-serial", f"file:{console}", "-no-reboot",
        ],
        check=True, timeout=BOOT_SECONDS,
    )
    found = re.search(r"^RESULT (\S+) (\d+) (\d+)", console.read_text(errors="replace"), re.M)
    if not found:
        raise SystemExit(f"no result from the guest; its console is in {console}")
    return found[1], int(found[2]), int(found[3])


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        print(f"{'kernel command line':<45} {'clocksource':>11} {'ns/read, 1 vCPU':>16} {'ns/read, 2 vCPUs':>17}")
        for cmdline in (GUEST_CMDLINE, E2E_CMDLINE):
            source, one, both = boot(cmdline, Path(directory) / "console.log")
            print(f"{cmdline:<45} {source:>11} {one:>16} {both:>17}")


if __name__ == "__main__":
    main()
