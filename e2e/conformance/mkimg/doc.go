// Command mkimg writes a container image as an OCI image layout tarball that `ctr images
// import` loads, from local files only: no registry, no Docker, no base image.
//
//	mkimg -name registry.k8s.io/e2e-test-images/agnhost:2.66.1 -o agnhost.tar \
//	      -entrypoint /agnhost -cmd pause -rootfs DIR [SRC:/DST[:MODE] ...] [ln=TARGET:/PATH ...]
//
// The image has one uncompressed layer: the tree under -rootfs (regular files, directories and
// symbolic links, with their permission bits), then each SRC:/DST file and ln= symbolic link,
// then /etc/passwd and /etc/group when neither source gave them, and the empty directories
// every runtime expects (/etc, /tmp, /proc, /sys, /dev). Owners are root and every time stamp
// is the epoch, so the same inputs give the same digests: a rebuilt image that did not change
// is the same image to containerd.
//
// The tarball holds the OCI layout (oci-layout, index.json, blobs/sha256/...); the index's one
// manifest carries the annotations io.containerd.image.name (the full -name, which ctr uses
// as the image name) and org.opencontainers.image.ref.name (the tag).
//
// It imports only the standard library. The layer is streamed through a temporary file, so
// memory does not grow with the image (the conformance agnhost image is about 200 MB).
package main
