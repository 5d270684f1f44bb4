package echo

import "io"

// Conn writes back whatever it reads from rw, read by read through a buffer of bufSize
// bytes, until a read or a write fails (the client went away).
func Conn(rw io.ReadWriter, bufSize int) {
	buf := make([]byte, bufSize)
	for {
		n, err := rw.Read(buf)
		if n > 0 {
			if _, werr := rw.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
