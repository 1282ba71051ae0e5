package spool

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"
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

func TestConcurrentReaderSeesDataAsWritten(t *testing.T) {
	b := New(Options{Memory: 16})
	defer b.Close()
	got := make(chan []byte)
	go func() {
		data, _ := io.ReadAll(b)
		got <- data
	}()
	b.Write([]byte("abcd"))
	time.Sleep(10 * time.Millisecond)      // let the reader catch up and wait
	b.Write([]byte("0123456789abcdefXYZ")) // crosses into the file
	b.CloseWrite(nil)
	if data := <-got; string(data) != "abcd0123456789abcdefXYZ" {
		t.Errorf("reader got %q", data)
	}
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
	b := New(Options{Memory: 1 << 20, MaxLag: 10})
	defer b.Close()
	b.Write(make([]byte, 11))
	wrote := make(chan struct{})
	go func() {
		b.Write([]byte("more"))
		close(wrote)
	}()
	select {
	case <-wrote:
		t.Fatal("writer did not wait for the lagging reader")
	case <-time.After(50 * time.Millisecond):
	}
	io.ReadFull(b, make([]byte, 11))
	select {
	case <-wrote:
	case <-time.After(2 * time.Second):
		t.Fatal("writer still blocked after the reader caught up")
	}
}

func TestCloseWakesReader(t *testing.T) {
	b := New(Options{})
	done := make(chan error)
	go func() {
		_, err := b.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}
