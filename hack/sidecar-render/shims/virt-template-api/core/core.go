// Package core is a build shim for kubevirt.io/virt-template-api/core (see shims/README.md).
package core

const (
	GroupName            = "template.kubevirt.io"
	SingularResourceName = "virtualmachinetemplate"
	PluralResourceName   = "virtualmachinetemplates"
)
