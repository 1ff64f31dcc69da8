//go:build kubevirt_v1_9

// KubeVirt v1.9: the converter context moved to converter/types; the sidecar reads its name
// from NETWORK_BINDING_PLUGIN_NAME (cmd/sidecars/network-slirp-binding/main.go), default "slirp".
package main

import (
	"runtime"

	v1 "kubevirt.io/api/core/v1"

	srv "kubevirt.io/kubevirt/cmd/sidecars/network-slirp-binding/server"
	cmdv1 "kubevirt.io/kubevirt/pkg/handler-launcher-com/cmd/v1"
	"kubevirt.io/kubevirt/pkg/os/disk"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/api"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter/arch"
	convertertypes "kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter/types"
)

func convert(vmi *v1.VirtualMachineInstance) (*api.Domain, error) {
	domain := &api.Domain{}
	c := &convertertypes.ConverterContext{
		Architecture:              arch.NewConverter(runtime.GOARCH),
		VirtualMachine:            vmi,
		AllowEmulation:            true,
		HypervisorDeviceAvailable: false,
		EphemeraldiskCreator:      ephemeralDisks(),
		SMBios:                    &cmdv1.SMBios{},
		DisksInfo:                 disksInfo(vmi),
	}
	return domain, converter.Convert_v1_VirtualMachineInstance_To_api_Domain(vmi, domain, c)
}

func newHookServer(searchDomains []string, bindingName string) (hookServer, error) {
	return srv.V1alpha2Server{SearchDomains: searchDomains, BindingPluginName: bindingName}, nil
}

func disksInfo(vmi *v1.VirtualMachineInstance) map[string]*disk.DiskInfo {
	info := map[string]*disk.DiskInfo{}
	for _, name := range containerDisks(vmi) {
		info[name] = &disk.DiskInfo{Format: "qcow2", VirtualSize: containerDiskSize}
	}
	return info
}
