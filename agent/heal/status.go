package heal

import (
	"encoding/json"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"
)

// StatusHandler serves the loop's snapshot: a plain-text table, or JSON with
// ?format=json. It reads only published copies, so it answers even while
// the loop is busy.
func StatusHandler(l *Loop) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		snap := l.Snapshot()
		switch r.URL.Query().Get("format") {
		case "json":
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(snap) // a write error means the client went away
		case "", "text":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			writeTable(w, snap, l.now())
		default:
			http.Error(w, "format must be text or json", http.StatusBadRequest)
		}
	})
}

func writeTable(w http.ResponseWriter, snap []Health, now time.Time) {
	// tabwriter buffers everything; a failed write surfaces at Flush, and a
	// failed Flush only means the client went away.
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "VOLUME\tNQN\tCONTROLLER\tDEVICE\tSTATE\tSINCE\tLAST CAUSE\tLAST HEAL")
	for _, h := range snap {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			h.VolumeID, h.NQN, dash(h.Controller), dash(h.Device), h.State,
			ago(h.Since, now), dash(h.LastCause), ago(h.LastHeal, now))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Truncate(time.Second).String() + " ago"
}
