"""Read the engine's events of a real `pulumi up` and the stack's state, and print each node's
steps on a time line, then the critical path: the chain of steps, each waiting for the one
before it, that ends with the last step to finish.

Run: .venv/bin/python benchmarks/critical_path.py EVENTS STATE
  EVENTS  the engine's events, one JSON object a line: `pulumi up --json` output or an
          `--event-log` file (the single-node e2e keeps its up's in .cache/e2e/)
  STATE   `pulumi stack export` afterwards (for each resource's dependencies and parent)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

NODE_TYPES = ("kvm:kubeadm:ControlPlane", "kvm:kubeadm:Worker")
BAR_WIDTH = 60


@dataclass(frozen=True)
class Step:
    urn: str
    start: int
    """Seconds from the first step's start."""
    end: int
    failed: bool

    @property
    def name(self) -> str:
        return self.urn.split("::")[-1]


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def steps_of(events: list[dict]) -> dict[str, Step]:
    """Each resource the up worked on, from its step's start to its outputs (or its failure)."""
    started: dict[str, int] = {}
    ended: dict[str, tuple[int, bool]] = {}
    for event in events:
        if pre := event.get("resourcePreEvent"):
            started.setdefault(pre["metadata"]["urn"], event["timestamp"])
        elif end := event.get("resOutputsEvent") or event.get("resOpFailedEvent"):
            ended[end["metadata"]["urn"]] = (event["timestamp"], "resOpFailedEvent" in event)
    if not started:
        return {}
    zero = min(started.values())
    return {urn: Step(urn, start - zero, ended[urn][0] - zero, ended[urn][1])
            for urn, start in started.items() if urn in ended}


def graph_of(state: dict) -> tuple[dict[str, set[str]], dict[str, str], dict[str, str]]:
    """Each resource's dependencies (depends_on and property dependencies), parent, and type."""
    depends, parent, kind = {}, {}, {}
    for resource in state["deployment"].get("resources", []):
        urn = resource["urn"]
        found = set(resource.get("dependencies") or [])
        for urns in (resource.get("propertyDependencies") or {}).values():
            found.update(urns)
        depends[urn], parent[urn], kind[urn] = found, resource.get("parent", ""), resource["type"]
    return depends, parent, kind


def node_of(urn: str, parent: dict[str, str], kind: dict[str, str]) -> str:
    """The node component a resource belongs to, or "cluster"."""
    while urn:
        if kind.get(urn) in NODE_TYPES:
            return urn.split("::")[-1]
        urn = parent.get(urn, "")
    return "cluster"


def critical_path(steps: dict[str, Step], depends: dict[str, set[str]]) -> list[Step]:
    """From the last step to finish back through, at each step, the dependency that finished last
    (through resources the up did not touch, whose own dependencies count instead)."""

    def awaited(urn: str, seen: set[str]) -> list[Step]:
        found = []
        for dependency in sorted(depends.get(urn, ())):  # sorted: ties resolve the same way every run
            if dependency in seen:
                continue
            seen.add(dependency)
            found += [steps[dependency]] if dependency in steps else awaited(dependency, seen)
        return found

    if not steps:
        return []
    chain = [max(steps.values(), key=lambda step: (step.end, step.start))]
    while before := awaited(chain[-1].urn, set()):
        chain.append(max(before, key=lambda step: step.end))
    return chain[::-1]


def bar(step: Step, total: int) -> str:
    scale = BAR_WIDTH / max(total, 1)
    first = int(step.start * scale)
    return " " * first + "#" * max(1, int(step.end * scale) - first)


def report(steps: dict[str, Step], state: dict) -> list[str]:
    depends, parent, kind = graph_of(state)
    # Components, providers and the stack are bookkeeping, not work (the stack's outputs come last).
    steps = {urn: step for urn, step in steps.items() if not kind.get(urn, "").startswith(("kvm:", "pulumi:"))}
    total = max((step.end for step in steps.values()), default=0)
    lines = [f"{'node':<16} {'step':<34} {'start':>6} {'end':>6} {'took':>6}  time line ({total} s)"]
    by_node: dict[str, list[Step]] = {}
    for step in steps.values():
        by_node.setdefault(node_of(step.urn, parent, kind), []).append(step)
    for node in sorted(by_node):
        for step in sorted(by_node[node], key=lambda s: (s.start, s.end)):
            took = f"{step.end - step.start}{'!' if step.failed else ''}"
            lines.append(f"{node:<16} {step.name:<34} {step.start:>6} {step.end:>6} {took:>6}  |{bar(step, total)}")
    chain = critical_path(steps, depends)
    lines.append("")
    lines.append(f"critical path: {len(chain)} steps, {total} s")
    previous_end = 0
    for step in chain:
        waited = step.start - previous_end
        lines.append(f"  {step.name:<48} {step.start:>6} -> {step.end:>6}  took {step.end - step.start:>5} s"
                     + (f", started {waited} s after the step before it" if waited > 1 else ""))
        previous_end = step.end
    return lines


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    events, state = Path(argv[0]), Path(argv[1])
    print("\n".join(report(steps_of(read_events(events)), json.loads(state.read_text()))))


if __name__ == "__main__":
    main(sys.argv[1:])
