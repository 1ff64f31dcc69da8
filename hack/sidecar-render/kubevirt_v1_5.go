//go:build kubevirt_v1_5

// KubeVirt v1.5 (read at v1.5.3): ConverterContext.Architecture is an arch.Converter.
package main

import (
	"runtime"

	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter/arch"
)

func architecture() arch.Converter {
	return arch.NewConverter(runtime.GOARCH)
}
