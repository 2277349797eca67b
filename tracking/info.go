package tracking

// Info is one client's tracking state, for CLIENT TRACKINGINFO, CLIENT
// GETREDIR and CLIENT LIST (flags t, R and B; redir=).
type Info struct {
	On             bool
	BCAST          bool
	OptIn          bool
	OptOut         bool
	Caching        bool // CLIENT CACHING was given and not yet consumed
	NoLoop         bool
	BrokenRedirect bool // a message could not reach the REDIRECT target
	// Redirect is what CLIENT GETREDIR replies: -1 when tracking is off, 0
	// without REDIRECT, else the target's id.
	Redirect int64
	// Prefixes are the BCAST prefixes in byte order, "" for BCAST alone.
	// Shared: do not modify.
	Prefixes []string
}

// Info returns client id's tracking state.
func (t *Table) Info(id int64) Info {
	c := t.client(id)
	if c == nil {
		return Info{Redirect: -1}
	}
	m := c.mode.Load()
	if m == nil {
		return Info{Redirect: -1}
	}
	return Info{
		On:             true,
		BCAST:          m.bcast,
		OptIn:          m.optin,
		OptOut:         m.optout,
		Caching:        c.caching.Load(),
		NoLoop:         m.noloop,
		BrokenRedirect: c.broken.Load(),
		Redirect:       m.redirect,
		Prefixes:       m.prefixes,
	}
}

// Flags is the flags entry of CLIENT TRACKINGINFO, in Redis's order.
func (i Info) Flags() []string {
	if !i.On {
		return []string{"off"}
	}
	f := []string{"on"}
	if i.BCAST {
		f = append(f, "bcast")
	}
	if i.OptIn {
		f = append(f, "optin")
		if i.Caching {
			f = append(f, "caching-yes")
		}
	}
	if i.OptOut {
		f = append(f, "optout")
		if i.Caching {
			f = append(f, "caching-no")
		}
	}
	if i.NoLoop {
		f = append(f, "noloop")
	}
	if i.BrokenRedirect {
		f = append(f, "broken_redirect")
	}
	return f
}

// Stats are the table's counts under their INFO names.
type Stats struct {
	Clients  int64 // tracking_clients: clients with tracking on
	Keys     int64 // tracking_total_keys: keys remembered
	Items    int64 // tracking_total_items: (key, client) pairs, departed clients' included until swept
	Prefixes int64 // tracking_total_prefixes: distinct BCAST prefixes
}

// Stats returns the current counts.
func (t *Table) Stats() Stats {
	st := Stats{Clients: t.ntracking.Load(), Keys: t.nkeys.Load()}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Items += int64(s.items)
		s.mu.Unlock()
	}
	if ix := t.bcast.Load(); ix != nil {
		st.Prefixes = int64(len(ix.clients))
	}
	return st
}
