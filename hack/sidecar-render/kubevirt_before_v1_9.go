//go:build kubevirt_v1_1 || kubevirt_v1_5

// Up to v1.8 the converter context is converter.ConverterContext (its Architecture's type is in
// kubevirt_v1_1.go / kubevirt_v1_5.go), the sidecar's binding name is hard-coded "slirp"
// (cmd/sidecars/network-slirp-binding/domain/domain.go, SlirpPluginName: an interface bound to any
// other name is refused) and disk info is handler-launcher-com's DiskInfo.
package main

import (
	v1 "kubevirt.io/api/core/v1"

	srv "kubevirt.io/kubevirt/cmd/sidecars/network-slirp-binding/server"
	cmdv1 "kubevirt.io/kubevirt/pkg/handler-launcher-com/cmd/v1"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/api"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter"
)

func convert(vmi *v1.VirtualMachineInstance) (*api.Domain, error) {
	domain := &api.Domain{}
	c := &converter.ConverterContext{
		Architecture:         architecture(),
		VirtualMachine:       vmi,
		AllowEmulation:       true,
		EphemeraldiskCreator: ephemeralDisks(),
		SMBios:               &cmdv1.SMBios{},
		DisksInfo:            disksInfo(vmi),
	}
	return domain, converter.Convert_v1_VirtualMachineInstance_To_api_Domain(vmi, domain, c)
}

// The sidecar of these releases reads no binding name (its main.go has no NETWORK_BINDING_PLUGIN_NAME):
// whatever name the binding is registered under, it serves only an interface bound to "slirp".
func newHookServer(searchDomains []string, _ string) (hookServer, error) {
	return srv.V1alpha2Server{SearchDomains: searchDomains}, nil
}

func disksInfo(vmi *v1.VirtualMachineInstance) map[string]*cmdv1.DiskInfo {
	info := map[string]*cmdv1.DiskInfo{}
	for _, name := range containerDisks(vmi) {
		info[name] = &cmdv1.DiskInfo{Format: "qcow2", VirtualSize: containerDiskSize}
	}
	return info
}
