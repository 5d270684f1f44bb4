package echo

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// chunked returns its input in reads of at most n bytes, then io.EOF.
type chunked struct {
	in  *bytes.Reader
	n   int
	out bytes.Buffer
}

func (c *chunked) Read(p []byte) (int, error)  { return c.in.Read(p[:min(len(p), c.n)]) }
func (c *chunked) Write(p []byte) (int, error) { return c.out.Write(p) }

func TestConnEchoesUntilEOF(t *testing.T) {
	for _, tc := range []struct {
		name           string
		in             string
		chunk, bufSize int
	}{
		{name: "1-byte requests", in: "abc", chunk: 1, bufSize: 64},
		{name: "reads larger than the buffer", in: "0123456789", chunk: 10, bufSize: 4},
		{name: "nothing", in: "", chunk: 1, bufSize: 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &chunked{in: bytes.NewReader([]byte(tc.in)), n: tc.chunk}
			Conn(c, tc.bufSize)
			if d := cmp.Diff(tc.in, c.out.String()); d != "" {
				t.Errorf("echoed (-want +got):\n%s", d)
			}
		})
	}
}

// failingWriter fails every write: Conn returns after the first.
type failingWriter struct{ reads int }

func (f *failingWriter) Read(p []byte) (int, error) { f.reads++; p[0] = 'x'; return 1, nil }
func (f *failingWriter) Write([]byte) (int, error)  { return 0, io.ErrClosedPipe }

func TestConnStopsOnWriteError(t *testing.T) {
	f := &failingWriter{}
	Conn(f, 8)
	if f.reads != 1 {
		t.Errorf("%d reads after a failed write, want 1", f.reads)
	}
}
