// Command kubevirt-manifests prints, as YAML documents, the CustomResourceDefinitions that
// KubeVirt's virt-operator installs at the KubeVirt version this program is built against.
//
// The list is virt-operator's own: install.GenerateCurrentInstallStrategy
// (pkg/virt-operator/resource/generate/install/strategy.go, which calls every
// components.New*Crd of pkg/virt-operator/resource/generate/components/crds.go), marshalled by
// KubeVirt's tools/util.MarshallObject as KubeVirt's release manifests are. The KubeVirt CR comes
// from KubeVirt's tools/resource-generator (--type=kv-cr), built next to this program.
package main

import (
	"flag"
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	virtv1 "kubevirt.io/api/core/v1"

	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/install"
	operatorutil "kubevirt.io/kubevirt/pkg/virt-operator/util"
	"kubevirt.io/kubevirt/tools/util"
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
	for _, crd := range strategy.CRDs() {
		if err := util.MarshallObject(crd, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "kubevirt-manifests: marshalling %s: %v\n", crd.Name, err)
			os.Exit(1)
		}
	}
}
