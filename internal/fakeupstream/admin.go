package fakeupstream

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// ManagedKey is a key the management API created: OpenRouter's (hash,
// name, limit) or LiteLLM's (token = sha256 of the key, key_alias,
// max_budget).
type ManagedKey struct {
	ID       string // OpenRouter's hash; LiteLLM's token
	Name     string
	Secret   string
	Limit    float64
	Disabled bool
	Deleted  bool
	// Disables counts the requests that turned the key from enabled to
	// disabled; DisableCalls every disable request for it.
	Disables, DisableCalls int
}

// AdminHooks misbehave on purpose. Each may answer the request itself
// (returning true); nil hooks leave the documented behaviour.
type AdminHooks struct {
	// Before runs before a management request is handled (nothing created
	// or changed yet): a 429 with Retry-After, a 5xx.
	Before func(w http.ResponseWriter, r *http.Request) bool
	// AfterCreate runs once a key was created, before the answer: a 5xx,
	// a dropped connection, an answer without the secret.
	AfterCreate func(w http.ResponseWriter, r *http.Request, k ManagedKey) bool
}

// admin is the key-management state of a Server.
type admin struct {
	mu       sync.Mutex
	key      string // the management (OpenRouter) or master (LiteLLM) key
	keys     []*ManagedKey
	hooks    AdminHooks
	pageSize int
	creates  map[string]int // by name
}

// EnableAdmin makes the server answer its kind's key-management API
// (openrouter: /api/v1/keys; litellm: /key/generate, /key/list, /key/info,
// /key/block, /key/unblock, /key/delete) for requests bearing adminKey.
// Created keys answer spend queries (spend 0, their limit as budget) until
// they are disabled or deleted, then the upstream refuses them (401).
func (s *Server) EnableAdmin(adminKey string) {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	s.adm.key = adminKey
	s.adm.creates = map[string]int{}
	if s.adm.pageSize == 0 {
		s.adm.pageSize = 100
	}
}

// SetAdminHooks installs misbehaviours (AdminHooks).
func (s *Server) SetAdminHooks(h AdminHooks) {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	s.adm.hooks = h
}

// SetPageSize sets how many keys one list page holds (OpenRouter documents
// 100; LiteLLM's size is the client's, capped here).
func (s *Server) SetPageSize(n int) {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	s.adm.pageSize = n
}

// ManagedKeys returns a copy of every key the management API created, in
// creation order.
func (s *Server) ManagedKeys() []ManagedKey {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	out := make([]ManagedKey, len(s.adm.keys))
	for i, k := range s.adm.keys {
		out[i] = *k
	}
	return out
}

// Creates returns how many keys were created under name.
func (s *Server) Creates(name string) int {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	return s.adm.creates[name]
}

// AddManagedKey registers a key created outside the API (by hand, in the
// upstream's dashboard) and returns it: its id, and its secret when none
// is given.
func (s *Server) AddManagedKey(name, secret string, limit float64) ManagedKey {
	s.adm.mu.Lock()
	k := s.newKeyLocked(name, secret, limit)
	s.adm.mu.Unlock()
	s.SetSpend(k.Secret, 0)
	s.SetBudget(k.Secret, limit)
	return *k
}

// Disabled reports whether the key with this secret is disabled or deleted
// upstream.
func (s *Server) Disabled(secret string) bool {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	for _, k := range s.adm.keys {
		if k.Secret == secret {
			return k.Disabled || k.Deleted
		}
	}
	return false
}

func (s *Server) newKeyLocked(name, secret string, limit float64) *ManagedKey {
	if secret == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		prefix := "sk-"
		if s.kind == "openrouter" {
			prefix = "sk-or-v1-"
		}
		secret = prefix + hex.EncodeToString(b)
	}
	id := tokenHash(secret)
	if s.kind == "openrouter" {
		// OpenRouter's hash is its own id, not derivable from the key.
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
	}
	k := &ManagedKey{ID: id, Name: name, Secret: secret, Limit: limit}
	s.adm.keys = append(s.adm.keys, k)
	if s.adm.creates != nil {
		s.adm.creates[name]++
	}
	return k
}

// tokenHash is LiteLLM's hash_token: the hex SHA-256 of the key.
func tokenHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// refused reports whether a spend query for secret must be refused: the
// key was disabled or deleted through the management API.
func (s *Server) refused(secret string) bool {
	s.adm.mu.Lock()
	defer s.adm.mu.Unlock()
	if s.adm.key == "" {
		return false
	}
	for _, k := range s.adm.keys {
		if k.Secret == secret && (k.Disabled || k.Deleted) {
			return true
		}
	}
	return false
}

