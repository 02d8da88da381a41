package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bad usage is refused in one line with exit 2, before any store starts:
// nothing is left in the temporary directory.
func TestUsageErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"port taken", []string{"-serve", "-listen", taken.Addr().String()}, taken.Addr().String() + " is taken"},
		{"bad address", []string{"-serve", "-listen", "nonsense"}, "cannot listen on -listen nonsense"},
		{"listen without serve", []string{"-listen", "127.0.0.1:0"}, "-listen needs -serve"},
		{"serve with oneapi", []string{"-serve", "-provider", "oneapi"}, "-serve runs the openhands demo"},
		{"unknown provider", []string{"-provider", "nope"}, "-provider must be openhands, oneapi or litellm"},
		{"unknown flag", []string{"-bogus"}, "flag provided but not defined: -bogus"},
		{"argument", []string{"-serve", "now"}, `unexpected argument "now"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			var out, errOut bytes.Buffer
			if code := demo(context.Background(), tc.args, &out, &errOut); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if got := errOut.String(); !strings.Contains(got, tc.want) || strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "demo: ") {
				t.Errorf("stderr %q, want one line with %q", got, tc.want)
			}
			if out.Len() > 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("left in the temporary directory: %v", left)
			}
		})
	}
}

// dropLines passes whole lines, however they are split, leaves out the
// dropped ones and holds everything until released.
func TestDropLines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"whole lines", []string{"a\n", "cycle done 1\n", "b\n"}, "a\nb\n"},
		{"split lines", []string{"a", "\ncycle ", "done\nb", "\n"}, "a\nb\n"},
		{"partial last line waits", []string{"a\nb"}, "a\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			d := &dropLines{w: &out, drop: []byte("cycle done"), held: true}
			for _, w := range tc.writes {
				if _, err := d.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			if out.Len() > 0 {
				t.Fatalf("wrote %q while held", out.String())
			}
			d.release()
			if got := out.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the demo and the CLI once.
func binaries(t *testing.T) (demo, cli string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "spendchecker-demo-test-")
		if buildErr != nil {
			return
		}
		if out, err := exec.Command("go", "build", "-o", binDir+"/", ".", "../spendchecker").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "spendchecker-demo"), filepath.Join(binDir, "spendchecker")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// serveProc is the demo in serve mode; its output lines arrive on lines.
type serveProc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	all    bytes.Buffer // every line, for failure messages
	mu     sync.Mutex
}

// next returns the next output line that contains s; it fails t when the
// demo exits first or the limit passes.
func (p *serveProc) next(t *testing.T, s string, limit time.Duration) string {
	t.Helper()
	return p.nextMatch(t, fmt.Sprintf("%q", s), func(line string) bool { return strings.Contains(line, s) }, limit)
}

// nextMatch returns the next output line that match accepts.
func (p *serveProc) nextMatch(t *testing.T, what string, match func(string) bool, limit time.Duration) string {
	t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("the demo stopped before printing %s:\n%s\nstderr: %s", what, p.output(), p.stderr.String())
			}
			if match(line) {
				return line
			}
		case <-deadline:
			t.Fatalf("the demo printed no %s within %s:\n%s", what, limit, p.output())
		}
	}
}

func (p *serveProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all.String()
}

// The demo in serve mode, as a user runs it: it prints the page's URL and
// the commands to try; the page shows the pool; the printed commands work
// against the running store while the daemon rotates; Ctrl-C stops it all
// with exit 0 and removes the store's directory.
func TestServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	demoBin, cliBin := binaries(t)
	tmp := t.TempDir()
	p := &serveProc{cmd: exec.Command(demoBin, "-serve", "-listen", "127.0.0.1:0"), lines: make(chan string, 10000)}
	p.cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.all.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			p.lines <- sc.Text()
		}
		close(p.lines)
		exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })

	first := p.next(t, "== spendchecker demo:", 2*time.Minute)
	storeDir := first[strings.LastIndex(first, " ")+1:]
	if !strings.HasPrefix(storeDir, tmp) {
		t.Fatalf("store directory %q, want one in %s", storeDir, tmp)
	}
	url := strings.TrimPrefix(p.next(t, "== status page: ", time.Minute), "== status page: ")
	p.next(t, "== try, in another terminal", time.Minute)
	commands := map[string][]string{}
	for range 4 {
		line := p.next(t, "go run ./cmd/spendchecker ", time.Minute)
		args := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "go run ./cmd/spendchecker "))
		commands[args[0]] = args
	}
	for _, c := range []string{"status", "history", "rotate", "verify"} {
		if args := commands[c]; len(args) == 0 || !strings.Contains(strings.Join(args, " "), "--mongo-uri mongodb://127.0.0.1:") ||
			!strings.Contains(strings.Join(args, " "), "--database fproxy") {
			t.Fatalf("no %s command with the store's --mongo-uri and --database printed:\n%s", c, p.output())
		}
	}

	// The page is up when its URL is printed; the pool shows once the
	// daemon has read its first summary of the keys, which the first GET
	// asks for and the daemon logs.
	get := func() (int, []byte) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	get()
	p.next(t, "status summary read", 2*time.Minute)
	status, body := get()
	wants := []string{`id="pool-openhands"`, `data-key="oh-key-08"`}
	for _, want := range wants {
		if !bytes.Contains(body, []byte(want)) {
			t.Fatalf("GET %s: %d, no %q:\n%s", url, status, want, body)
		}
	}

	cli := func(name string, want ...string) {
		t.Helper()
		out, err := exec.Command(cliBin, commands[name]...).CombinedOutput()
		if err != nil {
			t.Fatalf("spendchecker %s: %v\n%s", strings.Join(commands[name], " "), err, out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("spendchecker %s printed no %q:\n%s", name, w, out)
			}
		}
	}
	cli("status", "pool openhands (openhands_keys)", "oh-key-08")
	// The daemon takes the lease and rotates: keys 01-04 are over the
	// threshold from the start.
	p.next(t, "key rotated", 2*time.Minute)
	cli("status", "held by demo-1")
	cli("history", "proactive_threshold_", "demo-1")
	cli("rotate", "rotated oh-key-08 -> oh-backup-")
	// The daemon keeps rotating: verify may meet a rotation in flight
	// (unfinished_rotation, exit 1). Ask until a pass finds none, within a
	// generous cap; a rotation that never finishes fails the test.
	verifyDeadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command(cliBin, commands["verify"]...).CombinedOutput()
		if err == nil && strings.Contains(string(out), "pool openhands: ok") {
			break
		}
		if time.Now().After(verifyDeadline) || !strings.Contains(string(out), "unfinished_rotation") {
			t.Fatalf("spendchecker verify: %v\n%s", err, out)
		}
	}
	// Rotations go on past the six backups seeded: the demo restocks them.
	restocked := regexp.MustCompile(`"msg":"key rotated".*"new_key":"oh-backup-(0[7-9]|[1-9]\d)"`)
	p.nextMatch(t, "a rotation to a restocked backup", restocked.MatchString, 5*time.Minute)

	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	p.next(t, "lease released", time.Minute)
	p.next(t, "== stopped", time.Minute)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("demo after SIGINT: %v (want exit 0)\nstderr: %s", err, p.stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the demo did not exit within a minute of SIGINT")
	}
	if p.stderr.Len() > 0 {
		t.Errorf("stderr: %s", p.stderr.String())
	}
	if strings.Contains(p.output(), "cycle done") {
		t.Error("the terminal shows every cycle; the page has them")
	}
	if _, err := os.Stat(storeDir); !os.IsNotExist(err) {
		t.Errorf("the store's directory %s is still there (%v)", storeDir, err)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in the temporary directory: %v", left)
	}
}
