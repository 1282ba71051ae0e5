// Package spool buffers a byte stream in memory up to a bound and in an
// unlinked temporary file past it, so that a fast producer (a client's
// upload, a worker's response) is never held by a slow consumer, and memory
// stays bounded whatever the size.
//
// A Buffer has one writer and one reader, which may run at the same time:
// Read blocks until data is written or the writer calls CloseWrite. This is
// nginx's proxy buffering (proxy_buffers, proxy_max_temp_file_size) in one
// small type.
package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Options bound a Buffer. The zero value keeps up to 1 MiB in memory, spills
// to os.TempDir() and never blocks the writer.
type Options struct {
	// Memory is how many bytes are kept in memory before the data moves to a
	// temporary file. Zero means 1 MiB; negative means never spill.
	Memory int64
	// Dir is where temporary files are created. Empty means os.TempDir().
	// The file is unlinked at once, so nothing is left behind after a crash.
	Dir string
	// MaxLag bounds how far the writer may run ahead of the reader, in bytes.
	// A Write past it waits for the reader (or Close). Zero means no bound.
	MaxLag int64
	// MaxSize bounds the total bytes written; a Write past it fails with
	// ErrTooLarge. Zero means no bound.
	MaxSize int64
}

// ErrTooLarge is returned by Write and ReadFrom past Options.MaxSize.
var ErrTooLarge = errors.New("spool: data larger than the limit")

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("spool: buffer closed")

const defaultMemory = 1 << 20

// Buffer is a one-writer, one-reader byte pipe backed by memory then a file.
type Buffer struct {
	opt Options

	mu      sync.Mutex
	cond    sync.Cond
	mem     []byte
	file    *os.File
	written int64
	read    int64
	eof     bool  // CloseWrite was called
	werr    error // error the reader gets after the data; nil means io.EOF
	closed  bool
}

// New returns an empty Buffer.
func New(opt Options) *Buffer {
	if opt.Memory == 0 {
		opt.Memory = defaultMemory
	}
	b := &Buffer{opt: opt}
	b.cond.L = &b.mu
	return b
}

// Write appends p. It spills to a temporary file when the memory bound is
// passed and waits while the reader lags more than MaxLag behind.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, ErrClosed
	}
	if b.eof {
		return 0, errors.New("spool: write after CloseWrite")
	}
	if b.opt.MaxSize > 0 && b.written+int64(len(p)) > b.opt.MaxSize {
		return 0, ErrTooLarge
	}
	for b.opt.MaxLag > 0 && b.written-b.read > b.opt.MaxLag && !b.closed {
		b.cond.Wait()
	}
	if b.closed {
		return 0, ErrClosed
	}
	if b.file == nil && (b.opt.Memory < 0 || int64(len(b.mem)+len(p)) <= b.opt.Memory) {
		b.mem = append(b.mem, p...)
		b.written += int64(len(p))
		b.cond.Broadcast()
		return len(p), nil
	}
	if b.file == nil {
		if err := b.spillLocked(); err != nil {
			return 0, err
		}
	}
	// Writing the file under the lock keeps the code obviously right (the
	// reader only reads below b.written); the writes hit the page cache.
	n, err := b.file.WriteAt(p, b.written)
	b.written += int64(n)
	b.cond.Broadcast()
	if err != nil {
		return n, fmt.Errorf("spool: writing temporary file: %w", err)
	}
	return n, nil
}

func (b *Buffer) spillLocked() error {
	f, err := os.CreateTemp(b.opt.Dir, "portico-spool-*")
	if err != nil {
		return fmt.Errorf("spool: creating temporary file: %w", err)
	}
	// Unlink at once: the open descriptor keeps the data; a crash leaves nothing.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return fmt.Errorf("spool: unlinking temporary file: %w", err)
	}
	if _, err := f.WriteAt(b.mem, 0); err != nil {
		f.Close()
		return fmt.Errorf("spool: writing temporary file: %w", err)
	}
	b.file = f
	b.mem = nil
	return nil
}

// ReadFrom writes everything r yields into the buffer, then calls
// CloseWrite(nil). It fails with ErrTooLarge past MaxSize. It does not
// close the write side on error.
func (b *Buffer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := b.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			b.CloseWrite(nil)
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// CloseWrite ends the data: once the reader has everything, Read returns
// err, or io.EOF when err is nil.
func (b *Buffer) CloseWrite(err error) {
	b.mu.Lock()
	b.eof = true
	b.werr = err
	b.cond.Broadcast()
	b.mu.Unlock()
}

// Read reads the next bytes, waiting for the writer when it has caught up.
func (b *Buffer) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.read >= b.written && !b.eof && !b.closed {
		b.cond.Wait()
	}
	if b.closed {
		return 0, ErrClosed
	}
	if b.read >= b.written {
		if b.werr != nil {
			return 0, b.werr
		}
		return 0, io.EOF
	}
	avail := b.written - b.read
	if int64(len(p)) > avail {
		p = p[:avail]
	}
	var n int
	var err error
	if b.file == nil {
		n = copy(p, b.mem[b.read:])
	} else {
		n, err = b.file.ReadAt(p, b.read)
		if err == io.EOF && n > 0 {
			err = nil
		}
	}
	b.read += int64(n)
	b.cond.Broadcast()
	if err != nil {
		return n, fmt.Errorf("spool: reading temporary file: %w", err)
	}
	return n, nil
}

// Len reports the bytes written so far.
func (b *Buffer) Len() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.written
}

// Bytes returns the whole content when it is still in memory and the write
// side is closed; ok is false otherwise.
func (b *Buffer) Bytes() (data []byte, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.file != nil || !b.eof {
		return nil, false
	}
	return b.mem, true
}

// File returns the temporary file holding the content, or nil while it is
// in memory. The caller must not close it.
func (b *Buffer) File() *os.File {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.file
}

// Close releases the temporary file and wakes a waiting reader or writer,
// which then get ErrClosed.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.mem = nil
	b.cond.Broadcast()
	if b.file != nil {
		return b.file.Close()
	}
	return nil
}
