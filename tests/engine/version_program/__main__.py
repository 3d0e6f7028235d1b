"""A stack with only the Kubernetes version resource: its check must see the recorded version (and,
with `controlPlanes` and `endpoint` set, the recorded control planes and endpoint)."""

import json

import pulumi

from providers.kubernetes_version import KubernetesVersion

config = pulumi.Config()
control_planes = config.get("controlPlanes")
version = KubernetesVersion(
    "kubernetes-version",
    version=config.require("version"),
    control_plane="k8smaster",
    workers=["k8sworker1", "k8sworker2"],
    concurrency=1,
    config_key="kvm-kubeadm:kubernetes.version",
    control_planes=json.loads(control_planes) if control_planes else None,
    endpoint=config.get("endpoint"),
)
pulumi.export("plan", version.plan)
