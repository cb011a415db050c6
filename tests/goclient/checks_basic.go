package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func init() {
	register("health", 0, checkHealth)
	register("version", 0, checkVersion)
	register("server_info", 0, checkServerInfo)
	register("namespace_update_creates", 90*time.Second, checkNamespaceUpdateCreates)
	register("namespace_delete_nonempty_fails", 0, checkNamespaceDeleteNonEmpty)
	register("images_list_and_get", 0, checkImagesList)
	register("introspection_plugins", 0, checkIntrospection)
	register("container_labels_spec_info", 0, checkContainerLabels)
	register("container_duplicate_and_missing", 0, checkContainerDuplicate)
	register("content_commit_existing_discards_ingest", 0, checkContentCommitExisting)
	register("leases_with_lease", 0, checkLeases)
	register("snapshot_stat_usage", 0, checkSnapshotUsage)
}

func checkHealth(ctx context.Context, t *T) error {
	ok, err := t.e.client.IsServing(ctx)
	if err != nil {
		return fmt.Errorf("IsServing: %w", err)
	}
	if !ok {
		return errors.New("IsServing returned false")
	}
	return nil
}

func checkVersion(ctx context.Context, t *T) error {
	v, err := t.e.client.Version(ctx)
	if err != nil {
		return fmt.Errorf("Version: %w", err)
	}
	if v.Version == "" {
		return errors.New("empty version")
	}
	t.notef("version %q revision %q", v.Version, v.Revision)
	return nil
}

func checkServerInfo(ctx context.Context, t *T) error {
	s, err := t.e.client.Server(ctx)
	if err != nil {
		return fmt.Errorf("Server: %w", err)
	}
	if s.UUID == "" {
		return errors.New("empty server UUID")
	}
	s2, err := t.e.client.Server(ctx)
	if err != nil {
		return fmt.Errorf("Server (again): %w", err)
	}
	if s2.UUID != s.UUID {
		return fmt.Errorf("server UUID changed between calls: %q then %q", s.UUID, s2.UUID)
	}
	return nil
}

