package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/rootfs"
	"github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/typeurl"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
)

func init() {
	register("kill_and_start_after_exit", 0, checkKillAfterExit)
	register("task_update_resources", 0, checkTaskUpdate)
	register("pids_exec_process_details", 0, checkPidsExecDetails)
	register("task_log_file_uri", 0, checkLogFileURI)
	register("task_binary_log_uri", 0, checkBinaryLogURI)
	register("events_exec_pause_resume", 0, checkEventsExec)
	register("content_info_update_labels", 0, checkContentLabels)
	register("snapshots_prepare_commit_view_remove", 0, checkSnapshotsDirect)
	register("diff_compare_apply", 60*time.Second, checkDiff)
}

// checkKillAfterExit: signals and starts after the init process exited.
func checkKillAfterExit(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "true")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	if code, err := waitExit(ctx, ch); err != nil || code != 0 {
		return fmt.Errorf("wait: %d %v", code, err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); !errdefs.IsNotFound(err) {
		return fmt.Errorf("kill after exit: %v, want NotFound", err)
	}
	if err := task.Start(ctx); err == nil {
		return errors.New("start after exit succeeded")
	}
	// Wait again: the status is still there, immediately.
	ch2, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("second wait: %w", err)
	}
	select {
	case st := <-ch2:
		if st.ExitCode() != 0 {
			return fmt.Errorf("second wait: exit %d", st.ExitCode())
		}
	case <-time.After(5 * time.Second):
		return errors.New("second wait on an exited task did not return")
	}
	_, err = task.Delete(ctx)
	return err
}

func checkTaskUpdate(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	limit := int64(64 << 20)
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
	})); err != nil {
		return fmt.Errorf("Update memory limit: %w", err)
	}
	path := cgroupOf(int(task.Pid()), "memory")
	file := filepath.Join("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes")
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		file = filepath.Join("/sys/fs/cgroup", path, "memory.max")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	if got, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); got != limit {
		return fmt.Errorf("%s = %q after Update, want %d", file, strings.TrimSpace(string(b)), limit)
	}
	return killWaitDelete(ctx, task, ch)
}

func checkPidsExecDetails(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	spec, err := execSpec(ctx, c, false, "sleep", "30")
	if err != nil {
		return err
	}
	p, err := task.Exec(ctx, "e1", spec, t.io(nil))
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	pch, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return fmt.Errorf("exec start: %w", err)
	}
	pids, err := task.Pids(ctx)
	if err != nil {
		return fmt.Errorf("Pids: %w", err)
	}
	var found bool
	var seen []string
	for _, pi := range pids {
		desc := strconv.Itoa(int(pi.Pid))
		if pi.Info != nil {
			v, err := typeurl.UnmarshalAny(pi.Info)
			if err != nil {
				return fmt.Errorf("decode Pids info of %d (%s): %w", pi.Pid, pi.Info.GetTypeUrl(), err)
			}
			if d, ok := v.(*options.ProcessDetails); ok {
				desc += "/" + d.ExecID
				if pi.Pid == p.Pid() && d.ExecID == "e1" {
					found = true
				}
			}
		}
		seen = append(seen, desc)
	}
	if !found {
		return fmt.Errorf("Pids %v: no entry for exec e1 (pid %d) with ProcessDetails", seen, p.Pid())
	}
	if err := p.Kill(ctx, syscall.SIGKILL); err != nil {
		return err
	}
	if _, err := waitExit(ctx, pch); err != nil {
		return err
	}
	if _, err := p.Delete(ctx); err != nil {
		return err
	}
	return killWaitDelete(ctx, task, ch)
}

// checkLogFileURI: a file:// IO URI makes the shim write both streams to the file.
func checkLogFileURI(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sh", "-c", "echo to-stdout; echo to-stderr >&2")
	if err != nil {
		return err
	}
	logPath := filepath.Join(t.e.tmp, id+".log")
	task, err := c.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		return fmt.Errorf("new task with a log file: %w", err)
	}
	ch, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if code, err := waitExit(ctx, ch); err != nil || code != 0 {
		return fmt.Errorf("wait: %d %v", code, err)
	}
	var text string
	poll(3*time.Second, 20*time.Millisecond, func() bool {
		b, _ := os.ReadFile(logPath)
		text = string(b)
		return strings.Contains(text, "to-stdout") && strings.Contains(text, "to-stderr")
	})
	if !strings.Contains(text, "to-stdout\n") || !strings.Contains(text, "to-stderr\n") {
		return fmt.Errorf("log file %s holds %q", logPath, text)
	}
	_, err = task.Delete(ctx)
	return err
}

const loggerFlag = "-gotest-logger"

