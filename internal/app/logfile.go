package app

import (
	"fmt"
	"os"
	"sync"
)

// LogFile is a log file that can be reopened at the same path, for
// logrotate's postrotate (nginx -s reopen, SIGUSR1): after the file was
// renamed, Reopen opens the path again (O_APPEND|O_CREATE) and swaps the
// files atomically; the old one closes once the writes in flight on it
// are done. Writes are appends: lines written whole by one Write, from
// several goroutines or processes, never overwrite each other.
type LogFile struct {
	path string
	mu   sync.RWMutex // read: a Write in flight; write: the swap
	f    *os.File
}

// OpenLogFile opens path for appending, creating it (mode 0644) if needed.
func OpenLogFile(path string) (*LogFile, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &LogFile{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	return f, nil
}

// Path is the file's path.
func (l *LogFile) Path() string { return l.path }

func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.f.Write(p)
}

// Reopen opens the path again and writes go to the new file from then on.
// On an error the old file stays in use.
func (l *LogFile) Reopen() error {
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock() // waits for the writes in flight
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

// Close closes the file; later writes fail.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
