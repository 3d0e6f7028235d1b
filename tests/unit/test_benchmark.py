"""The benchmark still runs against the program and the test helpers it uses (figures are not judged)."""

from __future__ import annotations

import benchmarks.critical_path as critical_path
import benchmarks.mock_scaling as benchmark


def test_the_benchmark_prints_one_row_per_worker_count(monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "WORKER_COUNTS", (1, 2))
    monkeypatch.setattr(benchmark, "REPEATS", 1)
    benchmark.main()
    header, *rows = capsys.readouterr().out.splitlines()
    assert "longest chain" in header
    assert [row.split()[0] for row in rows] == ["1", "2"]
    resources = [int(row.split()[2]) for row in rows]
    assert resources[1] > resources[0], rows


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:e2e::kvm-kubeadm::{type_}::{name}"


def test_the_critical_path_follows_what_each_step_waited_for():
    cp, net = urn("kvm:kubeadm:ControlPlane", "k8s-k8smaster"), urn("libvirt:index/network:Network", "k8s-net")
    domain, init = urn("libvirt:index/domain:Domain", "k8s-k8smaster-domain"), urn("command:remote:Command", "k8s-k8smaster-init")
    packages = urn("command:remote:Command", "k8s-k8smaster-packages")
    ready = urn("command:remote:Command", "k8s-ready")
    stack = urn("pulumi:pulumi:Stack", "kvm-kubeadm-e2e")

    def span(what: str, start: int, end: int) -> list[dict]:
        return [{"timestamp": start, "resourcePreEvent": {"metadata": {"urn": what}}},
                {"timestamp": end, "resOutputsEvent": {"metadata": {"urn": what}}}]

    events = [*span(stack, 100, 999), *span(net, 100, 105), *span(domain, 105, 200), *span(packages, 200, 400),
              *span(init, 200, 250), *span(ready, 410, 420)]
    state = {"deployment": {"resources": [
        {"urn": stack, "type": "pulumi:pulumi:Stack"},
        {"urn": cp, "type": "kvm:kubeadm:ControlPlane", "parent": stack},
        {"urn": net, "type": "libvirt:index/network:Network", "parent": stack},
        {"urn": domain, "type": "libvirt:index/domain:Domain", "parent": cp, "dependencies": [net]},
        {"urn": packages, "type": "command:remote:Command", "parent": cp, "dependencies": [domain]},
        {"urn": init, "type": "command:remote:Command", "parent": cp, "propertyDependencies": {"x": [domain]}},
        {"urn": ready, "type": "command:remote:Command", "parent": stack, "dependencies": [init, packages]},
    ]}}
    steps = critical_path.steps_of(events)
    chain = critical_path.critical_path(
        {u: s for u, s in steps.items() if u != stack}, critical_path.graph_of(state)[0])
    # ready waited for packages (done at 300 s), not for init (done at 150 s).
    assert [step.name for step in chain] == ["k8s-net", "k8s-k8smaster-domain", "k8s-k8smaster-packages", "k8s-ready"]
    lines = critical_path.report(steps, state)
    assert any(line.startswith("k8s-k8smaster") and "k8s-k8smaster-init" in line for line in lines), lines
    assert any(line.startswith("cluster") and "k8s-ready" in line for line in lines), lines
    assert "critical path: 4 steps, 320 s" in lines
    assert not [line for line in lines if "kvm-kubeadm-e2e" in line]
