package proxier

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
)

// Reporter returns the function the tracker calls for bad input from the API (and the
// reconciler for per-service problems): one log line and one Warning event on the object,
// never an error that stops a sync. recorder may be nil (no events, e.g. in tests).
func Reporter(ctx context.Context, recorder events.EventRecorder) func(kind, namespace, name, reason, message string) {
	logger := klog.FromContext(ctx)
	return func(kind, namespace, name, reason, message string) {
		logger.Info("Skipping what cannot be programmed", "kind", kind,
			"object", klog.KRef(namespace, name), "reason", reason, "message", message)
		if recorder == nil {
			return
		}
		apiVersion := "v1"
		if kind == "EndpointSlice" {
			apiVersion = "discovery.k8s.io/v1"
		}
		ref := &v1.ObjectReference{Kind: kind, APIVersion: apiVersion, Namespace: namespace, Name: name}
		recorder.Eventf(ref, nil, v1.EventTypeWarning, reason, "SyncProxyRules", "%s", message)
	}
}
