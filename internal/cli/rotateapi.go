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
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spendchecker/spendchecker/rotation"
)

// POST /v1/rotate lets a proxy that does not link the rotator rotate a key
// through it (README, "Running next to the proxy"). Every replica serves it,
// leader or not: the rotator is safe without the lease.

// EnvRotateToken carries the endpoint's bearer token itself. It is not a
// flag, so the token never shows in a process listing.
const EnvRotateToken = "SPENDCHECKER_ROTATE_TOKEN"

const (
	rotateBodyLimit = 4 << 10
	rotateTimeout   = 30 * time.Second
	minTokenLen     = 16
)

// rotateToken reads the endpoint's token from --rotate-token-file or
// SPENDCHECKER_ROTATE_TOKEN; "" (endpoint disabled) when neither is set.
func rotateToken(file string) (string, error) {
	env := os.Getenv(EnvRotateToken)
	if file != "" && env != "" {
		return "", usage("set --rotate-token-file or %s, not both", EnvRotateToken)
	}
	tok, from := env, EnvRotateToken
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usage("--rotate-token-file: %v", err)
		}
		tok, from = string(b), "--rotate-token-file "+file
	}
	if file == "" && env == "" {
		return "", nil
	}
	tok = strings.TrimSpace(tok)
	if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", usage("%s: the rotate token must be one word of at least %d characters", from, minTokenLen)
	}
	return tok, nil
}

type rotateRequest struct {
	Pool   string `json:"pool"`
	KeyID  string `json:"keyId"`
	Reason string `json:"reason"`
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
	log      *slog.Logger

	mu      sync.Mutex
	flights map[string]*rotateFlight
}

// rotateFlight shares one Rotate call among the concurrent requests for a key.
type rotateFlight struct {
	done chan struct{}
	res  rotation.Result
	err  error
}

func newRotateAPI(token string, rotators []*rotation.Rotator, dryRun bool, log *slog.Logger) *rotateAPI {
	api := &rotateAPI{enabled: token != "", dryRun: dryRun, rotators: map[string]*rotation.Rotator{},
		log: log, flights: map[string]*rotateFlight{}}
	api.tokenSum = sha256.Sum256([]byte(token))
	for _, r := range rotators {
		api.rotators[r.Pool().Name] = r
		api.pools = append(api.pools, r.Pool().Name)
	}
	sort.Strings(api.pools)
	return api
}

// rotateRoutes is the hook serveHTTP calls.
func (a *app) rotateRoutes(mux *http.ServeMux) {
	mux.Handle("POST /v1/rotate", newRotateAPI(a.cfg.RotateToken, a.chk.Rotators(), a.cfg.DryRun, a.log))
}

func (api *rotateAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !api.enabled {
		writeRotate(w, http.StatusForbidden, rotateResponse{Error: "rotate endpoint disabled: start the daemon with --rotate-token-file or " + EnvRotateToken})
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
	res, err := api.rotate(r.Context(), rot, req)
	resp := rotateResponse{Pool: req.Pool, KeyID: req.KeyID, RotationID: res.RotationID, NewKeyID: res.NewKeyID}
	if err != nil {
		api.log.Warn("rotate request failed", "pool", req.Pool, "key", req.KeyID, "rotation", res.RotationID, "err", redact(err.Error()))
		resp.Error = "rotation did not complete; retrying is safe, and recovery finishes it: " + redact(err.Error())
		writeRotate(w, http.StatusInternalServerError, resp)
		return
	}
	resp.Outcome = res.Outcome.String()
	api.log.Info("rotate request", "pool", req.Pool, "key", req.KeyID, "reason", req.Reason,
		"outcome", resp.Outcome, "rotation", res.RotationID, "new_key", res.NewKeyID, "remote", r.RemoteAddr)
	writeRotate(w, outcomeStatus(res.Outcome), resp)
}

func outcomeStatus(o rotation.Outcome) int {
	switch o {
	case rotation.Rotated, rotation.AlreadyRotated:
		return http.StatusOK
	case rotation.InProgress:
		return http.StatusAccepted
	case rotation.NoBackup:
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
func (api *rotateAPI) rotate(ctx context.Context, rot *rotation.Rotator, req rotateRequest) (rotation.Result, error) {
	id := req.Pool + "\x00" + req.KeyID
	api.mu.Lock()
	f, ok := api.flights[id]
	if !ok {
		f = &rotateFlight{done: make(chan struct{})}
		api.flights[id] = f
		go func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rotateTimeout)
			defer cancel()
			f.res, f.err = rot.Rotate(rctx, req.KeyID, req.Reason)
			api.mu.Lock()
			delete(api.flights, id)
			api.mu.Unlock()
			close(f.done)
		}()
	}
	api.mu.Unlock()
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		return rotation.Result{OldKeyID: req.KeyID}, ctx.Err()
	}
}

func writeRotate(w http.ResponseWriter, status int, body rotateResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
