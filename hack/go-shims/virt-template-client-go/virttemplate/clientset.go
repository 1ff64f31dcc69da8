// Package virttemplate stands in for kubevirt.io/virt-template-client-go/virttemplate (see
// ../../README.md): it refuses to make a client, so an informer for templates cannot start.
package virttemplate

import (
	"errors"

	"k8s.io/client-go/rest"
)

type TemplateV1beta1Interface interface {
	RESTClient() rest.Interface
}

type Clientset struct{}

func (*Clientset) TemplateV1beta1() TemplateV1beta1Interface { return nil }

func NewForConfig(*rest.Config) (*Clientset, error) {
	return nil, errors.New("slirp-conformance: the virt-template client is a build stand-in (template gate off)")
}
