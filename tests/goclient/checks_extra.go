package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/containerd"
	eventstypes "github.com/containerd/containerd/api/events"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/typeurl"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func init() {
	register("namespace_create_labels_set_clear", 0, checkNamespaceLabels)
	register("images_create_update_delete", 0, checkImagesCRUD)
	register("events_publish_subscribe", 0, checkEventsPublish)
	register("content_resumable_ingest", 0, checkContentResume)
	register("leases_add_delete_resource", 0, checkLeaseResources)
	register("snapshot_update_labels", 0, checkSnapshotLabels)
	register("task_get_stdio_and_attach", 0, checkTaskAttach)
}

func checkNamespaceLabels(ctx context.Context, t *T) error {
	nss := t.e.client.NamespaceService()
	ns := t.id("")
	if err := nss.Create(ctx, ns, map[string]string{"gotest/a": "1"}); err != nil {
		return fmt.Errorf("Create: %w", err)
	}
	t.cleanup(func(ctx context.Context) error {
		if err := nss.Delete(ctx, ns); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	})
	if err := nss.Create(ctx, ns, nil); !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("second Create: %v, want AlreadyExists", err)
	}
	if err := nss.SetLabel(ctx, ns, "gotest/b", "2"); err != nil {
		return fmt.Errorf("SetLabel: %w", err)
	}
	labels, err := nss.Labels(ctx, ns)
	if err != nil {
		return err
	}
	if labels["gotest/a"] != "1" || labels["gotest/b"] != "2" {
		return fmt.Errorf("labels %v", labels)
	}
	if err := nss.SetLabel(ctx, ns, "gotest/a", ""); err != nil {
		return fmt.Errorf("SetLabel to empty (clear): %w", err)
	}
	labels, err = nss.Labels(ctx, ns)
	if err != nil {
		return err
	}
	if _, ok := labels["gotest/a"]; ok || labels["gotest/b"] != "2" {
		return fmt.Errorf("labels after clearing gotest/a: %v", labels)
	}
	if err := nss.Delete(ctx, ns); err != nil {
		return fmt.Errorf("Delete of the empty namespace: %w", err)
	}
	if err := nss.Delete(ctx, ns); !errdefs.IsNotFound(err) {
		return fmt.Errorf("second Delete: %v, want NotFound", err)
	}
	return nil
}

func checkImagesCRUD(ctx context.Context, t *T) error {
	is := t.e.client.ImageService()
	orig, err := is.Get(ctx, t.e.image)
	if err != nil {
		return err
	}
	name := "example.com/gotest/" + t.id("") + ":v1"
	img := images.Image{Name: name, Target: orig.Target, Labels: map[string]string{"gotest/a": "1"}}
	created, err := is.Create(ctx, img)
	if err != nil {
		return fmt.Errorf("Create: %w", err)
	}
	t.cleanup(func(ctx context.Context) error {
		if err := is.Delete(ctx, name); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	})
	if created.CreatedAt.IsZero() || created.Target.Digest != orig.Target.Digest {
		return fmt.Errorf("created image %+v", created)
	}
	if _, err := is.Create(ctx, img); !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("second Create: %v, want AlreadyExists", err)
	}
	upd, err := is.Update(ctx, images.Image{Name: name, Labels: map[string]string{"gotest/b": "2"}}, "labels.gotest/b")
	if err != nil {
		return fmt.Errorf("Update labels.gotest/b: %w", err)
	}
	if upd.Labels["gotest/a"] != "1" || upd.Labels["gotest/b"] != "2" || upd.Target.Digest != orig.Target.Digest {
		return fmt.Errorf("after Update: labels %v target %s", upd.Labels, upd.Target.Digest)
	}
	if _, err := is.Update(ctx, images.Image{Name: name + "-missing"}, "labels"); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Update of a missing image: %v, want NotFound", err)
	}
	list, err := is.List(ctx, `labels."gotest/b"==2`)
	if err != nil {
		return fmt.Errorf("List with a label filter: %w", err)
	}
	if len(list) != 1 || list[0].Name != name {
		return fmt.Errorf("List(labels.\"gotest/b\"==2) = %v", imageNames(list))
	}
	if err := is.Delete(ctx, name); err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	if err := is.Delete(ctx, name); !errdefs.IsNotFound(err) {
		return fmt.Errorf("second Delete: %v, want NotFound", err)
	}
	return nil
}

