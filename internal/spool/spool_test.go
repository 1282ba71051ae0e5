package spool

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"testing/synctest"
)

func TestMemoryThenFile(t *testing.T) {
	for _, size := range []int{0, 10, 1000, 5000, 100000} {
		dir := t.TempDir()
		b := New(Options{Memory: 4096, Dir: dir})
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.IntN(256))
		}
		if _, err := b.ReadFrom(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if spilled := b.File() != nil; spilled != (size > 4096) {
			t.Errorf("size %d: spilled=%v", size, spilled)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("size %d: temporary file left visible: %v", size, entries)
		}
		got, err := io.ReadAll(b)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("size %d: read %d bytes, %v", size, len(got), err)
		}
		if mem, ok := b.Bytes(); ok != (size <= 4096) || (ok && !bytes.Equal(mem, data)) {
			t.Errorf("size %d: Bytes ok=%v", size, ok)
		}
		b.Close()
	}
}

func TestMaxSize(t *testing.T) {
	b := New(Options{Memory: 10, MaxSize: 100})
	defer b.Close()
	if _, err := b.ReadFrom(bytes.NewReader(make([]byte, 101))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFrom 101 bytes with MaxSize 100: %v", err)
	}
}

// The blocking tests run in a synctest bubble: synctest.Wait returns once
// every goroutine of the bubble is durably blocked (on the buffer's
// sync.Cond here), so "the reader is waiting" is a fact, not a guess.

func TestConcurrentReaderSeesDataAsWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{Memory: 16, Dir: t.TempDir()})
		defer b.Close()
		var got []byte
		var err error
		done := false
		go func() {
			got, err = io.ReadAll(b)
			done = true
		}()
		b.Write([]byte("abcd"))
		synctest.Wait() // the reader took "abcd" and waits for more
		if done || string(got) != "" {
			t.Fatalf("ReadAll ended (%v) or returned before CloseWrite", done)
		}
		b.Write([]byte("0123456789abcdefXYZ")) // crosses into the file
		synctest.Wait()
		if done {
			t.Fatal("ReadAll ended before CloseWrite")
		}
		b.CloseWrite(nil)
		synctest.Wait()
		if !done || err != nil || string(got) != "abcd0123456789abcdefXYZ" {
			t.Errorf("reader got %q, %v (done %v)", got, err, done)
		}
	})
}

// TestReadWaitsForWrite: a Read with nothing to read blocks until a Write,
// and returns what it wrote.
func TestReadWaitsForWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{})
		defer b.Close()
		var n int
		var err error
		done := false
		buf := make([]byte, 10)
		go func() {
			n, err = b.Read(buf)
			done = true
		}()
		synctest.Wait()
		if done {
			t.Fatalf("Read of an empty buffer returned %d, %v", n, err)
		}
		b.Write([]byte("hi"))
		synctest.Wait()
		if !done || err != nil || string(buf[:n]) != "hi" {
			t.Errorf("Read = %q, %v (done %v)", buf[:n], err, done)
		}
	})
}

func TestWriterErrorReachesReader(t *testing.T) {
	b := New(Options{})
	defer b.Close()
	boom := errors.New("boom")
	b.Write([]byte("x"))
	b.CloseWrite(boom)
	data, err := io.ReadAll(b)
	if string(data) != "x" || !errors.Is(err, boom) {
		t.Errorf("got %q, %v", data, err)
	}
}

func TestMaxLagBlocksWriterUntilRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{Memory: 1 << 20, MaxLag: 10})
		defer b.Close()
		b.Write(make([]byte, 11))
		wrote := false
		go func() {
			b.Write([]byte("more"))
			wrote = true
		}()
		synctest.Wait()
		if wrote {
			t.Fatal("writer did not wait for the lagging reader")
		}
		io.ReadFull(b, make([]byte, 11))
		synctest.Wait()
		if !wrote {
			t.Fatal("writer still blocked after the reader caught up")
		}
	})
}

func TestCloseWakesReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{})
		var err error
		done := false
		go func() {
			_, err = b.Read(make([]byte, 1))
			done = true
		}()
		synctest.Wait()
		if done {
			t.Fatalf("Read of an empty buffer returned: %v", err)
		}
		b.Close()
		synctest.Wait()
		if !done || !errors.Is(err, ErrClosed) {
			t.Errorf("Read after Close: %v (done %v)", err, done)
		}
	})
}

// TestCloseWriteWakesReader: CloseWrite ends a waiting Read with io.EOF.
func TestCloseWriteWakesReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{})
		defer b.Close()
		var err error
		done := false
		go func() {
			_, err = b.Read(make([]byte, 1))
			done = true
		}()
		synctest.Wait()
		if done {
			t.Fatalf("Read of an empty buffer returned: %v", err)
		}
		b.CloseWrite(nil)
		synctest.Wait()
		if !done || err != io.EOF {
			t.Errorf("Read after CloseWrite: %v (done %v), want io.EOF", err, done)
		}
	})
}
