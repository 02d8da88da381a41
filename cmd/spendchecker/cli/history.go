package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/statuspage"
)

// history prints the rotations since --since, every pool's, as it reads
// them: one record at a time is held, however long the window.
func (a *app) history(ctx context.Context, out io.Writer) error {
	since, _ := config.ParseSince(a.cfg.Since, time.Now())
	var w historyWriter = &historyText{tw: tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)}
	if a.cfg.Output == "json" {
		w = &historyJSON{out: out}
	}
	w.start()
	for _, r := range a.chk.Rotators() {
		name := r.Pool().Name
		err := history.NewStore(a.db.Collection(r.Pool().HistoryCollection)).EachSince(ctx, since, func(h history.Record) error {
			h.Pool = name
			return w.record(h)
		})
		if err != nil {
			// What was written stands; the exit says it is not all.
			w.end()
			return partial("pool %s: %w", name, err)
		}
	}
	return w.end()
}

// historyWriter writes the records of `history` as they are read.
type historyWriter interface {
	start()
	record(history.Record) error
	end() error
}

// historyBlock is how many rows are aligned together: the table is
// flushed (its columns sized) once per block, so its buffer stays bounded.
const historyBlock = 1000

type historyText struct {
	tw   *tabwriter.Writer
	rows int
}

func (t *historyText) start() {
	fmt.Fprintln(t.tw, "ROTATED AT\tPOOL\tKEY\tAPI KEY\tSPEND\tTHRESHOLD\tREASON\tNEW KEY\tINSTANCE\tEPOCH")
}

func (t *historyText) record(h history.Record) error {
	// A balance rotation shows what remained, and no threshold
	// (docs/providers.md).
	thr := "-"
	if h.Remaining == nil && !math.IsNaN(h.Threshold) && !math.IsInf(h.Threshold, 0) {
		thr = fmt.Sprintf("$%.2f", h.Threshold)
	}
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", h.RotatedAt.Format(time.RFC3339), h.Pool,
		h.KeyID, h.APIKeyMasked, statuspage.RecordReading(h), thr, h.RotationReason, h.NewKeyID, h.Instance, h.LeaseEpoch)
	if t.rows++; t.rows%historyBlock == 0 {
		return t.tw.Flush()
	}
	return nil
}

func (t *historyText) end() error { return t.tw.Flush() }

// historyJSON writes what json.MarshalIndent(records, "", "  ") would,
// one record at a time ([] when there is none, never null).
type historyJSON struct {
	out io.Writer
	n   int
}

func (j *historyJSON) start() { _, _ = io.WriteString(j.out, "[") }

func (j *historyJSON) record(h history.Record) error {
	b, err := json.MarshalIndent(h, "  ", "  ")
	if err != nil {
		return partial("cannot write the output as JSON: %w", err)
	}
	sep := ",\n  "
	if j.n++; j.n == 1 {
		sep = "\n  "
	}
	if _, err := io.WriteString(j.out, sep); err != nil {
		return err
	}
	_, err = j.out.Write(b)
	return err
}

func (j *historyJSON) end() error {
	closing := "]\n"
	if j.n > 0 {
		closing = "\n]\n"
	}
	_, err := io.WriteString(j.out, closing)
	return err
}
