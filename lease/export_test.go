package lease

import "time"

// SetStoreTimeout sets how long each store call of l may take, for tests on
// a fake clock: the bound New derives from the timings is real time, and a
// busy machine must not fail a round that the fake clock says took no time.
func SetStoreTimeout(l *Lease, d time.Duration) { l.storeTimeout = d }
