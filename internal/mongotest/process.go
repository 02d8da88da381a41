package mongotest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// storePackage is the command that runs the embedded store on its own.
const storePackage = "github.com/spendchecker/spendchecker/internal/embeddedstore"

// storeProcess is the embedded store the tests of one test binary share when
// it is built with -race: FerretDB and SQLite uninstrumented run about ten
// times faster, which decides whether a loaded machine passes the suite. Each
// test still has a database of its own, dropped at its end, as on a real
// MongoDB (EnvURI).
var storeProcess struct {
	sync.Mutex
	uri   string
	logs  *lockedBuffer
	stdin io.WriteCloser // held open: the process ends when it closes
	done  chan struct{}  // closed when the process has exited
}

// processStore returns the shared store process's URI and logs, starting it
// (building it first) if it is not running.
func processStore() (string, *lockedBuffer, error) {
	p := &storeProcess
	p.Lock()
	defer p.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return p.uri, p.logs, nil
		}
	}
	dir, err := os.MkdirTemp("", "spendchecker-embeddedstore-")
	if err != nil {
		return "", nil, err
	}
	// The binary goes once the process runs from it.
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "embeddedstore")
	if out, err := exec.Command("go", "build", "-o", bin, storePackage).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("go build %s: %v\n%s", storePackage, err, out)
	}
	logs := &lockedBuffer{}
	cmd := exec.Command(bin)
	cmd.Stderr = logs
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err != nil {
		_ = stdin.Close()
		<-done
		return "", nil, fmt.Errorf("embedded store process: %v\n%s", err, logs.String())
	}
	p.uri, p.logs, p.stdin, p.done = strings.TrimSpace(line), logs, stdin, done
	return p.uri, p.logs, nil
}