func checkEventsPublish(ctx context.Context, t *T) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	topic := "/gotest/" + randHex(4)
	evs, errs := t.e.client.EventService().Subscribe(sctx, fmt.Sprintf(`topic==%q`, topic))
	// The subscription is live once a first event of the topic arrives: publish until then.
	id := t.id("")
	var got *eventstypes.ContainerCreate
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	publish := func() error {
		return t.e.client.EventService().Publish(ctx, topic, &eventstypes.ContainerCreate{ID: id, Image: "gotest"})
	}
	if err := publish(); err != nil {
		return fmt.Errorf("Publish: %w", err)
	}
	for got == nil {
		select {
		case env := <-evs:
			if env.Topic != topic || env.Namespace != t.e.ns {
				return fmt.Errorf("event %s in %s through the filter topic==%s", env.Topic, env.Namespace, topic)
			}
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				return fmt.Errorf("decode the published event: %w", err)
			}
			e, ok := v.(*eventstypes.ContainerCreate)
			if !ok || e.ID != id || e.Image != "gotest" {
				return fmt.Errorf("published event came back as %T %+v", v, v)
			}
			got = e
		case err := <-errs:
			return fmt.Errorf("subscription: %w", err)
		case <-tick.C:
			if err := publish(); err != nil {
				return fmt.Errorf("Publish: %w", err)
			}
		case <-deadline:
			return errors.New("published event not received within 10s")
		}
	}
	if err := t.e.client.EventService().Publish(ctx, "not-a-topic", &eventstypes.ContainerCreate{ID: id}); err == nil {
		return errors.New("Publish with an invalid topic succeeded")
	}
	return nil
}

// checkContentResume: an ingest survives its writer; a new writer on the same ref resumes at
// the written offset.
func checkContentResume(ctx context.Context, t *T) error {
	cs := t.e.client.ContentStore()
	lctx, done, err := t.e.client.WithLease(ctx)
	if err != nil {
		return err
	}
	t.cleanup(func(ctx context.Context) error { return done(ctx) })
	ctx = lctx
	blob := bytes.Repeat([]byte(randHex(8)), 1024) // 16 KiB
	d := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	ref := t.id("ref")
	t.cleanup(func(ctx context.Context) error {
		_ = cs.Abort(ctx, ref)
		_ = cs.Delete(ctx, d.Digest)
		return nil
	})
	w, err := cs.Writer(ctx, content.WithRef(ref), content.WithDescriptor(d))
	if err != nil {
		return fmt.Errorf("Writer: %w", err)
	}
	if _, err := w.Write(blob[:5000]); err != nil {
		return fmt.Errorf("Write: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("Close: %w", err)
	}
	st, err := cs.Status(ctx, ref)
	if err != nil {
		return fmt.Errorf("Status of the open ingest: %w", err)
	}
	if st.Offset != 5000 || st.Total != d.Size {
		return fmt.Errorf("ingest status offset %d total %d, want 5000 / %d", st.Offset, st.Total, d.Size)
	}
	// OpenWriter retries while the daemon still holds the ref for the closed writer.
	w, err = content.OpenWriter(ctx, cs, content.WithRef(ref), content.WithDescriptor(d))
	if err != nil {
		return fmt.Errorf("second Writer on the ref: %w", err)
	}
	defer w.Close()
	ws, err := w.Status()
	if err != nil || ws.Offset != 5000 {
		return fmt.Errorf("resumed writer at %d (%v), want 5000", ws.Offset, err)
	}
	if _, err := io.Copy(w, bytes.NewReader(blob[5000:])); err != nil {
		return fmt.Errorf("Write the rest: %w", err)
	}
	if err := w.Commit(ctx, d.Size, d.Digest); err != nil {
		return fmt.Errorf("Commit: %w", err)
	}
	got, err := content.ReadBlob(ctx, cs, d)
	if err != nil || !bytes.Equal(got, blob) {
		return fmt.Errorf("read back %d bytes (%v)", len(got), err)
	}
	// An abandoned ingest can be aborted.
	ref2 := t.id("abort")
	w2, err := cs.Writer(ctx, content.WithRef(ref2))
	if err != nil {
		return err
	}
	_, _ = w2.Write([]byte("partial"))
	w2.Close()
	// Close does not wait for the daemon to finish with the write stream: right after it,
	// containerd may fail the Abort too ("directory not empty"), berthd says Unavailable.
	var abortErr error
	if !poll(3*time.Second, 20*time.Millisecond, func() bool {
		abortErr = cs.Abort(ctx, ref2)
		return abortErr == nil
	}) {
		return fmt.Errorf("Abort after the writer closed: %w", abortErr)
	}
	if _, err := cs.Status(ctx, ref2); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Status after Abort: %v, want NotFound", err)
	}
	if err := cs.Abort(ctx, ref2); !errdefs.IsNotFound(err) {
		return fmt.Errorf("second Abort: %v, want NotFound", err)
	}
	return nil
}

