// Package apifuzz turns fuzzer input into a sequence of Service and EndpointSlice events, for
// the fuzz targets over the endpoints tracker and the backends' renderers.
//
// An input is either a JSON document (the seed corpus: real and malformed objects, see
// Seeds) or any other byte string, which Decode reads as a program: each byte picks the next
// event, field or value from small dictionaries of good and bad values (ports 0 and 70000,
// addresses that do not parse, unknown protocols, duplicate names, slices of services that do
// not exist, 2,000 endpoints in a slice, ...), so that a mutated input changes the objects'
// structure instead of breaking the JSON syntax.
//
// It imports only the API types and must not import kproxy's packages: the fuzz targets live with the code
// they exercise (endpoints.FuzzTracker, iptables/proxy.FuzzRenderRestore,
// ipvs.FuzzPlanApply) and import it from their tests only. Decode bounds a program (24
// events, 4 ports, 8 endpoints per slice, one rare slice of BulkEndpoints), so that an input
// runs in milliseconds.
package apifuzz