// runLogger is the logging binary of a binary:// IO URI. containerd's shim runs it with
// the URI's query as arguments (key, value, ...), the container's stdout and stderr as fds 3
// and 4, and a pipe on fd 5 that it closes when ready. It records what it got (arguments,
// environment, whether fd 5 was there) and then the streams, in the file named by its
// argument (also when the argument came as "key=value" or URL-encoded, to say so).
func runLogger(args []string) int {
	path := ""
	if len(args) >= 2 && args[0] == loggerFlag {
		path = args[1]
	} else if strings.HasPrefix(args[0], loggerFlag+"=") {
		path = strings.TrimPrefix(args[0], loggerFlag+"=")
	}
	if p, err := url.QueryUnescape(path); err == nil {
		path = p
	}
	if path == "" {
		return 1
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 1
	}
	defer f.Close()
	fmt.Fprintf(f, "args %q\n", args)
	fmt.Fprintf(f, "env %s/%s\n", os.Getenv("CONTAINER_NAMESPACE"), os.Getenv("CONTAINER_ID"))
	var st syscall.Stat_t
	if syscall.Fstat(5, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFIFO {
		fmt.Fprintln(f, "ready-fd ok")
		os.NewFile(5, "ready").Close()
	} else {
		fmt.Fprintln(f, "ready-fd missing")
	}
	stdout, stderr := os.NewFile(3, "stdout"), os.NewFile(4, "stderr")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range []struct {
		name string
		r    io.Reader
	}{{"stdout", stdout}, {"stderr", stderr}} {
		wg.Add(1)
		go func(name string, r io.Reader) {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					mu.Lock()
					fmt.Fprintf(f, "%s %s", name, buf[:n])
					mu.Unlock()
				}
				if err != nil {
					return
				}
			}
		}(s.name, s.r)
	}
	wg.Wait()
	return 0
}

// checkBinaryLogURI: a binary:// IO URI makes the shim run a logging binary with the
// container's streams on fds 3 and 4 (this program, in logger mode).
func checkBinaryLogURI(ctx context.Context, t *T) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sh", "-c", "echo bin-stdout; sleep 0.2; echo bin-stderr >&2")
	if err != nil {
		return err
	}
	logPath := filepath.Join(t.e.tmp, id+".binlog")
	task, err := c.NewTask(ctx, cio.BinaryIO(self, map[string]string{loggerFlag: logPath}))
	if err != nil {
		return fmt.Errorf("new task with a logging binary: %w", err)
	}
	ch, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	code, err := waitExit(ctx, ch)
	if err != nil {
		return err
	}
	want := []string{
		fmt.Sprintf("args %q\n", []string{loggerFlag, logPath}),
		"env " + t.e.ns + "/" + id + "\n",
		"ready-fd ok\n",
		"stdout bin-stdout\n",
		"stderr bin-stderr\n",
	}
	var text string
	ok := poll(3*time.Second, 20*time.Millisecond, func() bool {
		b, _ := os.ReadFile(logPath)
		text = string(b)
		for _, w := range want {
			if !strings.Contains(text, w) {
				return false
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("logging binary wrote %q, want %q (container exit %d)", text, want, code)
	}
	if code != 0 {
		return fmt.Errorf("container exit %d, want 0", code)
	}
	_, err = task.Delete(ctx)
	return err
}

func checkEventsExec(ctx context.Context, t *T) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errs := t.e.client.EventService().Subscribe(sctx, fmt.Sprintf(`namespace==%s`, t.e.ns))
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	spec, err := execSpec(ctx, c, false, "sh", "-c", "exit 4")
	if err != nil {
		return err
	}
	p, err := task.Exec(ctx, "ex", spec, t.io(nil))
	if err != nil {
		return err
	}
	pch, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	if _, err := waitExit(ctx, pch); err != nil {
		return err
	}
	if _, err := p.Delete(ctx); err != nil {
		return err
	}
	if err := task.Pause(ctx); err != nil {
		return err
	}
	if err := task.Resume(ctx); err != nil {
		return err
	}
	want := []string{
		"/tasks/exec-added ex", "/tasks/exec-started ex " + strconv.Itoa(int(p.Pid())),
		"/tasks/exit ex 4", "/tasks/paused", "/tasks/resumed",
	}
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case env := <-evs:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				continue
			}
			switch e := v.(type) {
			case *eventstypes.TaskExecAdded:
				if e.ContainerID == id {
					got = append(got, env.Topic+" "+e.ExecID)
				}
			case *eventstypes.TaskExecStarted:
				if e.ContainerID == id {
					got = append(got, fmt.Sprintf("%s %s %d", env.Topic, e.ExecID, e.Pid))
				}
			case *eventstypes.TaskExit:
				if e.ContainerID == id {
					got = append(got, fmt.Sprintf("%s %s %d", env.Topic, e.ID, e.ExitStatus))
				}
			case *eventstypes.TaskPaused:
				if e.ContainerID == id {
					got = append(got, env.Topic)
				}
			case *eventstypes.TaskResumed:
				if e.ContainerID == id {
					got = append(got, env.Topic)
				}
			}
		case err := <-errs:
			return fmt.Errorf("subscription: %w", err)
		case <-timeout:
			return fmt.Errorf("events %q, want %q", got, want)
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		return fmt.Errorf("events %q, want %q", got, want)
	}
	return killWaitDelete(ctx, task, ch)
}

