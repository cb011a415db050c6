package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// ensureUnpacked unpacks the image into the default snapshotter when the import did not.
func ensureUnpacked(ctx context.Context, e *env) error {
	img, err := e.client.GetImage(ctx, e.image)
	if err != nil {
		return fmt.Errorf("get image %s: %w", e.image, err)
	}
	ok, err := img.IsUnpacked(ctx, containerd.DefaultSnapshotter)
	if err != nil {
		return fmt.Errorf("image %s IsUnpacked: %w", e.image, err)
	}
	if !ok {
		if err := img.Unpack(ctx, containerd.DefaultSnapshotter); err != nil {
			return fmt.Errorf("unpack %s: %w", e.image, err)
		}
	}
	return nil
}

// buffer is a bytes.Buffer safe for the copy goroutines of cio.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// io returns a FIFO-based IO creator (in the run's FIFO dir) whose output goes to out.
func (t *T) io(out *buffer) cio.Creator {
	if out == nil {
		out = &buffer{}
	}
	return cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(t.e.fifoDir))
}

type ctrOpts struct {
	runtime  string      // default: -runtime
	rtOpts   interface{} // runtime options (nil: none)
	labels   map[string]string
	specOpts []oci.SpecOpts
}

// container creates a container of the busybox image running args, with a new snapshot
// keyed by its id, and registers its removal (task killed and deleted, container deleted
// with its snapshot).
func (t *T) container(ctx context.Context, id string, o ctrOpts, args ...string) (containerd.Container, error) {
	img, err := t.e.client.GetImage(ctx, t.e.image)
	if err != nil {
		return nil, fmt.Errorf("get image: %w", err)
	}
	rt := o.runtime
	if rt == "" {
		rt = t.e.runtime
	}
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img)}
	if len(args) > 0 {
		specOpts = append(specOpts, oci.WithProcessArgs(args...))
	}
	specOpts = append(specOpts, o.specOpts...)
	opts := []containerd.NewContainerOpts{
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(rt, o.rtOpts),
		containerd.WithNewSpec(specOpts...),
	}
	if o.labels != nil {
		opts = append(opts, containerd.WithContainerLabels(o.labels))
	}
	c, err := t.e.client.NewContainer(ctx, id, opts...)
	if err != nil {
		return nil, fmt.Errorf("new container %s: %w", id, err)
	}
	t.cleanup(func(ctx context.Context) error { return removeContainer(ctx, c) })
	return c, nil
}

// removeContainer kills and deletes the container's task (if any), then deletes the
// container and its snapshot; NotFound is not an error.
func removeContainer(ctx context.Context, c containerd.Container) error {
	var errs []string
	task, err := c.Task(ctx, nil)
	switch {
	case err == nil:
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Sprintf("delete task %s: %v", c.ID(), err))
		}
	case !errdefs.IsNotFound(err):
		errs = append(errs, fmt.Sprintf("load task %s: %v", c.ID(), err))
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Sprintf("delete container %s: %v", c.ID(), err))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// startTask creates and starts the container's task; it returns the task and its exit channel.
func (t *T) startTask(ctx context.Context, c containerd.Container, out *buffer) (containerd.Task, <-chan containerd.ExitStatus, error) {
	task, err := c.NewTask(ctx, t.io(out))
	if err != nil {
		return nil, nil, fmt.Errorf("new task: %w", err)
	}
	ch, err := task.Wait(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("wait: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		return nil, nil, fmt.Errorf("start: %w", err)
	}
	return task, ch, nil
}

// waitExit waits for an exit status from ch (bounded by ctx).
func waitExit(ctx context.Context, ch <-chan containerd.ExitStatus) (uint32, error) {
	select {
	case st := <-ch:
		code, _, err := st.Result()
		if err != nil {
			return 0, fmt.Errorf("exit status: %w", err)
		}
		return code, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("no exit status: %w", ctx.Err())
	}
}

// killWaitDelete sends SIGKILL, waits for the exit and deletes the task.
func killWaitDelete(ctx context.Context, task containerd.Task, ch <-chan containerd.ExitStatus) error {
	if err := task.Kill(ctx, 9); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	if _, err := waitExit(ctx, ch); err != nil {
		return err
	}
	if _, err := task.Delete(ctx); err != nil {
		return fmt.Errorf("delete task: %w", err)
	}
	return nil
}

// execSpec is the container's process spec with other args (and terminal setting).
func execSpec(ctx context.Context, c containerd.Container, terminal bool, args ...string) (*specs.Process, error) {
	spec, err := c.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("container spec: %w", err)
	}
	p := *spec.Process
	p.Args = args
	p.Terminal = terminal
	p.Cwd = "/"
	return &p, nil
}

