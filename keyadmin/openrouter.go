package keyadmin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
)

// OpenRouter's management API (openrouter.ai/docs/api/api-reference/api-keys):
// GET /api/v1/keys?offset=N lists keys a page at a time (newest first, 100
// a page; include_disabled=true adds disabled ones); POST /api/v1/keys
// {name, limit} answers {data: {hash, name, disabled, …}, key} with the key
// shown this once; PATCH /api/v1/keys/{hash} {disabled} answers {data};
// DELETE /api/v1/keys/{hash} answers {deleted: true}.

// maxListPages bounds one listing: 1,000 pages are 100,000 keys.
const maxListPages = 1000

// openRouterKey is one key in a list, get or create answer.
type openRouterKey struct {
	Hash     *string `json:"hash"`
	Name     *string `json:"name"`
	Disabled *bool   `json:"disabled"`
}

func (k openRouterKey) key(op string) (Key, error) {
	if k.Hash == nil || *k.Hash == "" {
		return Key{}, unclear(op, "a key without its hash")
	}
	out := Key{ID: *k.Hash}
	if k.Name != nil {
		out.Name = *k.Name
	}
	out.Disabled = k.Disabled != nil && *k.Disabled
	return out, nil
}

func (c *Client) createOpenRouter(ctx context.Context, name string, limit float64) (Key, error) {
	a, err := c.call(ctx, "create", false, http.MethodPost, "/api/v1/keys", map[string]any{"name": name, "limit": limit})
	if err != nil {
		return Key{}, err
	}
	var v struct {
		Data *openRouterKey `json:"data"`
		Key  *string        `json:"key"`
	}
	if json.Unmarshal(a.body, &v) != nil {
		// Never quote a created key's answer: it holds the secret.
		return Key{}, unclear("create", "not JSON")
	}
	var k Key
	if v.Data != nil {
		k, _ = v.Data.key("create")
	}
	if v.Key == nil || *v.Key == "" {
		return k, ErrNoSecret
	}
	k.Secret = *v.Key
	if k.ID == "" {
		// The key is ours but cannot be named for disabling: the caller
		// finds it by name.
		return k, unclear("create", "the created key's hash is missing")
	}
	if k.Name == "" {
		k.Name = name
	}
	return k, nil
}

// maxListRestarts bounds the restarts of one listing that shifted under it.
const maxListRestarts = 5

// findOpenRouter walks the offset list. Each page after the first starts
// at the previous page's last key, which must come back first: a key
// deleted meanwhile above the cut moves every older key up by one, and a
// plain walk would skip the key that slid onto the page already read.
// Then the walk starts again (keys found so far stay found).
func (c *Client) findOpenRouter(ctx context.Context, name string) ([]Key, error) {
	var out []Key
	seen := map[string]bool{}
	offset, last, restarts := 0, "", 0
	for page := 0; ; page++ {
		if page == maxListPages {
			return nil, unclear("list", "the key list goes on past %d pages", maxListPages)
		}
		q := url.Values{"include_disabled": {"true"}, "offset": {strconv.Itoa(offset)}}
		a, err := c.call(ctx, "list", true, http.MethodGet, "/api/v1/keys?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		var v struct {
			Data *[]openRouterKey `json:"data"`
		}
		if json.Unmarshal(a.body, &v) != nil || v.Data == nil {
			return nil, unclear("list", "no data list")
		}
		items := make([]Key, 0, len(*v.Data))
		for _, item := range *v.Data {
			k, err := item.key("list")
			if err != nil {
				return nil, err
			}
			items = append(items, k)
		}
		overlap := last != ""
		if overlap {
			if len(items) == 0 || items[0].ID != last {
				// The list shifted since the previous page: start again.
				if restarts++; restarts > maxListRestarts {
					return nil, unclear("list", "the key list shifted on every read (offset ignored?)")
				}
				offset, last = 0, ""
				continue
			}
			items = items[1:]
			if len(items) == 0 {
				// Only the previous page's last key: the end, or pages of
				// one key. The next offset says which.
				offset, last = offset+1, ""
				continue
			}
		} else if len(items) == 0 {
			// The list has no total: it ends at an empty page, whatever
			// the page size.
			return out, nil
		}
		fresh := 0
		for _, k := range items {
			if seen[k.ID] {
				continue // offsets shift when keys are created meanwhile
			}
			seen[k.ID] = true
			fresh++
			if k.Name == name {
				out = append(out, k)
			}
		}
		if fresh == 0 && !overlap && offset > 0 && restarts == 0 {
			return nil, unclear("list", "the key list repeats its keys at offset %d: offset ignored?", offset)
		}
		offset += len(items) - 1
		if overlap {
			offset++ // items lost the overlap key
		}
		last = items[len(items)-1].ID
	}
}

func (c *Client) lookupOpenRouter(ctx context.Context, id string) (Key, error) {
	a, err := c.call(ctx, "lookup", true, http.MethodGet, "/api/v1/keys/"+url.PathEscape(id), nil)
	if err != nil {
		return Key{}, err
	}
	var v struct {
		Data *openRouterKey `json:"data"`
	}
	if json.Unmarshal(a.body, &v) != nil || v.Data == nil {
		return Key{}, unclear("lookup", "no data")
	}
	k, err := v.Data.key("lookup")
	if err == nil && k.ID != id {
		return Key{}, unclear("lookup", "asked for one key, answered another")
	}
	return k, err
}

func (c *Client) setDisabledOpenRouter(ctx context.Context, id string, disabled bool) error {
	op := map[bool]string{true: "disable", false: "enable"}[disabled]
	a, err := c.call(ctx, op, true, http.MethodPatch, "/api/v1/keys/"+url.PathEscape(id), map[string]any{"disabled": disabled})
	if err != nil {
		return err
	}
	var v struct {
		Data *openRouterKey `json:"data"`
	}
	if json.Unmarshal(a.body, &v) != nil || v.Data == nil {
		return unclear(op, "no data")
	}
	// The answer is the key as it is now: believe it, not the status.
	if v.Data.Disabled != nil && *v.Data.Disabled != disabled {
		return unclear(op, "the answer says disabled=%v", *v.Data.Disabled)
	}
	return nil
}

func (c *Client) deleteOpenRouter(ctx context.Context, id string) error {
	a, err := c.call(ctx, "delete", true, http.MethodDelete, "/api/v1/keys/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	var v struct {
		Deleted *bool `json:"deleted"`
	}
	if json.Unmarshal(a.body, &v) == nil && v.Deleted != nil && !*v.Deleted {
		return errors.New("key admin delete: the answer says deleted=false")
	}
	return nil
}