func checkContentLabels(ctx context.Context, t *T) error {
	cs := t.e.client.ContentStore()
	lctx, done, err := t.e.client.WithLease(ctx)
	if err != nil {
		return err
	}
	t.cleanup(func(ctx context.Context) error { return done(ctx) })
	blob := []byte("labels " + randHex(16))
	d := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	if err := content.WriteBlob(lctx, cs, t.id("ref"), bytes.NewReader(blob), d,
		content.WithLabels(map[string]string{"gotest/a": "1"})); err != nil {
		return fmt.Errorf("WriteBlob: %w", err)
	}
	t.cleanup(func(ctx context.Context) error { _ = cs.Delete(ctx, d.Digest); return nil })
	info, err := cs.Info(ctx, d.Digest)
	if err != nil {
		return err
	}
	if info.Labels["gotest/a"] != "1" {
		return fmt.Errorf("labels after commit %v", info.Labels)
	}
	info, err = cs.Update(ctx, content.Info{Digest: d.Digest, Labels: map[string]string{"gotest/b": "2"}}, "labels.gotest/b")
	if err != nil {
		return fmt.Errorf("Update labels.gotest/b: %w", err)
	}
	if info.Labels["gotest/a"] != "1" || info.Labels["gotest/b"] != "2" {
		return fmt.Errorf("labels after a field-path update %v", info.Labels)
	}
	info, err = cs.Update(ctx, content.Info{Digest: d.Digest, Labels: map[string]string{"gotest/c": "3"}}, "labels")
	if err != nil {
		return fmt.Errorf("Update labels: %w", err)
	}
	if len(info.Labels) != 1 || info.Labels["gotest/c"] != "3" {
		return fmt.Errorf("labels after replacing them all %v", info.Labels)
	}
	var walked int
	if err := cs.Walk(ctx, func(i content.Info) error {
		if i.Digest == d.Digest {
			walked++
		}
		return nil
	}, `labels."gotest/c"==3`); err != nil {
		return fmt.Errorf("Walk with a label filter: %w", err)
	}
	if walked != 1 {
		return fmt.Errorf("Walk(labels.\"gotest/c\"==3) saw the blob %d times", walked)
	}
	ra, err := cs.ReaderAt(ctx, d)
	if err != nil {
		return fmt.Errorf("ReaderAt: %w", err)
	}
	defer ra.Close()
	part := make([]byte, 5)
	if _, err := ra.ReadAt(part, 2); err != nil || string(part) != string(blob[2:7]) {
		return fmt.Errorf("ReadAt(2) = %q %v, want %q", part, err, blob[2:7])
	}
	return nil
}

// imageChainID returns the busybox image's top chain id and its snapshotter.
func imageChainID(ctx context.Context, t *T) (string, error) {
	img, err := t.e.client.GetImage(ctx, t.e.image)
	if err != nil {
		return "", err
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return "", err
	}
	return identity.ChainID(diffIDs).String(), nil
}

