package proxier

import (
	"context"
	"fmt"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// objectStore is the store under the Reflector of Services or of EndpointSlices. It hands
// each object to the tracker as it arrives and keeps, of each, only its resourceVersion: the
// tracker holds what it needs in its own form, so an informer's cache of the objects (about
// 1 KB per Service and 2 KB per EndpointSlice after Trim: 27 MiB at 10,000 services) would be
// a second copy that nothing reads. A relist's Replace hands every listed object again and
// deletes from the tracker the objects the list no longer holds, as an informer's handlers
// would be told. The one Reflector goroutine calls its methods; HasSynced may be called from
// any goroutine.
type objectStore[T metav1.Object] struct {
	kind string
	// newObject returns an empty object of the kind, for the stubs.
	newObject func() T
	storeHandlers[T]

	versions map[cache.ObjectName]string
	synced   atomic.Bool
}

// storeHandlers are what an objectStore calls: the tracker's methods for one kind, and the
// sync request.
type storeHandlers[T metav1.Object] struct {
	// add receives an object the store did not have, update a changed one with a stub of
	// the version the store had (namespace, name and resourceVersion).
	add    func(T)
	update func(old, cur T)
	// remove receives a deleted object, or a stub of one a relist no longer holds.
	remove func(T)
	// changed is called after every event and relist (the proxier's sync request).
	changed func()
}

func newObjectStore[T metav1.Object](kind string, newObject func() T, h storeHandlers[T]) *objectStore[T] {
	return &objectStore[T]{kind: kind, newObject: newObject, storeHandlers: h, versions: map[cache.ObjectName]string{}}
}

// stub is an object with only the name and resourceVersion: what the store remembers.
func (s *objectStore[T]) stub(name cache.ObjectName, resourceVersion string) T {
	obj := s.newObject()
	obj.SetNamespace(name.Namespace)
	obj.SetName(name.Name)
	obj.SetResourceVersion(resourceVersion)
	return obj
}

func (s *objectStore[T]) object(obj any) (T, error) {
	t, ok := obj.(T)
	if !ok {
		return t, fmt.Errorf("%s store: got a %T", s.kind, obj)
	}
	return t, nil
}

// put hands cur to the tracker and remembers its version in versions.
func (s *objectStore[T]) put(versions map[cache.ObjectName]string, cur T) {
	name := cache.MetaObjectToName(cur)
	rv, had := s.versions[name]
	versions[name] = cur.GetResourceVersion()
	if had {
		s.update(s.stub(name, rv), cur)
	} else {
		s.add(cur)
	}
}

// Add is a watch's ADDED event.
func (s *objectStore[T]) Add(obj any) error { return s.Update(obj) }

// Update is a watch's MODIFIED event.
func (s *objectStore[T]) Update(obj any) error {
	cur, err := s.object(obj)
	if err != nil {
		return err
	}
	s.put(s.versions, cur)
	s.changed()
	return nil
}

// Delete is a watch's DELETED event.
func (s *objectStore[T]) Delete(obj any) error {
	cur, err := s.object(obj)
	if err != nil {
		return err
	}
	delete(s.versions, cache.MetaObjectToName(cur))
	s.remove(cur)
	s.changed()
	return nil
}

// Replace is a list: the first, and every relist after a watch that could not resume.
func (s *objectStore[T]) Replace(list []any, _ string) error {
	next := make(map[cache.ObjectName]string, len(list))
	for _, obj := range list {
		cur, err := s.object(obj)
		if err != nil {
			return err
		}
		s.put(next, cur)
	}
	for name, rv := range s.versions {
		if _, ok := next[name]; !ok {
			s.remove(s.stub(name, rv))
		}
	}
	s.versions = next
	s.synced.Store(true)
	s.changed()
	return nil
}

// Resync does nothing: the tracker compares what it is handed with what it holds, so handing
// it the same objects again would change nothing.
func (s *objectStore[T]) Resync() error { return nil }

// Transformer is applied by the Reflector to the objects it holds while a watch-list streams
// the initial state, before Replace: they are held in the compact form.
func (s *objectStore[T]) Transformer() cache.TransformFunc { return Trim }

// HasSynced reports whether the first list has been handed to the tracker.
func (s *objectStore[T]) HasSynced() bool { return s.synced.Load() }

// runReflector lists and watches one kind into store until ctx ends. list and watch are the
// typed client's, with the Feed's label selector applied by the caller; client tells the
// Reflector whether the client can stream the initial list (a fake clientset cannot).
func runReflector(ctx context.Context, name string, expected runtime.Object, client any, store cache.ReflectorStore,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) {
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn}, client)
	r := cache.NewReflectorWithOptions(lw, expected, store, cache.ReflectorOptions{Name: name})
	go r.RunWithContext(ctx)
}
