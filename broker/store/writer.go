package store

import (
	"errors"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"

	"github.com/cockroachdb/pebble/v2"
)

// errClosed is the error of a write handed over after Close.
var errClosed = errors.New("store closed")

// writer commits the writes handed to it (submit) in batches, one synced commit at a
// time: what arrives while a commit syncs goes into the next batch, so many sessions
// queueing at once share one fsync, and no caller holds a lock of its own while it
// waits (Commit.Wait). Writes land in the order submit was called.
type writer struct {
	db *pebble.DB

	mu     lockorder.Mutex // held only to add to the batch or take it: never during I/O
	batch  *pebble.Batch
	cur    *Commit // the Commit of batch
	closed bool

	kick chan struct{} // one pending wake-up for run
	done chan struct{} // closed when run returns
}

func startWriter(db *pebble.DB) *writer {
	w := &writer{db: db, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// submit adds fn's writes to the next batch and returns that batch's Commit. fn runs
// with the writer locked: it only adds to b. An error from fn fails the whole batch
// (b may be half-written).
func (w *writer) submit(fn func(b *pebble.Batch) error) *Commit {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return Failed(errClosed)
	}
	if w.batch == nil {
		w.batch, w.cur = w.db.NewBatch(), &Commit{done: make(chan struct{})}
	}
	if err := fn(w.batch); err != nil && w.cur.err == nil {
		w.cur.err = err
	}
	select {
	case w.kick <- struct{}{}:
	default: // a wake-up is pending already: it takes this batch too
	}
	return w.cur
}

// run commits batches until close, then the last one.
func (w *writer) run() {
	defer close(w.done)
	for range w.kick {
		w.mu.Lock()
		b, c := w.batch, w.cur
		w.batch, w.cur = nil, nil
		w.mu.Unlock()
		if b == nil {
			continue
		}
		if c.err == nil {
			c.err = b.Commit(pebble.Sync)
		}
		c.err = errors.Join(c.err, b.Close())
		close(c.done)
	}
}

// flush waits for everything submitted so far.
func (w *writer) flush() error {
	return w.submit(func(*pebble.Batch) error { return nil }).Wait()
}

// close commits what was submitted and stops the writer; later submits fail.
func (w *writer) close() error {
	err := w.flush()
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.kick)
	}
	w.mu.Unlock()
	<-w.done
	if errors.Is(err, errClosed) {
		return nil
	}
	return err
}

// Failed returns a Commit that failed with err.
func Failed(err error) *Commit {
	c := &Commit{done: make(chan struct{}), err: err}
	close(c.done)
	return c
}
