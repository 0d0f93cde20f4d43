// kstatus prints how Flux, kpt and other kstatus users judge a Kubernetes object read as JSON
// from stdin: its status (Current, InProgress, Failed, ...) on the first line, the message on
// the second. The e2e tests check ConPaaS' conditions with it.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	// Kubernetes' own JSON decoding: whole numbers become int64, as kstatus expects.
	data, err := io.ReadAll(os.Stdin)
	var object map[string]interface{}
	if err == nil {
		err = json.Unmarshal(data, &object)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "read the object:", err)
		os.Exit(2)
	}
	result, err := status.Compute(&unstructured.Unstructured{Object: object})
	if err != nil {
		fmt.Fprintln(os.Stderr, "compute the status:", err)
		os.Exit(2)
	}
	fmt.Printf("%s\n%s\n", result.Status, result.Message)
}
