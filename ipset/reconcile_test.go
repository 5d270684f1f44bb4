package ipset

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestComputeEntryChanges(t *testing.T) {
	for _, tc := range []struct {
		name             string
		have, want       []Entry
		wantAdd, wantDel []string
	}{
		{name: "empty"},
		{
			name:    "from nothing",
			want:    []Entry{eIPPort("100.100.0.11", "tcp", 80), eIPPort("100.100.0.10", "tcp", 80)},
			wantAdd: []string{"100.100.0.10,tcp:80", "100.100.0.11,tcp:80"},
		},
		{
			name:    "to nothing",
			have:    []Entry{ePort(30080)},
			wantDel: []string{"30080"},
		},
		{
			name:    "difference only",
			have:    []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.10", "udp", 53)},
			want:    []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.10", "tcp", 53)},
			wantAdd: []string{"100.100.0.10,tcp:53"},
			wantDel: []string{"100.100.0.10,udp:53"},
		},
		{
			name: "duplicates and non-canonical forms compare equal",
			have: []Entry{eNet("10.0.0.0/8"), eIP("100.100.0.1")},
			want: []Entry{eNet("10.9.9.9/8"), eNet("10.0.0.0/8"), eIP("::ffff:100.100.0.1")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			add, del := computeEntryChanges(tc.have, tc.want)
			if diff := cmp.Diff(tc.wantAdd, nilIfEmpty(entryStrings(add))); diff != "" {
				t.Errorf("add (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantDel, nilIfEmpty(entryStrings(del))); diff != "" {
				t.Errorf("del (-want +got):\n%s", diff)
			}
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// keepWatcher wraps an Interface and checks, after every call, that the entries in
// keep are in their sets: Reconcile must never let an entry that stays leave its set.
type keepWatcher struct {
	Interface
	t    *testing.T
	keep map[string][]Entry
}

func (w *keepWatcher) check(op string) {
	w.t.Helper()
	for name, es := range w.keep {
		got, err := w.ListEntries(context.Background(), name)
		if err != nil {
			w.t.Errorf("after %s: list %s: %v", op, name, err)
			continue
		}
		have := map[string]bool{}
		for _, e := range got {
			have[e.String()] = true
		}
		for _, e := range es {
			if !have[e.String()] {
				w.t.Errorf("after %s: %s left set %s", op, e, name)
			}
		}
	}
}

func (w *keepWatcher) AddEntries(ctx context.Context, n string, es []Entry) error {
	defer w.check("add " + n)
	return w.Interface.AddEntries(ctx, n, es)
}

func (w *keepWatcher) DelEntries(ctx context.Context, n string, es []Entry) error {
	defer w.check("del " + n)
	return w.Interface.DelEntries(ctx, n, es)
}

func (w *keepWatcher) Swap(ctx context.Context, a, b string) error {
	defer w.check("swap " + a + " " + b)
	return w.Interface.Swap(ctx, a, b)
}

func (w *keepWatcher) FlushSet(ctx context.Context, n string) error {
	defer w.check("flush " + n)
	return w.Interface.FlushSet(ctx, n)
}

// reconcileScenario runs Reconcile and DestroyStale through a sequence of desired
// states on ifc (empty at the start) and checks the results and the final state after
// each. ref makes a set referenced by a kernel component.
func reconcileScenario(t *testing.T, ifc Interface, ref func(name string, on bool)) {
	ctx := context.Background()
	cip := Set{Name: "KPT-CLUSTER-IP", Type: HashIPPort}
	np := Set{Name: "KPT-NODE-PORT-TCP", Type: BitmapPort}
	lb := Set{Name: "KPT-LB-SRC", Type: HashIPPortNet}
	own := Ownership{Prefix: "KPT-"}

	// Someone else's set, which nothing here may touch.
	foreign := Set{Name: "OTHER-SET", Type: HashIP}
	mustOK(t, ifc.EnsureSet(ctx, foreign))
	mustOK(t, ifc.AddEntries(ctx, foreign.Name, []Entry{eIP("192.0.2.99")}))

	steps := []struct {
		name    string
		desired []SetState
		opts    ReconcileOptions
		refs    []string // referenced by "iptables" during this step
		wantRes ReconcileResult
		wantErr error
		// wantStale: names DestroyStale destroys; wantStaleErr its error
		wantStale    []string
		wantStaleErr error
		want         map[string][]string
	}{{
		name: "create and fill",
		desired: []SetState{
			{Set: cip, Entries: []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.11", "udp", 53)}},
			{Set: np, Entries: []Entry{ePort(30080)}},
			{Set: lb, Entries: []Entry{eIPPortNet("198.51.100.7", "tcp", 80, "203.0.113.0/24")}},
		},
		wantRes: ReconcileResult{Added: 4},
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10,tcp:80", "100.100.0.11,udp:53"},
			"KPT-NODE-PORT-TCP": {"30080"},
			"KPT-LB-SRC":        {"198.51.100.7,tcp:80,203.0.113.0/24"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}, {
		name: "nothing changed: nothing written",
		desired: []SetState{
			{Set: cip, Entries: []Entry{eIPPort("100.100.0.11", "udp", 53), eIPPort("100.100.0.10", "tcp", 80)}},
			{Set: np, Entries: []Entry{ePort(30080)}},
			{Set: lb, Entries: []Entry{eIPPortNet("198.51.100.7", "tcp", 80, "203.0.113.5/24")}},
		},
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10,tcp:80", "100.100.0.11,udp:53"},
			"KPT-NODE-PORT-TCP": {"30080"},
			"KPT-LB-SRC":        {"198.51.100.7,tcp:80,203.0.113.0/24"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}, {
		name: "differences in place; a set no longer desired is stale",
		desired: []SetState{
			{Set: cip, Entries: []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.12", "tcp", 443)}},
			{Set: np, Entries: []Entry{ePort(30080), ePort(30081)}},
		},
		wantRes:   ReconcileResult{Added: 2, Deleted: 1},
		wantStale: []string{"KPT-LB-SRC"},
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10,tcp:80", "100.100.0.12,tcp:443"},
			"KPT-NODE-PORT-TCP": {"30080", "30081"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}, {
		name: "past the threshold: rebuilt and swapped, even while referenced",
		desired: []SetState{
			{Set: cip, Entries: []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.20", "tcp", 80), eIPPort("100.100.0.21", "tcp", 80), eIPPort("100.100.0.22", "tcp", 80)}},
			{Set: np, Entries: []Entry{ePort(30080), ePort(30081)}},
		},
		opts:    ReconcileOptions{RebuildThreshold: 2},
		refs:    []string{cip.Name},
		wantRes: ReconcileResult{Rebuilt: 1},
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10,tcp:80", "100.100.0.20,tcp:80", "100.100.0.21,tcp:80", "100.100.0.22,tcp:80"},
			"KPT-NODE-PORT-TCP": {"30080", "30081"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}, {
		name: "other options (maxelem, range): rebuilt and swapped",
		desired: []SetState{
			{Set: Set{Name: cip.Name, Type: HashIPPort, MaxElem: 4096}, Entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}},
			{Set: Set{Name: np.Name, Type: BitmapPort, PortRange: PortRange{From: 30000, To: 32767}}, Entries: []Entry{ePort(30080)}},
		},
		refs:    []string{cip.Name, np.Name},
		wantRes: ReconcileResult{Rebuilt: 2},
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10,tcp:80"},
			"KPT-NODE-PORT-TCP": {"30080"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}, {
		name: "another type while referenced: refused, left as it is; the other set goes on",
		desired: []SetState{
			{Set: Set{Name: cip.Name, Type: HashIP}, Entries: []Entry{eIP("100.100.0.10")}},
			{Set: Set{Name: np.Name, Type: BitmapPort, PortRange: PortRange{From: 30000, To: 32767}}, Entries: []Entry{ePort(30090)}},
		},
		refs:    []string{cip.Name},
		wantRes: ReconcileResult{Added: 1, Deleted: 1},
		wantErr: ErrInUse,
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10,tcp:80"},
			"KPT-NODE-PORT-TCP": {"30090"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}, {
		name: "another type, not referenced: destroyed and created again",
		desired: []SetState{
			{Set: Set{Name: cip.Name, Type: HashIP}, Entries: []Entry{eIP("100.100.0.10")}},
		},
		wantRes:   ReconcileResult{Replaced: 1, Added: 1},
		wantStale: []string{"KPT-NODE-PORT-TCP"},
		want: map[string][]string{
			"KPT-CLUSTER-IP": {"100.100.0.10"},
			"OTHER-SET":      {"192.0.2.99"},
		},
	}, {
		name: "an invalid entry fails its set before any write; a referenced stale set stays",
		desired: []SetState{
			{Set: Set{Name: cip.Name, Type: HashIP}, Entries: []Entry{eIP("100.100.0.11"), eIPPort("100.100.0.12", "tcp", 80)}},
			{Set: np, Entries: []Entry{ePort(30080)}},
		},
		wantRes: ReconcileResult{Added: 1},
		wantErr: ErrInvalidEntry,
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10"},
			"KPT-NODE-PORT-TCP": {"30080"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}, {
		name:         "stale sets: a referenced one is kept and reported",
		desired:      []SetState{{Set: np, Entries: []Entry{ePort(30080)}}},
		refs:         []string{cip.Name},
		wantStaleErr: ErrInUse,
		want: map[string][]string{
			"KPT-CLUSTER-IP":    {"100.100.0.10"},
			"KPT-NODE-PORT-TCP": {"30080"},
			"OTHER-SET":         {"192.0.2.99"},
		},
	}}
	var prevRefs []string
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			for _, n := range prevRefs {
				ref(n, false)
			}
			for _, n := range st.refs {
				ref(n, true)
			}
			prevRefs = st.refs
			// Entries in a set before and desired after must stay in it throughout.
			// (A set whose type changes has no such entries: their forms differ.)
			keep := map[string][]Entry{}
			for _, d := range st.desired {
				if have, err := ifc.ListEntries(ctx, d.Set.Name); err == nil {
					keep[d.Set.Name] = intersect(have, d.Entries)
				}
			}
			w := &keepWatcher{Interface: ifc, t: t, keep: keep}
			res, err := Reconcile(ctx, w, st.desired, st.opts)
			if !errors.Is(err, st.wantErr) || (st.wantErr == nil) != (err == nil) {
				t.Errorf("Reconcile error = %v, want %v", err, st.wantErr)
			}
			if diff := cmp.Diff(st.wantRes, res); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			stale, err := DestroyStale(ctx, ifc, st.desired, own)
			if !errors.Is(err, st.wantStaleErr) || (st.wantStaleErr == nil) != (err == nil) {
				t.Errorf("DestroyStale error = %v, want %v", err, st.wantStaleErr)
			}
			if diff := cmp.Diff(st.wantStale, stale); diff != "" {
				t.Errorf("destroyed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(st.want, readState(t, ifc)); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
		})
	}
}

func intersect(a, b []Entry) []Entry {
	in := map[string]bool{}
	for _, e := range b {
		in[e.String()] = true
	}
	var out []Entry
	for _, e := range a {
		if in[e.String()] {
			out = append(out, e)
		}
	}
	return out
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReconcileFake(t *testing.T) {
	f := NewFake()
	reconcileScenario(t, f, f.SetReferenced)
}

func TestOwnership(t *testing.T) {
	own := Ownership{Names: []string{"KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER-SOURCE-CIDR"}}
	for name, want := range map[string]bool{
		"KUBE-CLUSTER-IP":                          true,
		"KUBE-CLUSTER-IP-tmp":                      true,
		TempName("KUBE-LOAD-BALANCER-SOURCE-CIDR"): true,
		"KUBE-ROUTER-SET":                          false,
		"KUBE-CLUSTER-IPX":                         false,
		"":                                         false,
	} {
		if got := own.Owns(name); got != want {
			t.Errorf("Owns(%q) = %v, want %v", name, got, want)
		}
	}
	if !(Ownership{Prefix: "KPT-"}).Owns("KPT-X") || (Ownership{}).Owns("KPT-X") {
		t.Error("prefix ownership")
	}
	got := computeStaleSets([]string{"KUBE-CLUSTER-IP", "KUBE-CLUSTER-IP-tmp", "OTHER", "KUBE-LOAD-BALANCER-SOURCE-CIDR"},
		[]SetState{{Set: Set{Name: "KUBE-LOAD-BALANCER-SOURCE-CIDR"}}}, own)
	if diff := cmp.Diff([]string{"KUBE-CLUSTER-IP", "KUBE-CLUSTER-IP-tmp"}, got); diff != "" {
		t.Errorf("stale (-want +got):\n%s", diff)
	}
}