func checkLeaseResources(ctx context.Context, t *T) error {
	lm := t.e.client.LeasesService()
	id := t.id("")
	l, err := lm.Create(ctx, leases.WithID(id), leases.WithLabels(map[string]string{"gotest/a": "1"}))
	if err != nil {
		return fmt.Errorf("Create: %w", err)
	}
	t.cleanup(func(ctx context.Context) error {
		if err := lm.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	})
	if _, err := lm.Create(ctx, leases.WithID(id)); !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("second Create: %v, want AlreadyExists", err)
	}
	img, err := t.e.client.GetImage(ctx, t.e.image)
	if err != nil {
		return err
	}
	r := leases.Resource{ID: img.Target().Digest.String(), Type: "content"}
	if err := lm.AddResource(ctx, l, r); err != nil {
		return fmt.Errorf("AddResource: %w", err)
	}
	res, err := lm.ListResources(ctx, l)
	if err != nil {
		return fmt.Errorf("ListResources: %w", err)
	}
	if len(res) != 1 || res[0] != r {
		return fmt.Errorf("resources %v, want [%v]", res, r)
	}
	if err := lm.DeleteResource(ctx, l, r); err != nil {
		return fmt.Errorf("DeleteResource: %w", err)
	}
	if res, err = lm.ListResources(ctx, l); err != nil || len(res) != 0 {
		return fmt.Errorf("resources after DeleteResource: %v %v", res, err)
	}
	ls, err := lm.List(ctx, `labels."gotest/a"==1`, "id=="+id)
	if err != nil || len(ls) != 1 {
		return fmt.Errorf("List by label and id: %v %v", ls, err)
	}
	if err := lm.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	if err := lm.Delete(ctx, l); !errdefs.IsNotFound(err) {
		return fmt.Errorf("second Delete: %v, want NotFound", err)
	}
	return nil
}

func checkSnapshotLabels(ctx context.Context, t *T) error {
	sn := t.e.client.SnapshotService(containerd.DefaultSnapshotter)
	parent, err := imageChainID(ctx, t)
	if err != nil {
		return err
	}
	key := t.id("")
	if _, err := sn.Prepare(ctx, key, parent, snapshots.WithLabels(map[string]string{"gotest/a": "1"})); err != nil {
		return fmt.Errorf("Prepare: %w", err)
	}
	t.cleanup(func(ctx context.Context) error {
		if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	})
	info, err := sn.Update(ctx, snapshots.Info{Name: key, Labels: map[string]string{"gotest/b": "2"}}, "labels.gotest/b")
	if err != nil {
		return fmt.Errorf("Update labels.gotest/b: %w", err)
	}
	if info.Labels["gotest/a"] != "1" || info.Labels["gotest/b"] != "2" || info.Parent != parent || info.Kind != snapshots.KindActive {
		return fmt.Errorf("after Update: %+v", info)
	}
	var names []string
	if err := sn.Walk(ctx, func(ctx context.Context, i snapshots.Info) error {
		names = append(names, i.Name)
		return nil
	}, `labels."gotest/b"==2`); err != nil {
		return fmt.Errorf("Walk with a label filter: %w", err)
	}
	if len(names) != 1 || names[0] != key {
		return fmt.Errorf("Walk(labels.\"gotest/b\"==2) = %v", names)
	}
	if _, err := sn.Update(ctx, snapshots.Info{Name: key + "-missing", Labels: map[string]string{"a": "b"}}, "labels.a"); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Update of a missing snapshot: %v, want NotFound", err)
	}
	return nil
}

// checkTaskAttach: the tasks service reports the task's stdio paths; a second client
// attaches to them (cio.NewAttach) and reads the output.
func checkTaskAttach(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "sh", "-c", "while true; do echo tick; sleep 0.1; done")
	if err != nil {
		return err
	}
	var first buffer
	task, ch, err := t.startTask(ctx, c, &first)
	if err != nil {
		return err
	}
	cfg := task.IO().Config()
	resp, err := t.e.client.TaskService().Get(ctx, &tasksapi.GetRequest{ContainerID: id})
	if err != nil {
		return fmt.Errorf("Get: %w", err)
	}
	p := resp.Process
	if p.Stdout != cfg.Stdout || p.Stderr != cfg.Stderr || p.Stdin != cfg.Stdin || p.Terminal != cfg.Terminal {
		return fmt.Errorf("Get reports stdio %q %q %q %v, the task was created with %q %q %q %v",
			p.Stdin, p.Stdout, p.Stderr, p.Terminal, cfg.Stdin, cfg.Stdout, cfg.Stderr, cfg.Terminal)
	}
	if p.Pid != task.Pid() || p.ID != id {
		return fmt.Errorf("Get reports pid %d id %q", p.Pid, p.ID)
	}
	if !poll(5*time.Second, 20*time.Millisecond, func() bool { return strings.Contains(first.String(), "tick") }) {
		return fmt.Errorf("no output: %q", first.String())
	}
	// A second client attaches to the same FIFOs (the first one keeps reading too: the
	// output is shared between them, and "tick" repeats).
	c2, err := t.e.client.LoadContainer(ctx, id)
	if err != nil {
		return err
	}
	var second buffer
	task2, err := c2.Task(ctx, cio.NewAttach(cio.WithStreams(nil, &second, &second)))
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if !poll(5*time.Second, 20*time.Millisecond, func() bool { return strings.Contains(second.String(), "tick") }) {
		return fmt.Errorf("attached client got no output: %q", second.String())
	}
	if err := task2.Kill(ctx, 9); err != nil {
		return err
	}
	if _, err := waitExit(ctx, ch); err != nil {
		return err
	}
	_, err = task2.Delete(ctx)
	return err
}
