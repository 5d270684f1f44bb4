// Package echo is the server half of the data plane benchmarks' request/response loops: it
// writes back every byte it reads on a connection. It makes and owns no connection itself,
// and reads no clock: the clients time the round trips. It imports nothing of the project.
package echo