// checkNamespaceUpdateCreates: setting a label on a namespace that does not exist creates
// it; the client then resolves the namespace's default snapshotter label.
func checkNamespaceUpdateCreates(ctx context.Context, t *T) error {
	c := t.e.client
	nss := c.NamespaceService()
	fresh := t.id("")
	const key = "containerd.io/defaults/snapshotter"
	if err := nss.SetLabel(ctx, fresh, key, "native"); err != nil {
		return fmt.Errorf("SetLabel on a new namespace: %w", err)
	}
	fctx := namespaces.WithNamespace(ctx, fresh)
	// Safety net; the check itself removes everything and the namespace.
	t.cleanup(func(ctx context.Context) error {
		ctx = namespaces.WithNamespace(ctx, fresh)
		if cs, err := c.Containers(ctx); err == nil {
			for _, ctr := range cs {
				_ = removeContainer(ctx, ctr)
			}
		}
		if imgs, err := c.ImageService().List(ctx); err == nil {
			for _, i := range imgs {
				_ = c.ImageService().Delete(ctx, i.Name, images.SynchronousDelete())
			}
		}
		if err := nss.Delete(ctx, fresh); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete namespace %s: %w", fresh, err)
		}
		return nil
	})

	list, err := nss.List(ctx)
	if err != nil {
		return fmt.Errorf("List namespaces: %w", err)
	}
	if !contains(list, fresh) {
		return fmt.Errorf("namespace %s not listed after SetLabel: %v", fresh, list)
	}
	labels, err := nss.Labels(ctx, fresh)
	if err != nil {
		return fmt.Errorf("Labels: %w", err)
	}
	if labels[key] != "native" {
		return fmt.Errorf("labels of %s = %v, want %s=native", fresh, labels, key)
	}

	// Copy the image over: export from the main namespace, import into the fresh one.
	var tarball bytes.Buffer
	if err := c.Export(ctx, &tarball, archive.WithImage(c.ImageService(), t.e.image)); err != nil {
		return fmt.Errorf("export %s: %w", t.e.image, err)
	}
	imgs, err := c.Import(fctx, bytes.NewReader(tarball.Bytes()))
	if err != nil {
		return fmt.Errorf("import into %s: %w", fresh, err)
	}
	if len(imgs) != 1 || imgs[0].Name != t.e.image {
		return fmt.Errorf("import created %v, want one image named %s", imageNames(imgs), t.e.image)
	}
	img := containerd.NewImage(c, imgs[0])
	if err := img.Unpack(fctx, ""); err != nil {
		return fmt.Errorf("unpack with the namespace's default snapshotter: %w", err)
	}
	if ok, err := img.IsUnpacked(fctx, "native"); err != nil || !ok {
		return fmt.Errorf("image not unpacked into native (the namespace default): %v %v", ok, err)
	}
	id := t.id("c")
	ctr, err := c.NewContainer(fctx, id,
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img)))
	if err != nil {
		return fmt.Errorf("new container in %s: %w", fresh, err)
	}
	info, err := ctr.Info(fctx)
	if err != nil {
		_ = removeContainer(fctx, ctr)
		return fmt.Errorf("container info: %w", err)
	}
	if info.Snapshotter != "native" {
		_ = removeContainer(fctx, ctr)
		return fmt.Errorf("container snapshotter %q, want native (namespace label)", info.Snapshotter)
	}
	if _, err := c.SnapshotService("native").Stat(fctx, id); err != nil {
		_ = removeContainer(fctx, ctr)
		return fmt.Errorf("stat the container's snapshot in native: %w", err)
	}

	// Tear down: container, image, then the (now empty) namespace.
	if err := removeContainer(fctx, ctr); err != nil {
		return err
	}
	if err := c.ImageService().Delete(fctx, t.e.image, images.SynchronousDelete()); err != nil {
		return fmt.Errorf("delete image in %s: %w", fresh, err)
	}
	var lastErr error
	if !poll(20*time.Second, 200*time.Millisecond, func() bool {
		lastErr = nss.Delete(ctx, fresh)
		return lastErr == nil
	}) {
		return fmt.Errorf("delete namespace %s after removing its objects: %w", fresh, lastErr)
	}
	list, err = nss.List(ctx)
	if err != nil {
		return fmt.Errorf("List namespaces: %w", err)
	}
	if contains(list, fresh) {
		return fmt.Errorf("namespace %s still listed after its deletion", fresh)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func imageNames(imgs []images.Image) []string {
	var out []string
	for _, i := range imgs {
		out = append(out, i.Name)
	}
	return out
}

// checkNamespaceDeleteNonEmpty: the namespace holding the image cannot be deleted.
func checkNamespaceDeleteNonEmpty(ctx context.Context, t *T) error {
	err := t.e.client.NamespaceService().Delete(ctx, t.e.ns)
	if err == nil {
		return fmt.Errorf("deleting non-empty namespace %s succeeded", t.e.ns)
	}
	if !errdefs.IsFailedPrecondition(err) {
		return fmt.Errorf("deleting non-empty namespace: %v, want FailedPrecondition", err)
	}
	return nil
}

func checkImagesList(ctx context.Context, t *T) error {
	c := t.e.client
	imgs, err := c.ListImages(ctx, "name=="+t.e.image)
	if err != nil {
		return fmt.Errorf("ListImages: %w", err)
	}
	if len(imgs) != 1 || imgs[0].Name() != t.e.image {
		return fmt.Errorf("ListImages(name==%s) = %d images", t.e.image, len(imgs))
	}
	none, err := c.ListImages(ctx, "name==example.invalid/none:latest")
	if err != nil {
		return fmt.Errorf("ListImages (no match): %w", err)
	}
	if len(none) != 0 {
		return fmt.Errorf("ListImages with a non-matching filter returned %d images", len(none))
	}
	img := imgs[0]
	size, err := img.Size(ctx)
	if err != nil {
		return fmt.Errorf("image Size: %w", err)
	}
	if size <= 0 {
		return fmt.Errorf("image size %d", size)
	}
	cfg, err := img.Config(ctx)
	if err != nil {
		return fmt.Errorf("image Config: %w", err)
	}
	if _, err := content.ReadBlob(ctx, c.ContentStore(), cfg); err != nil {
		return fmt.Errorf("read config blob: %w", err)
	}
	if _, err := c.GetImage(ctx, "example.invalid/none:latest"); !errdefs.IsNotFound(err) {
		return fmt.Errorf("GetImage of a missing image: %v, want NotFound", err)
	}
	return nil
}

func checkIntrospection(ctx context.Context, t *T) error {
	resp, err := t.e.client.IntrospectionService().Plugins(ctx, []string{`type=="io.containerd.snapshotter.v1"`})
	if err != nil {
		return fmt.Errorf("Plugins: %w", err)
	}
	var ids []string
	for _, p := range resp.Plugins {
		if p.Type != "io.containerd.snapshotter.v1" {
			return fmt.Errorf("filter type==snapshotter returned plugin %s.%s", p.Type, p.ID)
		}
		ids = append(ids, p.ID)
	}
	for _, want := range []string{"overlayfs", "native"} {
		if !contains(ids, want) {
			return fmt.Errorf("snapshotter plugin %s not listed (have %v)", want, ids)
		}
	}
	return nil
}

func checkContainerLabels(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{labels: map[string]string{"gotest/a": "1"}}, "sleep", "30")
	if err != nil {
		return err
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return fmt.Errorf("Labels: %w", err)
	}
	if labels["gotest/a"] != "1" {
		return fmt.Errorf("labels %v, want gotest/a=1", labels)
	}
	labels, err = c.SetLabels(ctx, map[string]string{"gotest/b": "2"})
	if err != nil {
		return fmt.Errorf("SetLabels: %w", err)
	}
	if labels["gotest/a"] != "1" || labels["gotest/b"] != "2" {
		return fmt.Errorf("labels after SetLabels %v, want gotest/a=1 and gotest/b=2", labels)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("Info: %w", err)
	}
	if info.Runtime.Name != t.e.runtime {
		return fmt.Errorf("runtime %q, want %q", info.Runtime.Name, t.e.runtime)
	}
	if info.Image != t.e.image || info.SnapshotKey != id || info.Snapshotter == "" {
		return fmt.Errorf("info image %q snapshot %q/%q", info.Image, info.Snapshotter, info.SnapshotKey)
	}
	if info.CreatedAt.IsZero() || info.UpdatedAt.Before(info.CreatedAt) {
		return fmt.Errorf("created %v updated %v", info.CreatedAt, info.UpdatedAt)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return fmt.Errorf("Spec: %w", err)
	}
	if spec.Process == nil || len(spec.Process.Args) != 2 || spec.Process.Args[0] != "sleep" {
		return fmt.Errorf("spec process args %v", spec.Process)
	}
	found, err := t.e.client.Containers(ctx, fmt.Sprintf(`labels."gotest/b"==2,id==%s`, id))
	if err != nil {
		return fmt.Errorf("Containers with a label filter: %w", err)
	}
	if len(found) != 1 || found[0].ID() != id {
		return fmt.Errorf("Containers(labels.\"gotest/b\"==2,id==%s) found %d", id, len(found))
	}
	return nil
}

