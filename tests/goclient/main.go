// Command goclient drives a containerd-compatible daemon (berthd, or containerd itself as the
// oracle) through containerd's Go client library and prints one line per check:
//
//	PASS <name>
//	FAIL <name>: <reason>
//
// followed by "N passed, M failed"; it exits 1 when a check failed. Notes (timings, details)
// go to stderr. Built in GOPATH mode against Debian's golang-github-containerd-containerd-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o goclient .
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
)

// env is what every check gets: the client and the command line.
type env struct {
	client  *containerd.Client
	address string
	ns      string
	image   string
	runtime string
	daemon  string // "berthd" or "containerd"
	bindir  string
	tmp     string // scratch directory of this run (FIFOs, runc roots)
	fifoDir string
}

// T is the state of one check: its name, id generator and cleanups.
type T struct {
	e        *env
	name     string
	cleanups []func(ctx context.Context) error
}

// id returns a fresh container (or other object) id: the check's name, a suffix and random hex.
func (t *T) id(suffix string) string {
	name := strings.ReplaceAll(t.name, "_", "-")
	if suffix != "" {
		name += "-" + suffix
	}
	return name + "-" + randHex(4)
}

// cleanup registers f to run (last registered first) after the check, also when it failed.
func (t *T) cleanup(f func(ctx context.Context) error) {
	t.cleanups = append(t.cleanups, f)
}

// notef prints a note about the check to stderr.
func (t *T) notef(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "note %s: %s\n", t.name, fmt.Sprintf(format, args...))
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

type check struct {
	name    string
	timeout time.Duration
	fn      func(ctx context.Context, t *T) error
}

var (
	checksMu sync.Mutex
	checks   []check
)

// register adds a check; the checks run in registration order (file order, then init order).
func register(name string, timeout time.Duration, fn func(ctx context.Context, t *T) error) {
	checksMu.Lock()
	defer checksMu.Unlock()
	checks = append(checks, check{name: name, timeout: timeout, fn: fn})
}

func main() {
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], loggerFlag) {
		// Started by a shim as the logging binary of a binary:// IO URI.
		os.Exit(runLogger(os.Args[1:]))
	}
	os.Exit(run())
}

// run runs the checks and returns the exit code (so that deferred cleanups run).
func run() int {
	address := flag.String("address", "", "daemon socket")
	ns := flag.String("namespace", "default", "namespace holding the image")
	image := flag.String("image", "example.com/busybox:latest", "busybox image (already imported)")
	rt := flag.String("runtime", "io.containerd.runc.v2", "runtime for the containers")
	daemon := flag.String("daemon", "containerd", "berthd or containerd (for notes only)")
	bindir := flag.String("bindir", "", "directory of helper binaries (runc-wrapper, ...)")
	run := flag.String("run", "", "only run checks whose name matches this regular expression")
	list := flag.Bool("list", false, "list the checks and exit")
	flag.Parse()

	if *list {
		for _, c := range ordered() {
			fmt.Println(c.name)
		}
		return 0
	}
	if *address == "" || *bindir == "" {
		fmt.Fprintln(os.Stderr, "goclient: -address and -bindir are required")
		return 2
	}
	var re *regexp.Regexp
	if *run != "" {
		var err error
		if re, err = regexp.Compile(*run); err != nil {
			fmt.Fprintf(os.Stderr, "goclient: -run: %v\n", err)
			return 2
		}
	}
	tmp, err := os.MkdirTemp("", "goclient-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "goclient: %v\n", err)
		return 2
	}
	defer os.RemoveAll(tmp)
	fifoDir := tmp + "/fifo"
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "goclient: %v\n", err)
		return 2
	}

	client, err := containerd.New(*address,
		containerd.WithDefaultNamespace(*ns),
		containerd.WithTimeout(10*time.Second))
	if err != nil {
		fmt.Printf("FAIL connect: %v\n0 passed, 1 failed\n", err)
		return 1
	}
	defer client.Close()

	e := &env{
		client: client, address: *address, ns: *ns, image: *image, runtime: *rt,
		daemon: *daemon, bindir: *bindir, tmp: tmp, fifoDir: fifoDir,
	}
	base := namespaces.WithNamespace(context.Background(), *ns)
	if err := ensureUnpacked(base, e); err != nil {
		fmt.Printf("FAIL setup: %v\n0 passed, 1 failed\n", err)
		return 1
	}

	passed, failed := 0, 0
	for _, c := range ordered() {
		if re != nil && !re.MatchString(c.name) {
			continue
		}
		start := time.Now()
		err := runOne(base, e, c)
		if err != nil {
			failed++
			fmt.Printf("FAIL %s: %s\n", c.name, oneLine(err.Error()))
		} else {
			passed++
			fmt.Printf("PASS %s\n", c.name)
		}
		fmt.Fprintf(os.Stderr, "note %s: took %s\n", c.name, time.Since(start).Round(time.Millisecond))
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func ordered() []check {
	checksMu.Lock()
	defer checksMu.Unlock()
	out := make([]check, len(checks))
	copy(out, checks)
	return out
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// runOne runs a check with its timeout, turns a panic into a failure, then runs the cleanups
// with a fresh context; a cleanup error fails the check too.
func runOne(base context.Context, e *env, c check) (err error) {
	t := &T{e: e, name: c.name}
	timeout := c.timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(base, timeout)
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		err = c.fn(ctx, t)
	}()
	cancel()
	if err == nil && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("check exceeded its %s timeout", timeout)
	}
	cctx, ccancel := context.WithTimeout(base, 30*time.Second)
	defer ccancel()
	var cerrs []string
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		if cerr := t.cleanups[i](cctx); cerr != nil {
			cerrs = append(cerrs, cerr.Error())
		}
	}
	if len(cerrs) > 0 {
		msg := "cleanup: " + strings.Join(cerrs, "; ")
		if err == nil {
			return fmt.Errorf("%s", msg)
		}
		return fmt.Errorf("%v (and %s)", err, msg)
	}
	return err
}
