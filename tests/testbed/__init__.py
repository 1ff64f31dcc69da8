"""The cluster test bed: real Kubernetes and KubeVirt parts built from Go modules (hack/testbed.sh)."""