func checkContainerDuplicate(ctx context.Context, t *T) error {
	id := t.id("")
	first, err := t.container(ctx, id, ctrOpts{}, "true")
	if err != nil {
		return err
	}
	img, err := t.e.client.GetImage(ctx, t.e.image)
	if err != nil {
		return err
	}
	info, err := first.Info(ctx)
	if err != nil {
		return err
	}
	_, err = t.e.client.NewContainer(ctx, id,
		containerd.WithSnapshotter(info.Snapshotter),
		containerd.WithSnapshot(id),
		containerd.WithNewSpec(oci.WithImageConfig(img)))
	if !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("second NewContainer %s: %v, want AlreadyExists", id, err)
	}
	if _, err := t.e.client.LoadContainer(ctx, id+"-missing"); !errdefs.IsNotFound(err) {
		return fmt.Errorf("LoadContainer of a missing id: %v, want NotFound", err)
	}
	return nil
}

// checkContentCommitExisting: committing content that already exists reports AlreadyExists
// and discards the ingest; WriteBlob over a used ref works.
func checkContentCommitExisting(ctx context.Context, t *T) error {
	cs := t.e.client.ContentStore()
	a := bytes.Repeat([]byte{'a'}, 256)
	copy(a, randHex(16))
	b := bytes.Repeat([]byte{'b'}, 256)
	copy(b, randHex(16))
	descA := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(a), Size: int64(len(a))}
	descB := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(len(b))}
	refX, refY := t.id("x"), t.id("y")
	// Content that nothing references is garbage: write under a lease, as clients do.
	lctx, done, err := t.e.client.WithLease(ctx)
	if err != nil {
		return fmt.Errorf("WithLease: %w", err)
	}
	ctx = lctx
	t.cleanup(func(ctx context.Context) error {
		if err := done(ctx); err != nil {
			return fmt.Errorf("release lease: %w", err)
		}
		return nil
	})
	t.cleanup(func(ctx context.Context) error {
		_ = cs.Abort(ctx, refX)
		_ = cs.Abort(ctx, refY)
		for _, d := range []digest.Digest{descA.Digest, descB.Digest} {
			if err := cs.Delete(ctx, d); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("delete blob %s: %w", d, err)
			}
		}
		return nil
	})

	if err := content.WriteBlob(ctx, cs, refX, bytes.NewReader(a), descA); err != nil {
		return fmt.Errorf("WriteBlob A: %w", err)
	}
	if err := content.WriteBlob(ctx, cs, refX, bytes.NewReader(a), descA); err != nil {
		return fmt.Errorf("WriteBlob A again, same ref: %w", err)
	}
	if err := content.WriteBlob(ctx, cs, refX, bytes.NewReader(b), descB); err != nil {
		return fmt.Errorf("WriteBlob B with the ref used for A: %w", err)
	}
	info, err := cs.Info(ctx, descB.Digest)
	if err != nil {
		return fmt.Errorf("Info B: %w", err)
	}
	if info.Size != 256 {
		return fmt.Errorf("size of B %d, want 256", info.Size)
	}

	how := ""
	w, err := cs.Writer(ctx, content.WithRef(refY), content.WithDescriptor(descA))
	switch {
	case errdefs.IsAlreadyExists(err):
		how = "Writer"
	case err != nil:
		return fmt.Errorf("Writer(ref-y, A): %w", err)
	default:
		if _, err := w.Write(a); err != nil {
			w.Close()
			return fmt.Errorf("Write A under ref-y: %w", err)
		}
		err = w.Commit(ctx, int64(len(a)), descA.Digest)
		w.Close()
		if !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("Commit of existing A: %v, want AlreadyExists", err)
		}
		how = "Commit"
	}
	t.notef("existing blob reported AlreadyExists at %s", how)
	statuses, err := cs.ListStatuses(ctx)
	if err != nil {
		return fmt.Errorf("ListStatuses: %w", err)
	}
	for _, s := range statuses {
		if s.Ref == refY {
			return fmt.Errorf("ingest %s still listed after AlreadyExists (offset %d)", refY, s.Offset)
		}
	}
	if _, err := cs.Status(ctx, refY); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Status(%s) after AlreadyExists: %v, want NotFound", refY, err)
	}
	return nil
}

