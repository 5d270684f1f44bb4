package ipvs

import "errors"

// Errors returned by the writers (the kernel ones and the fakes), wrapped with the operation
// and the object. Check them with errors.Is.
var (
	// ErrNotFound: the virtual server, real server or link does not exist (ESRCH/ENOENT).
	ErrNotFound = errors.New("not found")
	// ErrExists: the virtual server, real server or address already exists (EEXIST).
	ErrExists = errors.New("already exists")
	// ErrInvalid: the kernel rejects the object (EINVAL): an unknown protocol or scheduler,
	// a port 0, an address of the wrong family, a real server while lo is down.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnknownScheduler: ValidateScheduler's error.
	ErrUnknownScheduler = errors.New("unknown IPVS scheduler")
)
