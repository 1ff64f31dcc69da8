// Package core stands in for kubevirt.io/virt-template-api/core (see ../../README.md).
package core

const (
	GroupName            = "template.kubevirt.io"
	SingularResourceName = "virtualmachinetemplate"
	PluralResourceName   = "virtualmachinetemplates"
)
