"""kvm-kubeadm: a kubeadm cluster on one libvirt/KVM host."""

import pulumi

from components import addons, config
from components.cluster import Cluster

settings = config.load()
cluster = Cluster("k8s", settings)

pulumi.export("nodes", {node.name: str(node.ip) for node in settings.nodes})
pulumi.export("controlPlaneIp", cluster.leader.node.ip)
pulumi.export("masterIp", cluster.leader.node.ip)  # the tutorial's name, kept as an alias
pulumi.export("workerIps", [worker.node.ip for worker in cluster.workers])
if cluster.kubeconfig is not None:
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("joinCommand", cluster.join_command)
if cluster.certificates is not None:
    pulumi.export("certificatesExpire", cluster.certificates.earliest)
if cluster.etcd_snapshot is not None:
    pulumi.export("etcdSnapshot", cluster.etcd_snapshot.path)
if cluster.headlamp_token is not None:
    pulumi.export("headlampToken", cluster.headlamp_token)
    pulumi.export("headlampUrl", addons.headlamp_url(settings))
    if (port_forward := addons.headlamp_port_forward(settings)) is not None:
        pulumi.export("headlampCommand", port_forward)
if cluster.prepared_image is not None:
    image = cluster.prepared_image
    pulumi.export("preparedImage", {"volume": image.volume, "sizeBytes": image.size_bytes, "built": image.built})