func checkSnapshotsDirect(ctx context.Context, t *T) error {
	sn := t.e.client.SnapshotService(containerd.DefaultSnapshotter)
	parent, err := imageChainID(ctx, t)
	if err != nil {
		return err
	}
	active, committed, view := t.id("active"), t.id("committed"), t.id("view")
	t.cleanup(func(ctx context.Context) error {
		for _, k := range []string{view, active, committed} {
			if err := sn.Remove(ctx, k); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("remove snapshot %s: %w", k, err)
			}
		}
		return nil
	})
	mounts, err := sn.Prepare(ctx, active, parent, snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "gotest"}))
	if err != nil {
		return fmt.Errorf("Prepare: %w", err)
	}
	if len(mounts) == 0 {
		return errors.New("Prepare returned no mounts")
	}
	if _, err := sn.Prepare(ctx, active, parent); !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("second Prepare of %s: %v, want AlreadyExists", active, err)
	}
	if err := mount.WithTempMount(ctx, mounts, func(root string) error {
		return os.WriteFile(filepath.Join(root, "gotest-file"), []byte("snap"), 0o644)
	}); err != nil {
		return fmt.Errorf("write into the active snapshot: %w", err)
	}
	if err := sn.Commit(ctx, committed, active, snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "gotest"})); err != nil {
		return fmt.Errorf("Commit: %w", err)
	}
	if _, err := sn.Stat(ctx, active); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Stat of the committed active key: %v, want NotFound", err)
	}
	info, err := sn.Stat(ctx, committed)
	if err != nil || info.Kind != snapshots.KindCommitted || info.Parent != parent {
		return fmt.Errorf("Stat committed: %+v %v", info, err)
	}
	// Rooted like the other two: no lease holds these snapshots, and a collection that
	// another check's deletions scheduled may run at any moment.
	vm, err := sn.View(ctx, view, committed, snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "gotest"}))
	if err != nil {
		return fmt.Errorf("View: %w", err)
	}
	var got []byte
	if err := mount.WithReadonlyTempMount(ctx, vm, func(root string) error {
		var err error
		got, err = os.ReadFile(filepath.Join(root, "gotest-file"))
		if err != nil {
			return err
		}
		_, err = os.Stat(filepath.Join(root, "bin", "busybox"))
		return err
	}); err != nil {
		return fmt.Errorf("read the view: %w", err)
	}
	if string(got) != "snap" {
		return fmt.Errorf("view has %q", got)
	}
	if err := sn.Remove(ctx, committed); !errdefs.IsFailedPrecondition(err) {
		return fmt.Errorf("Remove of a snapshot with a child view: %v, want FailedPrecondition", err)
	}
	var walked []string
	if err := sn.Walk(ctx, func(ctx context.Context, i snapshots.Info) error {
		walked = append(walked, i.Name)
		return nil
	}, fmt.Sprintf("parent==%s", committed)); err != nil {
		return fmt.Errorf("Walk(parent==...): %w", err)
	}
	if len(walked) != 1 || walked[0] != view {
		return fmt.Errorf("Walk(parent==%s) = %v, want [%s]", committed, walked, view)
	}
	for _, k := range []string{view, committed} {
		if err := sn.Remove(ctx, k); err != nil {
			return fmt.Errorf("Remove %s: %w", k, err)
		}
	}
	return nil
}

// checkDiff: Compare of a changed snapshot with its parent makes a layer; Apply of that
// layer onto the parent reproduces the change.
func checkDiff(ctx context.Context, t *T) error {
	c := t.e.client
	lctx, done, err := c.WithLease(ctx)
	if err != nil {
		return err
	}
	t.cleanup(func(ctx context.Context) error { return done(ctx) })
	ctx = lctx
	sn := c.SnapshotService(containerd.DefaultSnapshotter)
	parent, err := imageChainID(ctx, t)
	if err != nil {
		return err
	}
	k1, k2 := t.id("upper"), t.id("apply")
	t.cleanup(func(ctx context.Context) error {
		_ = sn.Remove(ctx, k1)
		_ = sn.Remove(ctx, k2)
		return nil
	})
	mounts, err := sn.Prepare(ctx, k1, parent)
	if err != nil {
		return fmt.Errorf("Prepare: %w", err)
	}
	if err := mount.WithTempMount(ctx, mounts, func(root string) error {
		if err := os.WriteFile(filepath.Join(root, "diff-added"), []byte("added"), 0o644); err != nil {
			return err
		}
		return os.Remove(filepath.Join(root, "bin", "ls"))
	}); err != nil {
		return fmt.Errorf("change the snapshot: %w", err)
	}
	desc, err := rootfs.CreateDiff(ctx, k1, sn, c.DiffService())
	if err != nil {
		return fmt.Errorf("CreateDiff (Compare): %w", err)
	}
	info, err := c.ContentStore().Info(ctx, desc.Digest)
	if err != nil {
		return fmt.Errorf("diff layer not in the content store: %w", err)
	}
	if info.Labels["containerd.io/uncompressed"] == "" {
		t.notef("diff layer %s (%s) has no containerd.io/uncompressed label: %v", desc.Digest, desc.MediaType, info.Labels)
	}
	t.cleanup(func(ctx context.Context) error { _ = c.ContentStore().Delete(ctx, desc.Digest); return nil })
	m2, err := sn.Prepare(ctx, k2, parent)
	if err != nil {
		return fmt.Errorf("Prepare for apply: %w", err)
	}
	if _, err := c.DiffService().Apply(ctx, desc, m2); err != nil {
		return fmt.Errorf("Apply: %w", err)
	}
	return mount.WithReadonlyTempMount(ctx, m2, func(root string) error {
		b, err := os.ReadFile(filepath.Join(root, "diff-added"))
		if err != nil || string(b) != "added" {
			return fmt.Errorf("applied layer: diff-added = %q %v", b, err)
		}
		if _, err := os.Lstat(filepath.Join(root, "bin", "ls")); !os.IsNotExist(err) {
			return fmt.Errorf("applied layer: removed bin/ls still there (%v)", err)
		}
		if _, err := os.Stat(filepath.Join(root, "bin", "busybox")); err != nil {
			return fmt.Errorf("applied layer: bin/busybox gone: %v", err)
		}
		return nil
	})
}
