package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/runtime/linux/runctypes"
	"github.com/containerd/containerd/runtime/v2/runc/options"
)

func init() {
	register("runtime_by_name", 0, checkRuntimeByName)
	register("runc_options_binaryname_root", 60*time.Second, checkRuncOptions)
	register("runctypes_legacy_options_v1_linux", 0, checkLegacyRuncOptions)
	register("missing_runtime_binary_fails_at_create", 0, checkMissingRuntimeBinary)
	register("shim_cgroup", 0, checkShimCgroup)
}

// checkRuntimeByName: a runtime name resolves to containerd-shim-<name>-v2 on PATH.
func checkRuntimeByName(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{runtime: "io.containerd.berthalt.v2"}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running {
		return fmt.Errorf("status %v %v, want running", st.Status, err)
	}
	shims := shimPids(id)
	if len(shims) != 1 {
		return fmt.Errorf("want one shim process for %s, found %v", id, shims)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", shims[0])); exe != "" {
		t.notef("shim executable %s", exe)
	}
	return killWaitDelete(ctx, task, ch)
}

// wrapperLog is where the runc-wrapper script of the harness appends its arguments.
func (t *T) wrapperLog() string { return filepath.Join(t.e.bindir, "runc-wrapper.log") }

// wrapperCalls returns the wrapper's logged invocations that mention id.
func (t *T) wrapperCalls(id string) []string {
	b, _ := os.ReadFile(t.wrapperLog())
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, id) {
			out = append(out, l)
		}
	}
	return out
}

// checkRuncOptions: BinaryName and Root of the runc v2 options reach runc, for the runtime
// under test and for containerd's own runc shim.
func checkRuncOptions(ctx context.Context, t *T) error {
	wrapper := filepath.Join(t.e.bindir, "runc-wrapper")
	if _, err := os.Stat(wrapper); err != nil {
		return fmt.Errorf("harness did not provide %s: %w", wrapper, err)
	}
	// The runtime under test, the runc v2 runtime by name (containerd's own shim under
	// containerd; whatever the daemon maps the name to otherwise), and containerd's runc shim
	// by absolute path (a runtime name may be the shim binary's path).
	rts := []string{t.e.runtime}
	if t.e.runtime != "io.containerd.runc.v2" {
		rts = append(rts, "io.containerd.runc.v2")
	}
	rts = append(rts, runcShimPath)
	var fails []string
	for _, rt := range rts {
		if err := runcOptionsWith(ctx, t, rt, wrapper); err != nil {
			fails = append(fails, fmt.Sprintf("[%s] %v", rt, err))
		}
	}
	if len(fails) > 0 {
		return errors.New(strings.Join(fails, "; "))
	}
	return nil
}

