package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/stats/v1"
	"github.com/containerd/containerd"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl"
	"github.com/opencontainers/runtime-spec/specs-go"
)

func init() {
	register("task_lifecycle_status_pause_pids_metrics", 0, checkTaskLifecycle)
	register("task_output_and_exit_code", 0, checkTaskOutput)
	register("task_stdin_closeio", 0, checkTaskStdin)
	register("exec_output_and_exit_code", 0, checkExecOutput)
	register("resize_without_terminal", 0, checkResizeWithoutTerminal)
	register("exec_with_terminal", 0, checkExecWithTerminal)
	register("kill_init_kills_children_own_pidns", 0, func(ctx context.Context, t *T) error {
		return checkKillInit(ctx, t, false)
	})
	register("kill_init_kills_children_host_pidns", 0, func(ctx context.Context, t *T) error {
		return checkKillInit(ctx, t, true)
	})
	register("container_delete_with_running_task_fails", 0, checkDeleteRunning)
	register("error_paths_leave_nothing", 0, checkErrorPaths)
	register("events_exit", 0, checkEventsExit)
	register("events_lifecycle_order", 0, checkEventsOrder)
}

func checkTaskLifecycle(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, err := c.NewTask(ctx, t.io(nil))
	if err != nil {
		return fmt.Errorf("new task: %w", err)
	}
	if task.Pid() == 0 {
		return errors.New("created task has pid 0")
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Created {
		return fmt.Errorf("status after create %q %v, want created", st.Status, err)
	}
	ch, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if st, err = task.Status(ctx); err != nil || st.Status != containerd.Running {
		return fmt.Errorf("status after start %q %v, want running", st.Status, err)
	}
	pids, err := task.Pids(ctx)
	if err != nil {
		return fmt.Errorf("Pids: %w", err)
	}
	found := false
	for _, p := range pids {
		found = found || p.Pid == task.Pid()
	}
	if !found {
		return fmt.Errorf("Pids %v lack the init pid %d", pids, task.Pid())
	}
	m, err := task.Metrics(ctx)
	if err != nil {
		return fmt.Errorf("Metrics: %w", err)
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return fmt.Errorf("decode metrics (%s): %w", m.Data.GetTypeUrl(), err)
	}
	if cm, ok := v.(*cgroupsv1.Metrics); ok {
		if cm.Pids == nil || cm.Pids.Current == 0 {
			return fmt.Errorf("metrics without pids: %+v", cm.Pids)
		}
	} else {
		t.notef("metrics type %T", v)
	}
	if err := task.Pause(ctx); err != nil {
		return fmt.Errorf("Pause: %w", err)
	}
	if st, err = task.Status(ctx); err != nil || st.Status != containerd.Paused {
		return fmt.Errorf("status after pause %q %v, want paused", st.Status, err)
	}
	if err := task.Resume(ctx); err != nil {
		return fmt.Errorf("Resume: %w", err)
	}
	if st, err = task.Status(ctx); err != nil || st.Status != containerd.Running {
		return fmt.Errorf("status after resume %q %v, want running", st.Status, err)
	}
	if _, err := task.Delete(ctx); !errdefs.IsFailedPrecondition(err) {
		return fmt.Errorf("delete of a running task: %v, want FailedPrecondition", err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	code, err := waitExit(ctx, ch)
	if err != nil {
		return err
	}
	if code != 137 {
		return fmt.Errorf("exit status after SIGKILL %d, want 137", code)
	}
	if st, err = task.Status(ctx); err != nil || st.Status != containerd.Stopped || st.ExitStatus != 137 {
		return fmt.Errorf("status after exit %+v %v, want stopped 137", st, err)
	}
	es, err := task.Delete(ctx)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if es.ExitCode() != 137 {
		return fmt.Errorf("delete reported exit %d, want 137", es.ExitCode())
	}
	if _, err := c.Task(ctx, nil); !errdefs.IsNotFound(err) {
		return fmt.Errorf("task after delete: %v, want NotFound", err)
	}
	return nil
}

// ioWait waits (bounded) for the process's IO copies to finish.
func ioWait(i cio.IO, d time.Duration) {
	if i == nil {
		return
	}
	done := make(chan struct{})
	go func() { i.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func checkTaskOutput(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sh", "-c", "echo out; echo err >&2; exit 3")
	if err != nil {
		return err
	}
	var stdout, stderr buffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(t.e.fifoDir)))
	if err != nil {
		return fmt.Errorf("new task: %w", err)
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
	ioWait(task.IO(), 5*time.Second)
	if code != 3 {
		return fmt.Errorf("exit %d, want 3", code)
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		return fmt.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	if _, err := task.Delete(ctx); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	return nil
}

func checkTaskStdin(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "cat")
	if err != nil {
		return err
	}
	r, w := io.Pipe()
	defer w.Close()
	var out buffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(r, &out, &out), cio.WithFIFODir(t.e.fifoDir)))
	if err != nil {
		return fmt.Errorf("new task: %w", err)
	}
	ch, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	go func() { _, _ = w.Write([]byte("hello stdin\n")) }()
	if !poll(10*time.Second, 20*time.Millisecond, func() bool { return strings.Contains(out.String(), "hello stdin") }) {
		return fmt.Errorf("cat did not echo its stdin: %q", out.String())
	}
	w.Close()
	if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
		return fmt.Errorf("CloseIO: %w", err)
	}
	code, err := waitExit(ctx, ch)
	if err != nil {
		return fmt.Errorf("cat did not exit after CloseIO: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("cat exit %d", code)
	}
	_, err = task.Delete(ctx)
	return err
}

func checkExecOutput(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	spec, err := execSpec(ctx, c, false, "sh", "-c", "echo exec-out; exit 5")
	if err != nil {
		return err
	}
	var out buffer
	p, err := task.Exec(ctx, "e1", spec, t.io(&out))
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
	if p.Pid() == 0 {
		return errors.New("started exec has pid 0")
	}
	code, err := waitExit(ctx, pch)
	if err != nil {
		return err
	}
	ioWait(p.IO(), 5*time.Second)
	if code != 5 || out.String() != "exec-out\n" {
		return fmt.Errorf("exec exit %d output %q, want 5 and exec-out", code, out.String())
	}
	if _, err := task.Exec(ctx, "e1", spec, t.io(nil)); !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("second exec with id e1 before delete: %v, want AlreadyExists", err)
	}
	es, err := p.Delete(ctx)
	if err != nil {
		return fmt.Errorf("exec delete: %w", err)
	}
	if es.ExitCode() != 5 {
		return fmt.Errorf("exec delete reported %d, want 5", es.ExitCode())
	}
	if _, err := task.LoadProcess(ctx, "e1", nil); !errdefs.IsNotFound(err) {
		return fmt.Errorf("LoadProcess of a deleted exec: %v, want NotFound", err)
	}
	return killWaitDelete(ctx, task, ch)
}

func checkResizeWithoutTerminal(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	if err := task.Resize(ctx, 80, 24); err != nil {
		return fmt.Errorf("task Resize without a terminal: %w", err)
	}
	spec, err := execSpec(ctx, c, false, "sleep", "30")
	if err != nil {
		return err
	}
	p, err := task.Exec(ctx, "nt", spec, t.io(nil))
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
	if err := p.Resize(ctx, 80, 24); err != nil {
		return fmt.Errorf("exec Resize without a terminal: %w", err)
	}
	if err := p.Kill(ctx, syscall.SIGKILL); err != nil {
		return fmt.Errorf("exec kill: %w", err)
	}
	if _, err := waitExit(ctx, pch); err != nil {
		return err
	}
	if _, err := p.Delete(ctx); err != nil {
		return fmt.Errorf("exec delete: %w", err)
	}
	return killWaitDelete(ctx, task, ch)
}

func checkExecWithTerminal(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	spec, err := execSpec(ctx, c, true, "sh", "-c", "tty; sleep 1; stty size; echo ok")
	if err != nil {
		return err
	}
	var out buffer
	p, err := task.Exec(ctx, "tty1", spec,
		cio.NewCreator(cio.WithStreams(nil, &out, nil), cio.WithTerminal, cio.WithFIFODir(t.e.fifoDir)))
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
	if err := p.Resize(ctx, 100, 30); err != nil {
		return fmt.Errorf("exec Resize with a terminal: %w", err)
	}
	code, err := waitExit(ctx, pch)
	if err != nil {
		return err
	}
	ioWait(p.IO(), 5*time.Second)
	if code != 0 {
		return fmt.Errorf("exec exit %d (output %q)", code, out.String())
	}
	if !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "ok") {
		return fmt.Errorf("terminal exec output %q, want a /dev/pts/ name and ok", out.String())
	}
	if !strings.Contains(out.String(), "30 100") {
		return fmt.Errorf("terminal exec output %q: stty size does not show the resize to 100x30", out.String())
	}
	if _, err := p.Delete(ctx); err != nil {
		return fmt.Errorf("exec delete: %w", err)
	}
	return killWaitDelete(ctx, task, ch)
}

