package healthcheck

import (
	"encoding/json"
	"net/http"
	"strconv"

	"k8s.io/apimachinery/pkg/types"
)

// Status is the JSON body a health-check node port serves, as upstream.
type Status struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// handler answers every request on one service's health-check port.
type handler struct {
	name   types.NamespacedName
	server *Server
}

func (h handler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	var st Status
	st.Service.Namespace, st.Service.Name = h.name.Namespace, h.name.Name
	st.LocalEndpoints = h.server.localEndpoints(h.name)
	st.ServiceProxyHealthy = h.server.proxyHealthy()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Upstream sets the weight on every answer, 0 included.
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(st.LocalEndpoints))
	if st.LocalEndpoints > 0 && st.ServiceProxyHealthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(st)
}