func runcOptionsWith(ctx context.Context, t *T, rt, wrapper string) error {
	root, err := os.MkdirTemp(t.e.tmp, "runc-root-")
	if err != nil {
		return err
	}
	id := t.id(shortRuntime(rt))
	opts := &options.Options{BinaryName: wrapper, Root: root}
	c, err := t.container(ctx, id, ctrOpts{runtime: rt, rtOpts: opts}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	shims := shimPids(id)
	if len(shims) != 1 {
		return fmt.Errorf("want one shim process for %s, found %v", id, shims)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", shims[0]))
	t.notef("%s: shim %s", rt, exe)
	if rt == runcShimPath && exe != runcShimPath {
		return fmt.Errorf("runtime %s ran shim %s", rt, exe)
	}
	// containerd's runc shim puts each namespace under its own directory of Root.
	wantRoot := filepath.Join(root, t.e.ns)
	var create string
	for _, l := range t.wrapperCalls(id) {
		if strings.Contains(l, " create ") || strings.HasPrefix(l, "create ") {
			create = l
		}
	}
	if create == "" {
		return fmt.Errorf("runc-wrapper never ran create for %s (log: %q)", id, t.wrapperCalls(id))
	}
	if !strings.Contains(create, "--root "+wantRoot+" ") {
		return fmt.Errorf("create did not get --root %s: %q", wantRoot, create)
	}
	if _, err := os.Stat(filepath.Join(wantRoot, id, "state.json")); err != nil {
		return fmt.Errorf("no runc state under the Root option: %w", err)
	}
	if err := killWaitDelete(ctx, task, ch); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(wantRoot, id)); !os.IsNotExist(err) {
		return fmt.Errorf("runc state %s left after task delete (%v)", filepath.Join(wantRoot, id), err)
	}
	var del bool
	for _, l := range t.wrapperCalls(id) {
		if strings.Contains(l, " delete ") && strings.Contains(l, "--root "+wantRoot+" ") {
			del = true
		}
	}
	if !del {
		return fmt.Errorf("runc delete not run through the wrapper with --root %s: %q", wantRoot, t.wrapperCalls(id))
	}
	return nil
}

// runcShimPath is containerd's own runc v2 shim (Debian's containerd package).
const runcShimPath = "/usr/bin/containerd-shim-runc-v2"

func shortRuntime(rt string) string {
	if filepath.IsAbs(rt) {
		return "path"
	}
	parts := strings.Split(rt, ".")
	if len(parts) >= 2 {
		return parts[len(parts)-2]
	}
	return "rt"
}

// checkLegacyRuncOptions: the legacy runctypes.RuncOptions of the v1 linux runtime
// (io.containerd.runtime.v1.linux): Runtime (the runc binary) and RuntimeRoot.
func checkLegacyRuncOptions(ctx context.Context, t *T) error {
	wrapper := filepath.Join(t.e.bindir, "runc-wrapper")
	root, err := os.MkdirTemp(t.e.tmp, "runc-root-v1-")
	if err != nil {
		return err
	}
	id := t.id("")
	opts := &runctypes.RuncOptions{Runtime: wrapper, RuntimeRoot: root}
	c, err := t.container(ctx, id, ctrOpts{runtime: "io.containerd.runtime.v1.linux", rtOpts: opts}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	wantRoot := filepath.Join(root, t.e.ns)
	var create string
	for _, l := range t.wrapperCalls(id) {
		if strings.Contains(l, " create ") {
			create = l
		}
	}
	if create == "" {
		return fmt.Errorf("runc-wrapper never ran create for %s", id)
	}
	if !strings.Contains(create, "--root "+wantRoot+" ") {
		return fmt.Errorf("create did not get --root %s: %q", wantRoot, create)
	}
	return killWaitDelete(ctx, task, ch)
}

// checkMissingRuntimeBinary: a BinaryName that does not exist fails NewTask and leaves no
// task and no shim behind.
func checkMissingRuntimeBinary(ctx context.Context, t *T) error {
	id := t.id("")
	missing := filepath.Join(t.e.tmp, "no-such-runc-"+randHex(4))
	c, err := t.container(ctx, id, ctrOpts{rtOpts: &options.Options{BinaryName: missing}}, "sleep", "30")
	if err != nil {
		return err
	}
	task, err := c.NewTask(ctx, t.io(nil))
	if err == nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		return fmt.Errorf("NewTask with BinaryName %s succeeded", missing)
	}
	t.notef("NewTask error: %v", err)
	if !strings.Contains(err.Error(), missing) && !strings.Contains(err.Error(), "runtime") {
		return fmt.Errorf("NewTask error does not name the binary nor the runtime: %v", err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("container delete after the failed create: %w", err)
	}
	if listed, err := taskListed(ctx, t.e, id); err != nil || listed {
		return fmt.Errorf("task %s listed after the failed create (%v)", id, err)
	}
	return waitNoShim(id, 2*time.Second)
}

// cgroupHierarchies lists the cgroup directories under /sys/fs/cgroup (v1 hierarchies and
// the unified one).
func cgroupHierarchies() []string {
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	if len(out) == 0 {
		out = append(out, "/sys/fs/cgroup")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		// cgroup v2 only.
		out = []string{"/sys/fs/cgroup"}
	}
	return out
}

// checkShimCgroup: the ShimCgroup option puts the shim process into that cgroup.
func checkShimCgroup(ctx context.Context, t *T) error {
	cg := "/berth-gotest-" + randHex(4)
	var made []string
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, cg)
		if err := os.Mkdir(d, 0o755); err == nil {
			made = append(made, d)
			// A new cpuset cgroup has no cpus or mems: nothing could join it.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
					_ = os.WriteFile(filepath.Join(d, f), b, 0o644)
				}
			}
		}
	}
	if len(made) == 0 {
		return fmt.Errorf("could not create cgroup %s in any hierarchy", cg)
	}
	t.cleanup(func(ctx context.Context) error {
		var left []string
		for _, d := range made {
			ok := poll(5*time.Second, 50*time.Millisecond, func() bool {
				err := os.Remove(d)
				return err == nil || os.IsNotExist(err)
			})
			if !ok {
				left = append(left, d)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("cgroups not removable (still in use?): %v", left)
		}
		return nil
	})
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{rtOpts: &options.Options{ShimCgroup: cg}}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	shims := shimPids(id)
	if len(shims) != 1 {
		return fmt.Errorf("want one shim process for %s, found %v", id, shims)
	}
	got := cgroupOf(shims[0], "pids")
	if got != cg {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", shims[0]))
		return fmt.Errorf("shim %d is in pids cgroup %q, want %q (/proc/pid/cgroup: %s)", shims[0], got, cg, strings.ReplaceAll(string(b), "\n", " "))
	}
	if err := killWaitDelete(ctx, task, ch); err != nil {
		return err
	}
	return waitNoShim(id, 5*time.Second)
}