func checkLeases(ctx context.Context, t *T) error {
	c := t.e.client
	lctx, done, err := c.WithLease(ctx)
	if err != nil {
		return fmt.Errorf("WithLease: %w", err)
	}
	id, ok := leases.FromContext(lctx)
	if !ok || id == "" {
		done(ctx)
		return errors.New("no lease id in the context")
	}
	ls, err := c.LeasesService().List(ctx, fmt.Sprintf("id==%s", id))
	if err != nil {
		done(ctx)
		return fmt.Errorf("List leases: %w", err)
	}
	if len(ls) != 1 || ls[0].ID != id {
		done(ctx)
		return fmt.Errorf("lease %s not listed: %v", id, ls)
	}
	blob := []byte("lease blob " + randHex(16))
	d := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	if err := content.WriteBlob(lctx, c.ContentStore(), t.id("ref"), bytes.NewReader(blob), d); err != nil {
		done(ctx)
		return fmt.Errorf("WriteBlob under the lease: %w", err)
	}
	res, err := c.LeasesService().ListResources(ctx, leases.Lease{ID: id})
	if err != nil {
		done(ctx)
		return fmt.Errorf("ListResources: %w", err)
	}
	found := false
	for _, r := range res {
		if r.ID == d.Digest.String() && r.Type == "content" {
			found = true
		}
	}
	if !found {
		done(ctx)
		return fmt.Errorf("blob %s not among the lease's resources %v", d.Digest, res)
	}
	if err := done(ctx); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	ls, err = c.LeasesService().List(ctx, fmt.Sprintf("id==%s", id))
	if err != nil {
		return fmt.Errorf("List leases: %w", err)
	}
	if len(ls) != 0 {
		return fmt.Errorf("lease %s still listed after done()", id)
	}
	_ = c.ContentStore().Delete(ctx, d.Digest)
	return nil
}

func checkSnapshotUsage(ctx context.Context, t *T) error {
	id := t.id("")
	c, err := t.container(ctx, id, ctrOpts{}, "true")
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	sn := t.e.client.SnapshotService(info.Snapshotter)
	st, err := sn.Stat(ctx, id)
	if err != nil {
		return fmt.Errorf("Stat %s: %w", id, err)
	}
	if st.Kind != snapshots.KindActive || st.Parent == "" {
		return fmt.Errorf("container snapshot kind %v parent %q, want active with a parent", st.Kind, st.Parent)
	}
	parent, err := sn.Stat(ctx, st.Parent)
	if err != nil {
		return fmt.Errorf("Stat parent %s: %w", st.Parent, err)
	}
	if parent.Kind != snapshots.KindCommitted {
		return fmt.Errorf("parent kind %v, want committed", parent.Kind)
	}
	u, err := sn.Usage(ctx, st.Parent)
	if err != nil {
		return fmt.Errorf("Usage of the image layer: %w", err)
	}
	if u.Size <= 0 || u.Inodes <= 0 {
		return fmt.Errorf("usage of the busybox layer: %+v", u)
	}
	if _, err := sn.Usage(ctx, id); err != nil {
		return fmt.Errorf("Usage of the active snapshot: %w", err)
	}
	mounts, err := sn.Mounts(ctx, id)
	if err != nil || len(mounts) == 0 {
		return fmt.Errorf("Mounts: %v %v", mounts, err)
	}
	return nil
}
