// Command kubevirt-manifests prints, as one JSON List, the CustomResourceDefinitions that
// KubeVirt's virt-operator installs at the KubeVirt version this program is built against
// (--what=crds), virt-api's webhook configurations pointed at a URL (--what=webhooks), or
// virt-api's Service and the subresources.kubevirt.io APIService in front of it (--what=aggregation).
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

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	virtv1 "kubevirt.io/api/core/v1"

	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/install"
	operatorutil "kubevirt.io/kubevirt/pkg/virt-operator/util"
)

func main() {
	namespace := flag.String("namespace", "kubevirt", "namespace KubeVirt is installed in")
	what := flag.String("what", "crds", "crds: every CRD virt-operator installs; webhooks: virt-api's webhook configurations; "+
		"aggregation: virt-api's Service and APIServices")
	virtAPIURL := flag.String("virt-api-url", "", "webhooks: https://host:port where virt-api serves (replaces the Service reference)")
	caFile := flag.String("ca-file", "", "webhooks, aggregation: PEM of the CA that signed virt-api's serving certificate")
	flag.Parse()

	var items []interface{}
	switch *what {
	case "crds":
		items = crds(*namespace)
	case "webhooks":
		items = webhooks(*namespace, *virtAPIURL, *caFile)
	case "aggregation":
		items = aggregation(*namespace, *caFile)
	default:
		fail("unknown --what=%s (crds | webhooks | aggregation)", *what)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", " ")
	if err := encoder.Encode(map[string]interface{}{"apiVersion": "v1", "kind": "List", "items": items}); err != nil {
		fail("encoding: %v", err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kubevirt-manifests: "+format+"\n", args...)
	os.Exit(1)
}

func crds(namespace string) []interface{} {
	kv := &virtv1.KubeVirt{ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: namespace}}
	config := operatorutil.GetTargetConfigFromKV(kv)
	strategy, err := install.GenerateCurrentInstallStrategy(config, "", namespace)
	if err != nil {
		fail("generating the install strategy: %v", err)
	}
	// The KubeVirt CRD itself is not in the strategy: the release manifest (virt-operator's
	// deployment) creates it, from components.NewKubeVirtCrd via tools/resource-generator --type=kv.
	kubevirtCrd, err := components.NewKubeVirtCrd()
	if err != nil {
		fail("generating the KubeVirt CRD: %v", err)
	}
	items := []interface{}{kubevirtCrd}
	for _, crd := range strategy.CRDs() {
		items = append(items, crd)
	}
	return items
}

// webhooks returns virt-api's webhook configurations as virt-operator creates them
// (components/webhooks.go), each pointed at a URL instead of the virt-api Service: the test bed
// runs virt-api as a local process, with no Service in front of it.
func webhooks(namespace, virtAPIURL, caFile string) []interface{} {
	if virtAPIURL == "" || caFile == "" {
		fail("--what=webhooks needs --virt-api-url and --ca-file")
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		fail("reading --ca-file: %v", err)
	}
	toURL := func(cc admissionregistrationv1.WebhookClientConfig) admissionregistrationv1.WebhookClientConfig {
		if cc.Service == nil || cc.Service.Path == nil {
			fail("a webhook of this KubeVirt version has no service path to map to a URL")
		}
		url := virtAPIURL + *cc.Service.Path
		return admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca}
	}
	mutating := components.NewVirtAPIMutatingWebhookConfiguration(namespace)
	for i := range mutating.Webhooks {
		mutating.Webhooks[i].ClientConfig = toURL(mutating.Webhooks[i].ClientConfig)
	}
	validating := components.NewVirtAPIValidatingWebhookConfiguration(namespace)
	for i := range validating.Webhooks {
		validating.Webhooks[i].ClientConfig = toURL(validating.Webhooks[i].ClientConfig)
	}
	return []interface{}{mutating, validating}
}

// aggregation returns virt-api's Service (components.NewApiServerService) and the
// subresources.kubevirt.io APIServices (components.NewVirtAPIAPIServices) as virt-operator creates
// them, with the CA bundle virt-operator would inject. The Service loses its pod selector: virt-api
// runs as a local process, not a pod, so the test bed writes the Service's EndpointSlice itself
// and the endpoint-slice controller must not empty it.
func aggregation(namespace, caFile string) []interface{} {
	if caFile == "" {
		fail("--what=aggregation needs --ca-file")
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		fail("reading --ca-file: %v", err)
	}
	service := components.NewApiServerService(namespace)
	service.Spec.Selector = nil
	items := []interface{}{service}
	for _, apiService := range components.NewVirtAPIAPIServices(namespace) {
		apiService.Spec.CABundle = ca
		items = append(items, apiService)
	}
	return items
}
