"""A kind node image built on this machine for a pinned Kubernetes version (``--images-from-source``).

No registry is reachable here, so every part is built from its source: a Debian base with
systemd, Debian's containerd and runc, kind's node contract read from the kind module at build
time (``contract``), the Kubernetes binaries and control-plane images from their Go modules
(``parts``, ``component_images``), preloaded into the node's containerd under the names kubeadm
asks for (``preload``), assembled and loaded into Docker (``node_image``). The CNI the suite's
clusters use instead of kindnetd (not served by the module proxy) is in ``cni``.
"""