// taskListed says whether the tasks service lists a task for id.
func taskListed(ctx context.Context, e *env, id string) (bool, error) {
	resp, err := e.client.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return false, fmt.Errorf("list tasks: %w", err)
	}
	for _, p := range resp.Tasks {
		if p.ID == id || p.ContainerID == id {
			return true, nil
		}
	}
	return false, nil
}

// ---- /proc helpers ----

type procStat struct {
	pid   int
	comm  string
	state string
	ppid  int
	start uint64
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open || close+2 > len(s) {
		return procStat{}, false
	}
	f := strings.Fields(s[close+2:])
	if len(f) < 20 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return procStat{pid: pid, comm: s[open+1 : close], state: f[0], ppid: ppid, start: start}, true
}

func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// cgroupOf returns the process's cgroup path in the v1 hierarchy of controller (or the
// cgroup v2 path when there is no such v1 hierarchy).
func cgroupOf(pid int, controller string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	v2 := ""
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2]
			}
		}
	}
	return v2
}

// shimPids lists the shim processes serving id: a program named containerd-shim* with
// "-id <id>" on its command line.
func shimPids(id string) []int {
	var out []int
	for _, pid := range allPids() {
		args := cmdline(pid)
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 1; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == id {
				if st, ok := readStat(pid); ok && st.state != "Z" {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}

// waitNoShim waits (up to timeout) until no shim process serves id.
func waitNoShim(id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := shimPids(id)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var desc []string
			for _, p := range pids {
				desc = append(desc, fmt.Sprintf("%d (%s)", p, strings.Join(cmdline(p), " ")))
			}
			return fmt.Errorf("shim for %s still running %s after its removal: %s", id, timeout, strings.Join(desc, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// containerProcs lists the container's processes on the host: those in its pids cgroup
// (path ending in /<ns>/<id>) and every descendant of its init process.
func containerProcs(ns, id string, initPid int) []procStat {
	suffix := "/" + ns + "/" + id
	stats := map[int]procStat{}
	children := map[int][]int{}
	for _, pid := range allPids() {
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		stats[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}
	found := map[int]procStat{}
	for pid, st := range stats {
		if strings.HasSuffix(cgroupOf(pid, "pids"), suffix) {
			found[pid] = st
		}
	}
	queue := []int{initPid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if st, ok := stats[p]; ok {
			found[p] = st
		}
		queue = append(queue, children[p]...)
	}
	out := make([]procStat, 0, len(found))
	for _, st := range found {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// stillThere returns the recorded processes that still exist (zombies included), ignoring
// a pid reused by another process (different start time).
func stillThere(recorded []procStat) []procStat {
	var out []procStat
	for _, r := range recorded {
		if st, ok := readStat(r.pid); ok && st.start == r.start {
			out = append(out, st)
		}
	}
	return out
}

func describe(ps []procStat) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%d(%s,%s)", p.pid, p.comm, p.state))
	}
	return strings.Join(s, " ")
}

// poll calls f every interval until it returns true or timeout passes.
func poll(timeout, interval time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}
