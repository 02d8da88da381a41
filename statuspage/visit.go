package statuspage

// Visitor receives a Visit as it reads: the lease (and whether the store
// was found unreachable), each pool before its keys, each key, each pool
// once read whole, and the end. A writer that streams (`status`) and a
// summary that counts (the page) share the one read this way.
type Visitor interface {
	Lease(s *Snapshot)
	PoolStart(p *PoolView)
	Key(p *PoolView, k KeyView)
	PoolEnd(p *PoolView)
	End(s *Snapshot)
}

// NopVisitor does nothing; embed it to implement only some of Visitor.
type NopVisitor struct{}

func (NopVisitor) Lease(*Snapshot)        {}
func (NopVisitor) PoolStart(*PoolView)    {}
func (NopVisitor) Key(*PoolView, KeyView) {}
func (NopVisitor) PoolEnd(*PoolView)      {}
func (NopVisitor) End(*Snapshot)          {}
