package rotation

import (
	"errors"
)

// Outcome says what a Rotate call did; callers branch on it.
type Outcome int

const (
	// Rotated: this call rotated the key.
	Rotated Outcome = iota + 1
	// AlreadyRotated: the key was rotated before; nothing written.
	AlreadyRotated
	// InProgress: another caller owns the rotation and has not finished;
	// nothing written. Recover completes it if that caller died.
	InProgress
	// NoBackup: no unused backup key was left; nothing written.
	NoBackup
	// NotFound: no such key and no record of its rotation; nothing written.
	NotFound
	// Held: the key was refused for its owner's personal budget (LiteLLM),
	// which another key of the pool shares, or the pool's user-budget
	// setting is hold: rotating would burn backups without helping. Only the
	// user is recorded on the key (FieldBudgetUser); it stays in the pool.
	Held
)

func (o Outcome) String() string {
	switch o {
	case Rotated:
		return "rotated"
	case AlreadyRotated:
		return "already_rotated"
	case InProgress:
		return "in_progress"
	case NoBackup:
		return "no_backup"
	case NotFound:
		return "not_found"
	case Held:
		return "held"
	}
	return "unknown"
}

// Result is the outcome of a rotation with the ids the caller may report.
type Result struct {
	Outcome    Outcome
	RotationID string
	OldKeyID   string
	// NewKeyID is the key that replaces OldKeyID: on Rotated and
	// AlreadyRotated, and on InProgress once the rotation under way has put
	// it in the pool (the caller can swap to it at once); "" otherwise.
	NewKeyID string
}

// Step names one step of the saga, in order.
type Step int

// Steps lists every step in the order they run.
var Steps = []Step{StepClaim, StepInsertKey, StepMarkBackup, StepActivateKey, StepMoveBindings, StepArchive, StepDeleteOld, StepHistory, StepDone}

const (
	StepClaim Step = iota + 1
	StepInsertKey
	StepMarkBackup
	StepActivateKey
	StepMoveBindings
	StepArchive
	StepDeleteOld
	StepHistory
	StepDone
)

func (s Step) String() string {
	if s < StepClaim || s > StepDone {
		return "?"
	}
	return [...]string{"?", "claim", "insert_key", "mark_backup", "activate_key", "move_bindings", "archive", "delete_old", "history", "done"}[s]
}

// ErrKeyCollision means the new key's id already holds a different key (or
// the backup's secret was live under that id before): the backup is skipped
// and the rotation moves to another one (docs/design.md "Rotation guarantees").
var ErrKeyCollision = errors.New("new key id already holds a different key")

// ErrBackupVanished means a claimed backup disappeared before its key was
// inserted; the claim is dropped so the key can be rotated again.
var ErrBackupVanished = errors.New("claimed backup vanished before use")

// errBackupTaken means a claimed backup was marked used for another key
// outside the journal (by the proxy's own rotator) before its key went live.
var errBackupTaken = errors.New("claimed backup was used by someone else")
