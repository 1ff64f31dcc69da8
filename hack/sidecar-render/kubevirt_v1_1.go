//go:build kubevirt_v1_1

// KubeVirt v1.1: ConverterContext.Architecture is a string.
package main

import "runtime"

func architecture() string {
	return runtime.GOARCH
}