// serveAdmin answers a management request; false when r is none.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) bool {
	s.adm.mu.Lock()
	enabled, key, hooks := s.adm.key != "", s.adm.key, s.adm.hooks
	s.adm.mu.Unlock()
	if !enabled {
		return false
	}
	p := r.URL.Path
	// LiteLLM's /key/info without ?key= is a key asking about itself: a
	// spend query.
	isAdmin := (s.kind == "openrouter" && strings.HasPrefix(p, "/api/v1/keys")) ||
		(s.kind == "litellm" && strings.HasPrefix(p, "/key/") && (p != "/key/info" || r.URL.Query().Has("key")))
	if !isAdmin {
		return false
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+key {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"No auth credentials found","code":401}}`)
		return true
	}
	if hooks.Before != nil && hooks.Before(w, r) {
		return true
	}
	if s.kind == "openrouter" {
		s.serveOpenRouterAdmin(w, r, hooks)
	} else {
		s.serveLiteLLMAdmin(w, r, hooks)
	}
	return true
}

// openRouterItem is one key as OpenRouter's list, get and create show it
// (openrouter.ai/docs/api/api-reference/api-keys).
func openRouterItem(k *ManagedKey) map[string]any {
	return map[string]any{"hash": k.ID, "name": k.Name, "label": k.Secret[:12] + "..." + k.Secret[len(k.Secret)-4:],
		"disabled": k.Disabled, "limit": k.Limit, "limit_remaining": k.Limit, "limit_reset": nil, "include_byok_in_limit": false,
		"usage": 0, "usage_daily": 0, "usage_weekly": 0, "usage_monthly": 0, "created_at": "2026-01-01T00:00:00Z", "updated_at": nil}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func notFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{"code": 404, "message": "Key not found"}})
}

func (s *Server) serveOpenRouterAdmin(w http.ResponseWriter, r *http.Request, hooks AdminHooks) {
	hash := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/api/v1/keys"), "/")
	switch {
	case hash == "" && r.Method == http.MethodGet:
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		all := r.URL.Query().Get("include_disabled") == "true"
		s.adm.mu.Lock()
		var live []*ManagedKey
		for _, k := range s.adm.keys {
			if !k.Deleted && (all || !k.Disabled) {
				live = append(live, k)
			}
		}
		// Newest first, as the dashboard lists them.
		items := []map[string]any{}
		for i := len(live) - 1 - off; i >= 0 && len(items) < s.adm.pageSize; i-- {
			items = append(items, openRouterItem(live[i]))
		}
		s.adm.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"data": items})
	case hash == "" && r.Method == http.MethodPost:
		var in struct {
			Name  *string  `json:"name"`
			Limit *float64 `json:"limit"`
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil || in.Name == nil || *in.Name == "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"code": 400, "message": "name is required"}})
			return
		}
		limit := 0.0
		if in.Limit != nil {
			limit = *in.Limit
		}
		s.adm.mu.Lock()
		k := s.newKeyLocked(*in.Name, "", limit)
		kc := *k
		s.adm.mu.Unlock()
		s.SetSpend(kc.Secret, 0)
		s.SetBudget(kc.Secret, limit)
		if hooks.AfterCreate != nil && hooks.AfterCreate(w, r, kc) {
			return
		}
		writeJSON(w, http.StatusCreated, map[string]any{"data": openRouterItem(&kc), "key": kc.Secret})
	default:
		s.adm.mu.Lock()
		defer s.adm.mu.Unlock()
		var k *ManagedKey
		for _, c := range s.adm.keys {
			if c.ID == hash && !c.Deleted {
				k = c
			}
		}
		if k == nil {
			notFound(w)
			return
		}
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, map[string]any{"data": openRouterItem(k)})
		case http.MethodPatch:
			var in struct {
				Disabled *bool `json:"disabled"`
			}
			_ = json.NewDecoder(r.Body).Decode(&in)
			if in.Disabled != nil {
				if *in.Disabled {
					k.DisableCalls++
					if !k.Disabled {
						k.Disables++
					}
				}
				k.Disabled = *in.Disabled
			}
			writeJSON(w, http.StatusOK, map[string]any{"data": openRouterItem(k)})
		case http.MethodDelete:
			k.Deleted = true
			writeJSON(w, http.StatusOK, map[string]any{"deleted": true})
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	}
}

// liteLLMItem is one key as LiteLLM's /key/list (return_full_object) and
// /key/info show it: the hashed token, never the key.
func liteLLMItem(k *ManagedKey) map[string]any {
	var blocked any
	if k.Disabled {
		blocked = true
	}
	return map[string]any{"token": k.ID, "key_alias": k.Name, "key_name": "sk-..." + k.Secret[len(k.Secret)-4:],
		"max_budget": k.Limit, "spend": 0.0, "blocked": blocked, "metadata": map[string]any{}}
}

// liteLLMRef finds a key by its key or its hashed token, as LiteLLM's
// endpoints accept either.
func (s *Server) liteLLMRef(ref string) *ManagedKey {
	if strings.HasPrefix(ref, "sk-") {
		ref = tokenHash(ref)
	}
	for _, k := range s.adm.keys {
		if k.ID == ref && !k.Deleted {
			return k
		}
	}
	return nil
}

func (s *Server) serveLiteLLMAdmin(w http.ResponseWriter, r *http.Request, hooks AdminHooks) {
	fail := func(status int, msg string) {
		writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": "bad_request_error", "param": nil, "code": strconv.Itoa(status)}})
	}
	switch r.URL.Path {
	case "/key/generate":
		var in struct {
			Key       *string  `json:"key"`
			KeyAlias  *string  `json:"key_alias"`
			MaxBudget *float64 `json:"max_budget"`
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil {
			fail(http.StatusBadRequest, "invalid body")
			return
		}
		secret, alias, limit := "", "", 0.0
		if in.Key != nil {
			secret = *in.Key
		}
		if in.KeyAlias != nil {
			alias = *in.KeyAlias
		}
		if in.MaxBudget != nil {
			limit = *in.MaxBudget
		}
		s.adm.mu.Lock()
		for _, k := range s.adm.keys {
			if alias != "" && k.Name == alias && !k.Deleted {
				s.adm.mu.Unlock()
				// LiteLLM's _enforce_unique_key_alias.
				fail(http.StatusBadRequest, "Unique key aliases across all keys are required. Key alias '"+alias+"' already exists.")
				return
			}
			if secret != "" && k.Secret == secret {
				s.adm.mu.Unlock()
				fail(http.StatusBadRequest, "Key already exists")
				return
			}
		}
		k := s.newKeyLocked(alias, secret, limit)
		kc := *k
		s.adm.mu.Unlock()
		s.SetSpend(kc.Secret, 0)
		s.SetBudget(kc.Secret, limit)
		if hooks.AfterCreate != nil && hooks.AfterCreate(w, r, kc) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"key": kc.Secret, "token_id": kc.ID, "key_alias": kc.Name, "max_budget": kc.Limit, "expires": nil})
	case "/key/list":
		q := r.URL.Query()
		page, _ := strconv.Atoi(q.Get("page"))
		size, _ := strconv.Atoi(q.Get("size"))
		page, size = max(page, 1), max(size, 1)
		s.adm.mu.Lock()
		size = min(size, s.adm.pageSize)
		var match []*ManagedKey
		for _, k := range s.adm.keys {
			if !k.Deleted && (!q.Has("key_alias") || k.Name == q.Get("key_alias")) {
				match = append(match, k)
			}
		}
		items := []any{}
		for i := (page - 1) * size; i < len(match) && i < page*size; i++ {
			if q.Get("return_full_object") == "true" {
				items = append(items, liteLLMItem(match[i]))
			} else {
				items = append(items, match[i].ID)
			}
		}
		total := len(match)
		s.adm.mu.Unlock()
		pages := (total + size - 1) / size
		writeJSON(w, http.StatusOK, map[string]any{"keys": items, "total_count": total, "current_page": page, "total_pages": pages})
	case "/key/info":
		s.adm.mu.Lock()
		defer s.adm.mu.Unlock()
		k := s.liteLLMRef(r.URL.Query().Get("key"))
		if k == nil {
			fail(http.StatusNotFound, "Key not found in database")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"key": k.ID, "info": liteLLMItem(k)})
	case "/key/block", "/key/unblock":
		var in struct {
			Key string `json:"key"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		s.adm.mu.Lock()
		defer s.adm.mu.Unlock()
		k := s.liteLLMRef(in.Key)
		if k == nil {
			fail(http.StatusNotFound, "Key not found in database")
			return
		}
		if r.URL.Path == "/key/block" {
			k.DisableCalls++
			if !k.Disabled {
				k.Disables++
			}
			k.Disabled = true
		} else {
			k.Disabled = false
		}
		writeJSON(w, http.StatusOK, liteLLMItem(k))
	case "/key/delete":
		var in struct {
			Keys []string `json:"keys"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		s.adm.mu.Lock()
		defer s.adm.mu.Unlock()
		var deleted []string
		for _, ref := range in.Keys {
			if k := s.liteLLMRef(ref); k != nil {
				k.Deleted = true
				deleted = append(deleted, ref)
			}
		}
		if len(deleted) == 0 {
			fail(http.StatusNotFound, "Failed to delete all keys. Keys not found in database")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"deleted_keys": deleted})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}
