package cli

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// POST /v1/rotate lets a proxy that does not link the rotator rotate a key
// through it (docs/proxy.md, "Running next to the proxy"). Every replica serves it,
// leader or not: the rotator is safe without the lease.

const (
	rotateBodyLimit = 4 << 10
	rotateTimeout   = 30 * time.Second
)

type rotateRequest struct {
	Pool   string `json:"pool"`
	KeyID  string `json:"keyId"`
	Reason string `json:"reason"`
	// BudgetUser is the LiteLLM user whose personal budget refused the key
	// (proxyrotate.Decision.BudgetUser): the key is held, not rotated, when
	// another key of the pool names the same user.
	BudgetUser string `json:"budgetUser,omitempty"`
}

type rotateResponse struct {
	Outcome    string `json:"outcome,omitempty"`
	Pool       string `json:"pool,omitempty"`
	KeyID      string `json:"keyId,omitempty"`
	RotationID string `json:"rotationId,omitempty"`
	NewKeyID   string `json:"newKeyId,omitempty"`
	Error      string `json:"error,omitempty"`
}

var reasonRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// rotateAPI answers POST /v1/rotate.
type rotateAPI struct {
	tokenSum [sha256.Size]byte // of the token; nil token: endpoint disabled
	enabled  bool
	dryRun   bool
	rotators map[string]*rotation.Rotator
	pools    []string
	db       *mongo.Database
	log      *slog.Logger
	// counted receives each rotation's outcome label for
	// spendchecker_rotations_total; nil: not counted.
	counted func(pool, outcome string)
	// notify receives an event for each rotation made on request; nil: none.
	notify func(notify.Event)

	// indexed: the rotators' indexes are known to exist; until then every
	// request first ensures them (docs/proxy.md, "Way 2").
	indexMu sync.Mutex
	indexed atomic.Bool

	mu      sync.Mutex
	flights map[string]*rotateFlight
}

// apiRotators is what the endpoint rotates with: each pool's rotator and
// their database.
type apiRotators struct {
	db   *mongo.Database
	list []*rotation.Rotator
}

// rotateFlight shares one Rotate call among the concurrent requests for a key.
type rotateFlight struct {
	done chan struct{}
	res  rotation.Result
	err  error
	// nonStringID: no key has the id as a string _id, but one has it as
	// another type (a number, an ObjectId), which the rotator cannot rotate.
	nonStringID bool
}

func newRotateAPI(token string, rotators apiRotators, dryRun bool, log *slog.Logger) *rotateAPI {
	api := &rotateAPI{enabled: token != "", dryRun: dryRun, rotators: map[string]*rotation.Rotator{},
		db: rotators.db, log: log, flights: map[string]*rotateFlight{}}
	api.tokenSum = sha256.Sum256([]byte(token))
	for _, r := range rotators.list {
		api.rotators[r.Pool().Name] = r
		api.pools = append(api.pools, r.Pool().Name)
	}
	sort.Strings(api.pools)
	return api
}

// rotateRoutes is the hook serveHTTP calls.
func (a *app) rotateRoutes(mux *http.ServeMux) {
	api := newRotateAPI(a.cfg.RotateToken, apiRotators{a.db, a.chk.Rotators()}, a.cfg.DryRun, a.log)
	api.counted = func(pool, outcome string) { a.met.rotations.WithLabelValues(pool, outcome).Inc() }
	api.notify = a.notifier.Notify
	mux.Handle("POST /v1/rotate", api)
}

