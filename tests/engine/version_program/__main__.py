"""A stack with only the Kubernetes version resource: its check must see the recorded version."""

import pulumi

from providers.kubernetes_version import KubernetesVersion

config = pulumi.Config()
version = KubernetesVersion(
    "kubernetes-version",
    version=config.require("version"),
    control_plane="k8smaster",
    workers=["k8sworker1", "k8sworker2"],
    concurrency=1,
    config_key="kvm-kubeadm:kubernetes.version",
)
pulumi.export("plan", version.plan)
