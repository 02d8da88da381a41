package rotation_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The proxy imports this package: it must pull in nothing but the standard
// library, mongo-driver v2 (and what the driver itself needs) and the
// project's own history and mongoidx, which import only those (README,
// "Running next to the proxy").
func TestRotationDependencies(t *testing.T) {
	const module = "github.com/spendchecker/spendchecker/"
	list := func(args ...string) []string {
		t.Helper()
		out, err := exec.Command("go", append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}"}, args...)...).Output()
		if err != nil {
			t.Fatalf("go list %v: %v", args, err)
		}
		return strings.Fields(string(out))
	}
	const driver = "go.mongodb.org/mongo-driver/v2/"
	var driverPkgs []string
	for _, d := range list(".") {
		if strings.HasPrefix(d, driver) {
			driverPkgs = append(driverPkgs, d)
		}
	}
	allowed := map[string]bool{module + "rotation": true, module + "history": true, module + "mongoidx": true}
	for _, d := range list(driverPkgs...) {
		allowed[d] = true // the driver and what it needs
	}
	for _, d := range list(".") {
		if !allowed[d] {
			t.Errorf("rotation depends on %s: a proxy importing the rotator would pull it in", d)
		}
	}
}
