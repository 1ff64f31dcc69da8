//go:build kubevirt_v1_5

// KubeVirt v1.5 (read at v1.5.3): ConverterContext.Architecture is an arch.Converter.
package main

import (
	"runtime"

	v1 "kubevirt.io/api/core/v1"

	cmdv1 "kubevirt.io/kubevirt/pkg/handler-launcher-com/cmd/v1"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/api"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter/arch"
)

func convert(vmi *v1.VirtualMachineInstance) (*api.Domain, error) {
	domain := &api.Domain{}
	c := &converter.ConverterContext{
		Architecture:         arch.NewConverter(runtime.GOARCH),
		VirtualMachine:       vmi,
		AllowEmulation:       true,
		EphemeraldiskCreator: ephemeralDisks(),
		SMBios:               &cmdv1.SMBios{},
		DisksInfo:            disksInfo(vmi),
	}
	return domain, converter.Convert_v1_VirtualMachineInstance_To_api_Domain(vmi, domain, c)
}
