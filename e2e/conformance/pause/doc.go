// Command pause is the pod sandbox's process in the conformance tier's image
// registry.k8s.io/pause (built here: no registry is reachable). Like the upstream pause, it
// sleeps until SIGINT or SIGTERM and reaps the zombies it inherits as a PID namespace's init.
package main
