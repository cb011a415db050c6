package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl"
)

func init() {
	register("events_oom", 0, checkEventsOOM)
}

// checkEventsOOM: a container over its memory limit is OOM-killed; the shim publishes
// /tasks/oom for it before (or with) its exit.
func checkEventsOOM(ctx context.Context, t *T) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errs := t.e.client.EventService().Subscribe(sctx, `topic=="/tasks/oom"`)
	id := t.id("")
	limit := uint64(16 << 20)
	c, err := t.container(ctx, id, ctrOpts{specOpts: []oci.SpecOpts{
		oci.WithMemoryLimit(limit),
		oci.WithMemorySwap(int64(limit)),
	}}, "sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done")
	if err != nil {
		return err
	}
	task, ch, err := t.startTask(ctx, c, nil)
	if err != nil {
		return err
	}
	code, err := waitExit(ctx, ch)
	if err != nil {
		return err
	}
	if code != 137 {
		return fmt.Errorf("exit %d, want 137 (OOM kill)", code)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case env := <-evs:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				return fmt.Errorf("decode /tasks/oom: %w", err)
			}
			e, ok := v.(*eventstypes.TaskOOM)
			if !ok {
				return fmt.Errorf("/tasks/oom carries %T", v)
			}
			if e.ContainerID != id {
				continue
			}
			_, err = task.Delete(ctx)
			return err
		case err := <-errs:
			return fmt.Errorf("subscription: %w", err)
		case <-timeout:
			return errors.New("no /tasks/oom event for the container within 5s of its exit")
		}
	}
}
