"""KubeVirt's images built on this machine from ``kubevirt.io/kubevirt`` at a release tag
(``--images-from-source``), and the release manifests that name them.

No container registry is reachable here, so every image virt-operator deploys is built from its
source, under exactly the name the release's manifests give it (``quay.io/kubevirt/<component>:<tag>``):

* ``gomodules``: the Go programs, from the module at the tag (a wrapper module that takes its
  replace block; never copied), in two builds: the pure-Go ones and the two that need cgo
  (virt-handler; virt-launcher with ``-tags libvirt_dlopen``, which loads the image's libvirt);
  modules the proxy refuses are met by build stand-ins (``hack/go-shims``);
* ``debian``: the OS packages KubeVirt's own build puts into virt-handler and virt-launcher
  (its ``rpm/BUILD.bazel`` package sets, from CentOS Stream) taken from Debian trixie instead
  (libvirt 11.3, QEMU 10.0), and the ``virtqemud`` stand-in Debian needs
  (``hack/kubevirt-images/virtqemud``);
* ``images``: each image's layers and config as KubeVirt's ``cmd/*/BUILD.bazel`` lays them out,
  written as docker-archives that ``kind load image-archive`` reads;
* ``manifests``: ``kubevirt-operator.yaml`` and ``kubevirt-cr.yaml`` from KubeVirt's own
  ``tools/resource-generator`` and ``tools/manifest-templator`` over the tag's ``manifests/``;
* ``containerdisk``: the Fedora-like reference guest of the release as
  ``fedora-with-test-tooling-container-disk:<tag>``, bootable from its disk; and the busybox
  image of the suite's peer and client pods.

Everything is cached by version and recipe under ``<cache>/kubevirt-images``, written atomically;
each part keeps a build log that a failure names.
"""