func (api *rotateAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !api.enabled {
		writeRotate(w, http.StatusForbidden, rotateResponse{Error: "rotate endpoint disabled: start the daemon with --rotate-token-file or " + config.EnvRotateToken})
		return
	}
	if !api.authorized(r) {
		api.log.Warn("rotate request refused: bad or missing bearer token", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="spendchecker"`)
		writeRotate(w, http.StatusUnauthorized, rotateResponse{Error: "missing or wrong bearer token"})
		return
	}
	req, status, msg := api.decode(w, r)
	if status != 0 {
		writeRotate(w, status, rotateResponse{Error: msg})
		return
	}
	rot, ok := api.rotators[req.Pool]
	if !ok {
		writeRotate(w, http.StatusNotFound, rotateResponse{Error: fmt.Sprintf("unknown pool %q (this daemon serves: %s)", req.Pool, strings.Join(api.pools, ", "))})
		return
	}
	if api.dryRun {
		writeRotate(w, http.StatusServiceUnavailable, rotateResponse{Error: "dry run: this daemon writes nothing"})
		return
	}
	if err := api.ensureIndexes(r.Context()); err != nil {
		api.log.Warn("rotate request refused: the rotator's indexes are not in place", "pool", req.Pool, "key", req.KeyID, "err", secret.RedactMongoURI(err.Error()))
		w.Header().Set("Retry-After", "5")
		writeRotate(w, http.StatusServiceUnavailable, rotateResponse{Error: "store not ready (the rotator's indexes could not be ensured); retry later"})
		return
	}
	f, err := api.rotate(r.Context(), rot, req)
	res := f.res
	resp := rotateResponse{Pool: req.Pool, KeyID: req.KeyID, RotationID: res.RotationID, NewKeyID: res.NewKeyID}
	if err != nil && r.Context().Err() != nil {
		// The client hung up; the rotation carries on without it.
		api.log.Info("rotate request: client went away before the answer; the rotation continues", "pool", req.Pool, "key", req.KeyID, "remote", r.RemoteAddr)
		return
	}
	if err != nil {
		api.log.Warn("rotate request failed", "pool", req.Pool, "key", req.KeyID, "rotation", res.RotationID, "err", secret.RedactMongoURI(err.Error()))
		resp.Error = "rotation did not complete; retrying is safe, and recovery finishes it: " + secret.RedactMongoURI(err.Error())
		writeRotate(w, http.StatusInternalServerError, resp)
		return
	}
	if f.nonStringID {
		api.log.Warn("rotate request refused: the key's _id is not a string (a number, an ObjectId...), which the rotator cannot rotate", "pool", req.Pool, "key", req.KeyID)
		resp.Error = "key id is not a string id (its _id is a number, an ObjectId or another type); rotate it by hand"
		writeRotate(w, http.StatusUnprocessableEntity, resp)
		return
	}
	resp.Outcome = res.Outcome.String()
	api.log.Info("rotate request", "pool", req.Pool, "key", req.KeyID, "reason", req.Reason,
		"outcome", resp.Outcome, "rotation", res.RotationID, "new_key", res.NewKeyID, "remote", r.RemoteAddr)
	if res.Outcome == rotation.Rotated && api.notify != nil {
		api.notify(notify.RequestedRotationEvent(req.Pool, req.KeyID, res.NewKeyID, res.RotationID, req.Reason, "POST /v1/rotate", time.Now()))
	}
	writeRotate(w, outcomeStatus(res.Outcome), resp)
}

func outcomeStatus(o rotation.Outcome) int {
	switch o {
	case rotation.Rotated, rotation.AlreadyRotated:
		return http.StatusOK
	case rotation.InProgress:
		return http.StatusAccepted
	case rotation.NoBackup, rotation.Held:
		return http.StatusConflict
	case rotation.NotFound:
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// authorized compares digests of the tokens in constant time, so neither
// the token's bytes nor its length leak through timing.
func (api *rotateAPI) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], api.tokenSum[:]) == 1
}

func (api *rotateAPI) decode(w http.ResponseWriter, r *http.Request) (rotateRequest, int, string) {
	var req rotateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, rotateBodyLimit))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return req, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", rotateBodyLimit)
	case err != nil:
		return req, http.StatusBadRequest, `body must be one JSON object {"keyId": "...", "reason": "...", "pool": "..."}: ` + err.Error()
	case req.KeyID == "" || len(req.KeyID) > 256 || strings.ContainsAny(req.KeyID, "\x00"):
		return req, http.StatusBadRequest, "keyId must be a non-empty string of at most 256 bytes"
	case len(req.BudgetUser) > 256 || strings.ContainsAny(req.BudgetUser, "\x00"):
		return req, http.StatusBadRequest, "budgetUser must be a string of at most 256 bytes"
	case !reasonRE.MatchString(req.Reason):
		return req, http.StatusBadRequest, "reason must be 1-64 characters of a-z, 0-9, '_', '.' or '-' (such as unauthorized or budget_exceeded)"
	}
	if req.Pool == "" {
		if len(api.pools) != 1 {
			return req, http.StatusBadRequest, "pool is required: this daemon serves " + strings.Join(api.pools, ", ")
		}
		req.Pool = api.pools[0]
	}
	return req, 0, ""
}

// rotate runs one Rotate per key at a time in this process; concurrent
// requests for the key share its answer. Across replicas the rotator itself
// guarantees one rotation. The saga runs on a context of its own, so a
// client that hangs up does not leave it part-way.
func (api *rotateAPI) rotate(ctx context.Context, rot *rotation.Rotator, req rotateRequest) (*rotateFlight, error) {
	id := req.Pool + "\x00" + req.KeyID
	api.mu.Lock()
	f, ok := api.flights[id]
	if !ok {
		f = &rotateFlight{done: make(chan struct{})}
		api.flights[id] = f
		go func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rotateTimeout)
			defer cancel()
			var opts []rotation.RotateOption
			if req.BudgetUser != "" {
				opts = append(opts, rotation.WithBudgetUser(req.BudgetUser))
			}
			f.res, f.err = rot.Rotate(rctx, req.KeyID, req.Reason, opts...)
			api.settle(rctx, rot, req.KeyID, f)
			api.mu.Lock()
			delete(api.flights, id)
			api.mu.Unlock()
			close(f.done)
		}()
	}
	api.mu.Unlock()
	select {
	case <-f.done:
		return f, f.err
	case <-ctx.Done():
		return &rotateFlight{res: rotation.Result{OldKeyID: req.KeyID}}, ctx.Err()
	}
}

// settle completes a flight's answer and counts it: an already rotated
// key's replacement is followed to the live end of the chain, and a
// not_found is checked for a non-string _id (docs/proxy.md, "Way 2").
func (api *rotateAPI) settle(ctx context.Context, rot *rotation.Rotator, keyID string, f *rotateFlight) {
	outcome := "error"
	switch {
	case f.err != nil:
	case f.res.Outcome == rotation.AlreadyRotated:
		// A failed read only costs the replacement's id, not the answer.
		f.res.NewKeyID, _ = rot.LiveEnd(ctx, f.res.NewKeyID)
		outcome = f.res.Outcome.String()
	case f.res.Outcome == rotation.NotFound:
		if api.db != nil {
			var err error
			if f.nonStringID, err = heldAsNonString(ctx, api.db.Collection(rot.Pool().KeysCollection), keyID); err != nil {
				// Unknown is not not_found: the proxy would drop a live key.
				f.err = err
				break
			}
		}
		if !f.nonStringID {
			outcome = f.res.Outcome.String()
		}
	default:
		outcome = f.res.Outcome.String()
	}
	if api.counted != nil {
		api.counted(rot.Pool().Name, outcome)
	}
}

// ensureIndexes makes sure, once per process, that the rotators' indexes
// exist before the first rotation: the journal's unique backupId index is
// what stops one backup being used twice, and the daemon's start-up may
// not have created it yet (or keeps failing to).
func (api *rotateAPI) ensureIndexes(ctx context.Context) error {
	if api.indexed.Load() {
		return nil
	}
	api.indexMu.Lock()
	defer api.indexMu.Unlock()
	if api.indexed.Load() {
		return nil
	}
	// Not cut short by a client hanging up: the next request needs them too.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rotateTimeout)
	defer cancel()
	for _, p := range api.pools {
		if err := api.rotators[p].EnsureIndexes(ctx); err != nil {
			return err
		}
	}
	api.indexed.Store(true)
	return nil
}

func writeRotate(w http.ResponseWriter, status int, body rotateResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