// checkKillInit: SIGKILL to the init process; when its exit is reported every process of
// the container is gone (at most 100 ms later).
func checkKillInit(ctx context.Context, t *T, hostPidns bool) error {
	id := t.id("")
	o := ctrOpts{}
	if hostPidns {
		o.specOpts = []oci.SpecOpts{oci.WithHostNamespace(specs.PIDNamespace)}
	}
	c, err := t.container(ctx, id, o, "sh", "-c", "while true; do sleep 1; done")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	var procs []procStat
	if !poll(10*time.Second, 20*time.Millisecond, func() bool {
		procs = containerProcs(t.e.ns, id, int(task.Pid()))
		for _, p := range procs {
			if p.comm == "sleep" && p.ppid == int(task.Pid()) {
				return true
			}
		}
		return false
	}) {
		return fmt.Errorf("no sleep child of init %d appeared: %s", task.Pid(), describe(procs))
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	code, err := waitExit(ctx, ch)
	if err != nil {
		return err
	}
	exited := time.Now()
	var left []procStat
	gone := poll(100*time.Millisecond, time.Millisecond, func() bool {
		left = stillThere(procs)
		return len(left) == 0
	})
	took := time.Since(exited)
	if !gone {
		// How long until they do go?
		poll(5*time.Second, 5*time.Millisecond, func() bool { return len(stillThere(procs)) == 0 })
		return fmt.Errorf("100ms after the exit (%d) was reported, processes of the container remain: %s (all gone after %s)",
			code, describe(left), time.Since(exited).Round(time.Millisecond))
	}
	t.notef("recorded %s; all gone %s after the exit was reported", describe(procs), took.Round(time.Microsecond))
	if code != 137 {
		return fmt.Errorf("exit %d, want 137", code)
	}
	_, err = task.Delete(ctx)
	return err
}

func checkDeleteRunning(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	if err := c.Delete(ctx); !errdefs.IsFailedPrecondition(err) {
		return fmt.Errorf("delete container with a running task: %v, want FailedPrecondition", err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
		return fmt.Errorf("task after the refused delete: %v %v", st.Status, err)
	}
	return killWaitDelete(ctx, task, ch)
}

// checkErrorPaths: failing exec and failing task starts leave nothing behind.
func checkErrorPaths(ctx context.Context, t *T) error {
	id := t.id("ok")
	c, err := t.container(ctx, id, ctrOpts{}, "sleep", "30")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	spec, err := execSpec(ctx, c, false, "/nonexistent")
	if err != nil {
		return err
	}
	bad, err := task.Exec(ctx, "bad", spec, t.io(nil))
	if err != nil {
		return fmt.Errorf("exec of /nonexistent (creation): %w", err)
	}
	if err := bad.Start(ctx); err == nil {
		return errors.New("start of an exec of /nonexistent succeeded")
	} else {
		t.notef("exec start error: %v", err)
	}
	if _, err := bad.Delete(ctx); err != nil {
		return fmt.Errorf("delete of the failed exec: %w", err)
	}
	spec, err = execSpec(ctx, c, false, "true")
	if err != nil {
		return err
	}
	good, err := task.Exec(ctx, "good", spec, t.io(nil))
	if err != nil {
		return fmt.Errorf("exec after the failed one: %w", err)
	}
	gch, err := good.Wait(ctx)
	if err != nil {
		return err
	}
	if err := good.Start(ctx); err != nil {
		return fmt.Errorf("start of an exec after the failed one: %w", err)
	}
	if code, err := waitExit(ctx, gch); err != nil || code != 0 {
		return fmt.Errorf("exec true: %d %v", code, err)
	}
	if _, err := good.Delete(ctx); err != nil {
		return fmt.Errorf("exec delete: %w", err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
		return fmt.Errorf("task after the exec failures: %v %v", st.Status, err)
	}
	if err := killWaitDelete(ctx, task, ch); err != nil {
		return err
	}

	// A container whose process does not exist.
	id2 := t.id("bad")
	c2, err := t.container(ctx, id2, ctrOpts{}, "/nonexistent-binary")
	if err != nil {
		return err
	}
	task2, err := c2.NewTask(ctx, t.io(nil))
	if err == nil {
		t.notef("NewTask of a missing binary succeeded; Start must fail")
		if err := task2.Start(ctx); err == nil {
			return errors.New("task of a missing binary started")
		} else {
			t.notef("start error: %v", err)
		}
		if _, err := task2.Delete(ctx, containerd.WithProcessKill); err != nil {
			return fmt.Errorf("task delete after the failed start: %w", err)
		}
	} else {
		t.notef("NewTask error: %v", err)
	}
	if err := c2.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("container delete after the failed start: %w", err)
	}
	if listed, err := taskListed(ctx, t.e, id2); err != nil || listed {
		return fmt.Errorf("task %s still listed (%v)", id2, err)
	}
	cs, err := t.e.client.ContainerService().List(ctx, "id=="+id2)
	if err != nil || len(cs) != 0 {
		return fmt.Errorf("container %s still listed: %d %v", id2, len(cs), err)
	}
	if err := waitNoShim(id2, 2*time.Second); err != nil {
		return err
	}
	return waitNoShim(id, 2*time.Second)
}

// topicAndContainer decodes an event's topic and the container it is about.
func topicAndContainer(env *events.Envelope) (string, string, interface{}) {
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		return env.Topic, "", nil
	}
	switch e := v.(type) {
	case *eventstypes.TaskCreate:
		return env.Topic, e.ContainerID, e
	case *eventstypes.TaskStart:
		return env.Topic, e.ContainerID, e
	case *eventstypes.TaskExit:
		return env.Topic, e.ContainerID, e
	case *eventstypes.TaskDelete:
		return env.Topic, e.ContainerID, e
	case *eventstypes.ContainerCreate:
		return env.Topic, e.ID, e
	case *eventstypes.ContainerDelete:
		return env.Topic, e.ID, e
	}
	return env.Topic, "", v
}

func checkEventsExit(ctx context.Context, t *T) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errs := t.e.client.EventService().Subscribe(sctx, `topic=="/tasks/exit"`)
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sh", "-c", "exit 7")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	if code, err := waitExit(ctx, ch); err != nil || code != 7 {
		return fmt.Errorf("wait: %d %v", code, err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case env := <-evs:
			if env.Topic != "/tasks/exit" {
				return fmt.Errorf("event of topic %s through the filter topic==/tasks/exit", env.Topic)
			}
			_, cid, v := topicAndContainer(env)
			if cid != id {
				continue
			}
			e := v.(*eventstypes.TaskExit)
			if env.Namespace != t.e.ns {
				return fmt.Errorf("exit event namespace %q, want %q", env.Namespace, t.e.ns)
			}
			if e.ExitStatus != 7 || e.ID != id || e.Pid != task.Pid() {
				return fmt.Errorf("exit event %+v, want status 7, id %s, pid %d", e, id, task.Pid())
			}
			_, err := task.Delete(ctx)
			return err
		case err := <-errs:
			return fmt.Errorf("subscription: %w", err)
		case <-timeout:
			return errors.New("no /tasks/exit event for the container within 10s")
		}
	}
}

func checkEventsOrder(ctx context.Context, t *T) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errs := t.e.client.EventService().Subscribe(sctx, fmt.Sprintf(`namespace==%s`, t.e.ns))
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sh", "-c", "exit 0")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	if _, err := waitExit(ctx, ch); err != nil {
		return err
	}
	if _, err := task.Delete(ctx); err != nil {
		return fmt.Errorf("task delete: %w", err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("container delete: %w", err)
	}
	want := []string{"/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/containers/delete"}
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) || got[len(got)-1] != "/containers/delete" {
		select {
		case env := <-evs:
			if env.Namespace != t.e.ns {
				return fmt.Errorf("event of namespace %q through the filter namespace==%s", env.Namespace, t.e.ns)
			}
			topic, cid, _ := topicAndContainer(env)
			if cid == id {
				got = append(got, topic)
			}
		case err := <-errs:
			return fmt.Errorf("subscription: %w", err)
		case <-timeout:
			return fmt.Errorf("events for the container %v, want %v", got, want)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		return fmt.Errorf("events for the container %v, want %v", got, want)
	}
	return nil
}
