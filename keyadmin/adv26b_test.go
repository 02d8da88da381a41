package keyadmin_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
)

// OpenRouter lists keys newest first by offset. A key deleted between two
// pages (by an operator, another deployment, or retire's own deletes)
// moves every older key up by one: the key that began the next page slid
// onto the page already read, and a plain offset walk never sees it. A
// slot's key looked up by name that way is taken for never created.
func TestAdv26b_ListShiftedByADeleteBetweenPages(t *testing.T) {
	for _, page := range []int{2, 3, 100} {
		t.Run(fmt.Sprintf("page%d", page), func(t *testing.T) {
			up, c, _ := newAdmin(t, "openrouter")
			up.SetPageSize(page)
			wanted := up.AddManagedKey("wanted", "", 1)
			var newer []string // ids, oldest first
			for i := range page {
				newer = append(newer, up.AddManagedKey(fmt.Sprintf("other-%d", i), "", 1).ID)
			}
			// The first page holds the newer keys; before the second, the
			// newest of them is deleted: wanted slides onto the first page.
			var mu sync.Mutex
			up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(_ http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || r.URL.Query().Get("offset") == "0" || r.URL.Query().Get("offset") == "" {
					return false
				}
				mu.Lock()
				defer mu.Unlock()
				if len(newer) == 0 {
					return false
				}
				id := newer[len(newer)-1]
				newer = nil // once
				req, _ := http.NewRequest(http.MethodDelete, up.URL+"/api/v1/keys/"+id, nil)
				req.Header.Set("Authorization", "Bearer "+mgmtKey)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_ = resp.Body.Close()
				}
				return false
			}})
			found, err := c.FindByName(context.Background(), "wanted")
			if err != nil {
				// Refusing to answer (and looking again later) is safe too;
				// answering without the key is not.
				t.Logf("find: %v", err)
				return
			}
			if len(found) != 1 || found[0].ID != wanted.ID {
				t.Fatalf("found %v, want the key named wanted (%s): the list shifted under the walk", found, wanted.ID)
			}
		})
	}
}
