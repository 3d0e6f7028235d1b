"""The certificate check's dynamic provider, run directly (under mocks its methods never run), against
a stand-in for `ssh` that answers the check and the renewal as kubeadm would, from a JSON file of each
control plane's certificate expiry; and its wiring under mocks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from providers import certificate_expiry
from providers.certificate_expiry import CertificateExpiryProvider, earliest_expiry, stamp
from tests.fakes import put_on_path
from tests.program import DYNAMIC, FAKE_CERTIFICATES_EXPIRE, PROJECT_DIR, run_program

NOW = datetime.now(timezone.utc).replace(microsecond=0)
# ssh -i KEY OPTIONS... USER@IP COMMAND: the node by its address, the step by the rendered RENEW.
SSH = textwrap.dedent("""\
    import json, os, sys, time
    from datetime import datetime, timedelta, timezone
    state_path = os.environ["FAKE_NODES"]
    state = json.load(open(state_path))
    ip, command = sys.argv[-2].split("@")[1], sys.argv[-1]
    node = state["nodes"][ip]
    renew = "readonly RENEW=1" in command
    state["calls"].append([node["name"], "renew" if renew else "check"])
    if renew:
        time.sleep(node.get("renewal_takes", 0))
    if node.get("down") or (renew and node.get("renewal_fails")):
        json.dump(state, open(state_path, "w"))
        print("kubeadm certs renew all failed: etcd said no", file=sys.stderr)
        sys.exit(255 if node.get("down") else 1)
    if renew:
        node["expiry"] = (datetime.now(timezone.utc) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    json.dump(state, open(state_path, "w"))
    print("[check-expiration] Reading configuration from the cluster...")
    print(json.dumps({"kind": "CertificateExpirationInfo", "certificates": [
        {"name": "apiserver", "expirationDate": node["expiry"], "missing": False, "externallyManaged": False},
        {"name": "admin.conf", "expirationDate": None, "missing": True},
    ]}))
""")


@pytest.fixture
def nodes(tmp_path, monkeypatch):
    """Two control planes, their expiry in `days` from now each; returns a setter and the call log."""
    put_on_path(monkeypatch, tmp_path / "bin", "ssh", SSH)
    state_path = tmp_path / "nodes.json"
    monkeypatch.setenv("FAKE_NODES", str(state_path))

    class Nodes:
        def set(self, **nodes: dict) -> None:
            state = {"calls": [], "nodes": {}}
            for index, (name, node) in enumerate(nodes.items()):
                state["nodes"][f"192.168.56.{107 + index}"] = {
                    "name": name, "expiry": stamp(NOW + timedelta(days=node.pop("days"))), **node}
            state_path.write_text(json.dumps(state))

        @property
        def calls(self) -> list[list[str]]:
            return json.loads(state_path.read_text())["calls"]

    return Nodes()


def props(renew_before_days: int = 30, renew_wait_seconds: float = 240) -> dict:
    return {
        "nodes": [{"name": name, "ip": f"192.168.56.{107 + index}", "check": "readonly RENEW=0", "renew": "readonly RENEW=1"}
                  for index, name in enumerate(("k8smaster", "k8smaster2"))],
        "renew_before_days": renew_before_days, "renew_wait_seconds": renew_wait_seconds, "version": "1.36.3", "ssh_user": "kube", "private_key_path": "/dev/null", "ssh_options": [],
    }


def in_days(days: int) -> str:
    return stamp(NOW + timedelta(days=days))


def test_certificates_far_from_expiry_are_checked_and_left_alone(nodes):
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 200})
    outs = CertificateExpiryProvider().create(props()).outs
    assert nodes.calls == [["k8smaster", "check"], ["k8smaster2", "check"]]
    assert outs["earliest"] == in_days(200) and outs["renewed"] == []
    assert outs["expiries"] == {"k8smaster": in_days(300), "k8smaster2": in_days(200)}


def test_a_control_plane_within_the_window_is_renewed_and_its_new_expiry_recorded(nodes):
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 10})
    outs = CertificateExpiryProvider().create(props(renew_before_days=30)).outs
    assert nodes.calls == [["k8smaster", "check"], ["k8smaster2", "check"], ["k8smaster2", "renew"]]
    assert outs["renewed"] == ["k8smaster2"] and outs["earliest"] == in_days(300)
    assert outs["expiries"]["k8smaster2"] >= in_days(365)


def test_a_failed_renewal_names_the_control_plane_and_shows_what_it_said(nodes):
    nodes.set(k8smaster={"days": 5, "renewal_fails": True}, k8smaster2={"days": 300})
    with pytest.raises(RuntimeError, match=r"(?s)the certificates' renew on k8smaster failed \(1\):.*etcd said no"):
        CertificateExpiryProvider().create(props())


def test_a_renewal_that_outlives_its_wait_and_the_steps_beyond_it_fails_by_name(nodes, monkeypatch):
    monkeypatch.setattr(certificate_expiry, "RENEWAL_BEYOND_ITS_WAIT_SECONDS", 0.5)
    nodes.set(k8smaster={"days": 5, "renewal_takes": 0.2}, k8smaster2={"days": 5, "renewal_takes": 3})
    with pytest.raises(RuntimeError, match=r"the certificates' renew on k8smaster2 failed \(124\):\nno answer within 2 s"):
        CertificateExpiryProvider().create(props(renew_wait_seconds=1.5))


def diff_after_create(nodes, renew_before_days: int = 30, **now: dict) -> bool:
    provider = CertificateExpiryProvider()
    olds = provider.create(props(renew_before_days)).outs
    nodes.set(**now)
    return provider.diff("certificate-expiry", olds, props(renew_before_days)).changes


def test_a_cluster_as_recorded_and_not_due_plans_no_change(nodes):
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 200})
    assert diff_after_create(nodes, k8smaster={"days": 300}, k8smaster2={"days": 200}) is False


def test_certificates_renewed_behind_the_programs_back_plan_an_update_that_records_them(nodes):
    # `kubeadm upgrade apply` renews them, for one.
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 200})
    assert diff_after_create(nodes, k8smaster={"days": 364}, k8smaster2={"days": 200}) is True


def test_a_version_change_plans_a_check_after_the_upgrade_that_renews_them(nodes):
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 200})
    provider = CertificateExpiryProvider()
    olds = provider.create(props()).outs
    assert provider.diff("certificate-expiry", olds, {**props(), "version": "1.36.4"}).changes is True


def test_the_up_that_finds_the_window_reached_plans_the_renewal(nodes):
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 200})
    # The same certificates, now asked with a wider window.
    provider = CertificateExpiryProvider()
    olds = provider.create(props(renew_before_days=30)).outs
    assert provider.diff("certificate-expiry", olds, props(renew_before_days=30)).changes is False
    olds["expiries"]["k8smaster2"] = in_days(20)  # as recorded 180 days ago, and still so
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 20})
    assert provider.diff("certificate-expiry", olds, props(renew_before_days=30)).changes is True


def test_a_control_plane_that_does_not_answer_leaves_the_record_unless_it_is_due(nodes):
    nodes.set(k8smaster={"days": 300}, k8smaster2={"days": 200})
    provider = CertificateExpiryProvider()
    olds = provider.create(props()).outs
    nodes.set(k8smaster={"days": 300, "down": True}, k8smaster2={"days": 200})
    assert provider.diff("certificate-expiry", olds, props()).changes is False
    olds["expiries"]["k8smaster"] = in_days(20)
    assert provider.diff("certificate-expiry", olds, props()).changes is True


def test_the_earliest_expiry_counts_only_the_certificates_kubeadm_manages():
    report = "[check-expiration] Reading configuration from the cluster...\n" + json.dumps({"certificates": [
        {"name": "apiserver", "expirationDate": "2027-12-07T12:13:29Z", "missing": False},
        {"name": "front-proxy-client", "expirationDate": "2026-12-10T00:00:00Z", "externallyManaged": True},
        {"name": "admin.conf", "expirationDate": None, "missing": True},
        {"name": "etcd-peer", "expirationDate": "2027-12-07T12:13:28Z", "missing": False},
    ]})
    assert stamp(earliest_expiry(report)) == "2027-12-07T12:13:28Z"
    with pytest.raises(ValueError, match="no certificate it manages"):
        earliest_expiry(json.dumps({"certificates": [{"name": "admin.conf", "missing": True}]}))


def test_every_control_plane_is_checked_after_it_is_up_and_the_kubeconfig_is_read_again_after_a_renewal(ssh_keys):
    from tests.conftest import with_keys
    from tests.program import HIGHLY_AVAILABLE, load_stack_config
    from tests.unit.test_pipeline import stage_of

    config = with_keys(load_stack_config("dev"), ssh_keys)
    slow = {**config["kubernetes"], "controlPlaneTimeoutSeconds": 900}
    run = run_program({**config, **HIGHLY_AVAILABLE, "kubernetes": slow})
    assert run.error is None, run.error
    (check,) = [r for r in run.registrations if r.type == DYNAMIC and r.name.endswith("-certificate-expiry")]
    assert [node["name"] for node in check.inputs["nodes"]] == ["k8smaster", "k8smaster2", "k8smaster3"]
    assert check.inputs["renew_before_days"] == 30 and check.inputs["version"] == "1.36.3"
    assert check.inputs["renew_wait_seconds"] == 900
    for name in ("k8smaster2", "k8smaster3"):
        assert stage_of(run, name, "etcd-member").urn in check.dependencies, name
        assert stage_of(run, name, "uncordon").urn in check.dependencies, name
    assert stage_of(run, "k8smaster", "uncordon").urn in check.dependencies
    kubeconfig = run.by_name("k8s-kubeconfig")
    assert check.urn in kubeconfig.dependencies
    assert kubeconfig.inputs["triggers"] == [FAKE_CERTIFICATES_EXPIRE]
    assert run.resolve(run.exports["certificatesExpire"]) == (FAKE_CERTIFICATES_EXPIRE, False)
    for node in check.inputs["nodes"]:
        assert "readonly RENEW=0" in node["check"] and "readonly RENEW=1" in node["renew"], node["name"]
        assert f"readonly NODE_NAME={node['name']}" in node["check"]


def test_the_module_imports_cleanly_for_the_provider_process():
    result = subprocess.run(
        [sys.executable, "-c", "import providers.certificate_expiry as m; print(m.CertificateExpiryProvider.__name__)"],
        capture_output=True, text=True, cwd=PROJECT_DIR, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "CertificateExpiryProvider"
