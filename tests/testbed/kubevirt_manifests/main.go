// Command kubevirt-manifests prints, as one JSON List, the CustomResourceDefinitions that
// KubeVirt's virt-operator installs at the KubeVirt version this program is built against.
//
// The list is virt-operator's own: install.GenerateCurrentInstallStrategy
// (pkg/virt-operator/resource/generate/install/strategy.go, which calls every
// components.New*Crd of pkg/virt-operator/resource/generate/components/crds.go). JSON, as
// virt-operator sends them to the API server: KubeVirt's tools/util.MarshallObject YAML is made
// for its templated manifests and strips quotes that CRD descriptions need (`"2-3"'` -> `"2-3"`).
// The KubeVirt CR comes from KubeVirt's tools/resource-generator (--type=kv-cr), built next to this.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	virtv1 "kubevirt.io/api/core/v1"

	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/install"
	operatorutil "kubevirt.io/kubevirt/pkg/virt-operator/util"
)

func main() {
	namespace := flag.String("namespace", "kubevirt", "namespace KubeVirt is installed in")
	flag.Parse()

	kv := &virtv1.KubeVirt{ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: *namespace}}
	config := operatorutil.GetTargetConfigFromKV(kv)
	strategy, err := install.GenerateCurrentInstallStrategy(config, "", *namespace)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-manifests: generating the install strategy: %v\n", err)
		os.Exit(1)
	}
	// The KubeVirt CRD itself is not in the strategy: the release manifest (virt-operator's
	// deployment) creates it, from components.NewKubeVirtCrd via tools/resource-generator --type=kv.
	kubevirtCrd, err := components.NewKubeVirtCrd()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-manifests: generating the KubeVirt CRD: %v\n", err)
		os.Exit(1)
	}
	crds := append([]*extv1.CustomResourceDefinition{kubevirtCrd}, strategy.CRDs()...)
	list := map[string]interface{}{"apiVersion": "v1", "kind": "List", "items": crds}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", " ")
	if err := encoder.Encode(list); err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-manifests: encoding the CRDs: %v\n", err)
		os.Exit(1)
	}
}
