package porticotest

import (
	"io"
	"net/http/httptest"
)

// ReadFromRecorder is an httptest.ResponseRecorder that counts the
// ReadFrom calls reaching it: a test of a wrapping writer checks with it
// that a body copied in with io.Copy still reaches the server's ReadFrom
// (sendfile) when the wrapper has nothing to do with it.
type ReadFromRecorder struct {
	*httptest.ResponseRecorder
	ReadFromCalls int
}

// NewReadFromRecorder returns a ReadFromRecorder with an empty recorder.
func NewReadFromRecorder() *ReadFromRecorder {
	return &ReadFromRecorder{ResponseRecorder: httptest.NewRecorder()}
}

// ReadFrom counts the call and copies src into the recorder.
func (r *ReadFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.ReadFromCalls++
	return io.Copy(r.ResponseRecorder, src)
}
