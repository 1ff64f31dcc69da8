package main

import (
	v1 "kubevirt.io/api/core/v1"

	ephemeraldisk "kubevirt.io/kubevirt/pkg/ephemeral-disk"
)

// ephemeralDisks: where virt-launcher keeps container disks' overlays (a path in the domain XML
// only; nothing is created).
func ephemeralDisks() ephemeraldisk.EphemeralDiskCreatorInterface {
	return ephemeraldisk.NewEphemeralDiskCreator("/var/run/kubevirt-ephemeral-disks/disk-data")
}

// containerDiskSize stands in for what virt-handler learns by inspecting a container disk image
// (format qcow2, its size): the converter needs disk info for every containerDisk volume, and it
// has no bearing on the network.
const containerDiskSize = 1 << 30

func containerDisks(vmi *v1.VirtualMachineInstance) []string {
	var names []string
	for _, vol := range vmi.Spec.Volumes {
		if vol.ContainerDisk != nil {
			names = append(names, vol.Name)
		}
	}
	return names
}
