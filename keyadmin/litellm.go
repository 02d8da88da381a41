package keyadmin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// A LiteLLM proxy's key endpoints, with its master key
// (docs.litellm.ai/docs/proxy/virtual_keys; litellm/proxy/
// management_endpoints/key_management_endpoints.py): POST /key/generate
// {key, key_alias, max_budget, metadata} answers {key, token_id, …};
// GET /key/list?key_alias=&return_full_object=true&page=&size= answers
// {keys, total_pages}; GET /key/info?key= answers {key, info}; POST
// /key/block and /key/unblock take {key}; POST /key/delete takes {keys}.
// Every one of them takes the key or its token, the hex SHA-256 of the key:
// the daemon sends the token, so no secret travels to them.

// liteLLMToken is LiteLLM's hash_token: the hex SHA-256 of the key.
func liteLLMToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewSecret makes a key for an upstream that takes one (ProposesSecret):
// sk- and 48 random hex digits, as LiteLLM's own keys look.
func NewSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "sk-" + hex.EncodeToString(b), nil
}

// liteLLMPage is how many keys one list page asks for.
const liteLLMPage = 100

func (c *Client) createLiteLLM(ctx context.Context, name string, limit float64, secret string) (Key, error) {
	in := map[string]any{"key_alias": name, "max_budget": limit, "metadata": map[string]any{"created_by": "spendchecker"}}
	if secret != "" {
		in["key"] = secret
	}
	a, err := c.call(ctx, "create", false, http.MethodPost, "/key/generate", in, secret)
	if err != nil {
		return Key{}, err
	}
	var v struct {
		Key *string `json:"key"`
	}
	if json.Unmarshal(a.body, &v) != nil {
		return Key{}, unclear("create", "not JSON")
	}
	k := Key{Name: name}
	if secret != "" {
		k.ID = liteLLMToken(secret)
	}
	if v.Key == nil || *v.Key == "" {
		return k, ErrNoSecret
	}
	k.Secret = *v.Key
	// A proxy that ignored the proposed key made its own: the id is the
	// one of the key it answered.
	k.ID = liteLLMToken(k.Secret)
	return k, nil
}

// liteLLMKey is one key of /key/list with return_full_object, or
// /key/info's info.
type liteLLMKey struct {
	Token    *string `json:"token"`
	KeyAlias *string `json:"key_alias"`
	Blocked  *bool   `json:"blocked"`
}

func (c *Client) findLiteLLM(ctx context.Context, name string) ([]Key, error) {
	var out []Key
	seen := map[string]bool{}
	for page := 1; ; page++ {
		if page > maxListPages {
			return nil, unclear("list", "the key list goes on past %d pages", maxListPages)
		}
		// key_alias filters on the proxy where it is supported; the
		// alias is compared here too, for one that ignores it.
		q := url.Values{"key_alias": {name}, "return_full_object": {"true"}, "page": {strconv.Itoa(page)}, "size": {strconv.Itoa(liteLLMPage)}}
		a, err := c.call(ctx, "list", true, http.MethodGet, "/key/list?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		var v struct {
			Keys       *[]json.RawMessage `json:"keys"`
			TotalPages *int               `json:"total_pages"`
		}
		if json.Unmarshal(a.body, &v) != nil || v.Keys == nil {
			return nil, unclear("list", "no keys list")
		}
		fresh := 0
		for _, raw := range *v.Keys {
			var item liteLLMKey
			if json.Unmarshal(raw, &item) != nil || item.Token == nil || *item.Token == "" {
				return nil, unclear("list", "a key without its token (return_full_object not supported?)")
			}
			if seen[*item.Token] {
				continue
			}
			seen[*item.Token] = true
			fresh++
			if item.KeyAlias != nil && *item.KeyAlias == name {
				out = append(out, Key{ID: *item.Token, Name: name, Disabled: item.Blocked != nil && *item.Blocked})
			}
		}
		if len(*v.Keys) == 0 || (v.TotalPages != nil && page >= *v.TotalPages) {
			return out, nil
		}
		if fresh == 0 {
			return nil, unclear("list", "the key list repeats its keys on page %d: page ignored?", page)
		}
	}
}

func (c *Client) lookupLiteLLM(ctx context.Context, id string) (Key, error) {
	a, err := c.call(ctx, "lookup", true, http.MethodGet, "/key/info?"+url.Values{"key": {id}}.Encode(), nil)
	if err != nil {
		return Key{}, liteLLMNotFound(err)
	}
	var v struct {
		Info *liteLLMKey `json:"info"`
	}
	if json.Unmarshal(a.body, &v) != nil || v.Info == nil {
		return Key{}, unclear("lookup", "no info")
	}
	k := Key{ID: id, Disabled: v.Info.Blocked != nil && *v.Info.Blocked}
	if v.Info.KeyAlias != nil {
		k.Name = *v.Info.KeyAlias
	}
	return k, nil
}

func (c *Client) setDisabledLiteLLM(ctx context.Context, id string, disabled bool) error {
	op, path := "disable", "/key/block"
	if !disabled {
		op, path = "enable", "/key/unblock"
	}
	a, err := c.call(ctx, op, true, http.MethodPost, path, map[string]any{"key": id})
	if err != nil {
		return liteLLMNotFound(err)
	}
	// The answer is the key's row as it is now: believe it, not the
	// status. An unblocked row says blocked null or false.
	var v map[string]json.RawMessage
	if json.Unmarshal(a.body, &v) != nil {
		return nil
	}
	raw, ok := v["blocked"]
	if !ok {
		return nil
	}
	var blocked *bool
	if err := json.Unmarshal(raw, &blocked); err != nil {
		return unclear(op, "blocked is not a boolean")
	}
	if (blocked != nil && *blocked) != disabled {
		return unclear(op, "the answer says blocked=%v", blocked != nil && *blocked)
	}
	return nil
}

func (c *Client) deleteLiteLLM(ctx context.Context, id string) error {
	_, err := c.call(ctx, "delete", true, http.MethodPost, "/key/delete", map[string]any{"keys": []string{id}})
	return liteLLMNotFound(err)
}

// liteLLMNotFound reads LiteLLM's "not found" answers, which some versions
// send as 400, as ErrNotFound.
func liteLLMNotFound(err error) error {
	var e *Error
	if err == nil || errors.Is(err, ErrNotFound) || !errors.As(err, &e) || e.Status != http.StatusBadRequest {
		return err
	}
	if strings.Contains(strings.ToLower(e.Msg), "not found") {
		return fmt.Errorf("%w: %w", ErrNotFound, e)
	}
	return err
}
