//! Tests of the collector: marking over hand-made graphs, and collections over a real
//! database, content store and snapshotter.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn d(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn content(g: &mut Graph, ns: &str, digest: &str, l: &[(&str, &str)]) {
    g.content
        .insert((ns.to_string(), digest.to_string()), labels(l));
}

fn snapshot(
    g: &mut Graph,
    ns: &str,
    ss: &str,
    key: &str,
    parent: Option<&str>,
    l: &[(&str, &str)],
) {
    g.snapshots.insert(
        (ns.to_string(), ss.to_string(), key.to_string()),
        SnapshotEntry {
            parent: parent.map(str::to_string),
            labels: labels(l),
        },
    );
}

fn res(kind: &str, id: &str) -> leases::Resource {
    leases::Resource {
        id: id.to_string(),
        kind: kind.to_string(),
    }
}

/// index → manifest → (config → snapshot chain l2 → l1 → l0, layers) in `ns`.
fn image_graph(g: &mut Graph, ns: &str, name: &str) {
    content(
        g,
        ns,
        &d('i'),
        &[("containerd.io/gc.ref.content.m.0", &d('m'))],
    );
    content(
        g,
        ns,
        &d('m'),
        &[
            ("containerd.io/gc.ref.content.config", &d('c')),
            ("containerd.io/gc.ref.content.l.0", &d('0')),
            ("containerd.io/gc.ref.content.l.1", &d('1')),
            ("containerd.io/distribution.source.x", "repo"),
        ],
    );
    content(
        g,
        ns,
        &d('c'),
        &[("containerd.io/gc.ref.snapshot.overlayfs", "chain2")],
    );
    content(g, ns, &d('0'), &[]);
    content(g, ns, &d('1'), &[]);
    snapshot(g, ns, "overlayfs", "chain0", None, &[]);
    snapshot(g, ns, "overlayfs", "chain1", Some("chain0"), &[]);
    snapshot(g, ns, "overlayfs", "chain2", Some("chain1"), &[]);
    g.images.push(ImageRoot {
        namespace: ns.to_string(),
        name: name.to_string(),
        target: d('i'),
        labels: BTreeMap::new(),
    });
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn image_holds_its_whole_tree_and_nothing_else() {
    let mut g = Graph::default();
    image_graph(&mut g, "a", "img");
    content(&mut g, "a", &d('x'), &[]);
    snapshot(&mut g, "a", "overlayfs", "stray", None, &[]);
    snapshot(&mut g, "a", "overlayfs", "stray-child", Some("chain2"), &[]);
    let m = mark(&g, now());
    for c in ['i', 'm', 'c', '0', '1'] {
        assert!(m.has_content("a", &d(c)), "{c} not marked");
    }
    for s in ["chain0", "chain1", "chain2"] {
        assert!(m.has_snapshot("a", "overlayfs", s), "{s} not marked");
    }
    assert!(!m.has_content("a", &d('x')));
    assert!(!m.has_snapshot("a", "overlayfs", "stray"));
    // A child is not held by its parent.
    assert!(!m.has_snapshot("a", "overlayfs", "stray-child"));

    // Without the image, nothing is alive.
    g.images.clear();
    let m = mark(&g, now());
    assert!(m.nodes.is_empty(), "{:?}", m.nodes);
}

#[test]
fn namespaces_are_isolated() {
    let mut g = Graph::default();
    image_graph(&mut g, "a", "img");
    // The same digests and keys in "b", with no image there.
    content(
        &mut g,
        "b",
        &d('i'),
        &[("containerd.io/gc.ref.content.m.0", &d('m'))],
    );
    content(&mut g, "b", &d('m'), &[]);
    snapshot(&mut g, "b", "overlayfs", "chain2", None, &[]);
    let m = mark(&g, now());
    assert!(m.has_content("a", &d('i')));
    assert!(!m.has_content("b", &d('i')));
    assert!(!m.has_content("b", &d('m')));
    assert!(!m.has_snapshot("b", "overlayfs", "chain2"));
}

#[test]
fn label_forms() {
    let l = labels(&[
        ("containerd.io/gc.ref.content", &d('1')),
        ("containerd.io/gc.ref.content.anything.here", &d('2')),
        ("containerd.io/gc.ref.content/slash", &d('3')),
        ("containerd.io/gc.ref.contentious", &d('4')),
        ("containerd.io/gc.ref.snapshot.overlayfs", "k1"),
        ("containerd.io/gc.ref.snapshot.native/extra", "k2"),
        ("containerd.io/gc.ref.snapshot.", "k3"),
        ("containerd.io/gc.ref.content.empty", ""),
        ("other", &d('5')),
    ]);
    let mut refs = label_refs("ns", &l);
    refs.sort();
    assert_eq!(
        refs,
        vec![
            content_node("ns", &d('1')),
            content_node("ns", &d('2')),
            content_node("ns", &d('3')),
            snapshot_node("ns", "native", "k2"),
            snapshot_node("ns", "overlayfs", "k1"),
        ]
    );
}

#[test]
fn containers_hold_their_snapshot_and_its_parents() {
    let mut g = Graph::default();
    snapshot(&mut g, "a", "overlayfs", "base", None, &[]);
    snapshot(&mut g, "a", "overlayfs", "rw", Some("base"), &[]);
    snapshot(&mut g, "a", "native", "rw", None, &[]);
    content(&mut g, "a", &d('s'), &[]);
    g.containers.push(ContainerRoot {
        namespace: "a".into(),
        snapshotter: "overlayfs".into(),
        snapshot_key: "rw".into(),
        labels: labels(&[("containerd.io/gc.ref.content.spec", &d('s'))]),
    });
    let m = mark(&g, now());
    assert!(m.has_snapshot("a", "overlayfs", "rw"));
    assert!(m.has_snapshot("a", "overlayfs", "base"));
    assert!(!m.has_snapshot("a", "native", "rw"));
    assert!(m.has_content("a", &d('s')));
    g.containers.clear();
    assert!(mark(&g, now()).nodes.is_empty());
}

#[test]
fn leases_hold_resources_until_they_expire() {
    let mut g = Graph::default();
    image_graph(&mut g, "a", "img");
    g.images.clear();
    content(&mut g, "a", &d('w'), &[]);
    snapshot(
        &mut g,
        "a",
        "overlayfs",
        "extract-1 chain3",
        Some("chain2"),
        &[],
    );
    g.ingests.insert(("a".into(), "layer-x".into()), d('w'));
    g.leases.push(LeaseRoot {
        namespace: "a".into(),
        id: "pull".into(),
        expires: Some(now() + Duration::from_secs(3600)),
        flat: false,
        resources: vec![
            res("content", &d('i')),
            res("snapshots/overlayfs", "extract-1 chain3"),
            res("ingests", "layer-x"),
        ],
    });
    let m = mark(&g, now());
    assert!(m.expired_leases.is_empty());
    for c in ['i', 'm', 'c', '0', '1', 'w'] {
        assert!(m.has_content("a", &d(c)), "{c}");
    }
    for s in ["chain0", "chain1", "chain2", "extract-1 chain3"] {
        assert!(m.has_snapshot("a", "overlayfs", s), "{s}");
    }

    // Expired: holds nothing, and is reported for removal.
    g.leases[0].expires = Some(now() - Duration::from_secs(1));
    let m = mark(&g, now());
    assert_eq!(
        m.expired_leases,
        vec![("a".to_string(), "pull".to_string())]
    );
    assert!(m.nodes.is_empty());
}

#[test]
fn flat_leases_hold_only_their_resources_and_snapshot_parents() {
    let mut g = Graph::default();
    image_graph(&mut g, "a", "img");
    g.images.clear();
    snapshot(
        &mut g,
        "a",
        "overlayfs",
        "top",
        Some("chain1"),
        &[("containerd.io/gc.ref.content.x", &d('0'))],
    );
    g.leases.push(LeaseRoot {
        namespace: "a".into(),
        id: "flat".into(),
        expires: None,
        flat: true,
        resources: vec![res("content", &d('m')), res("snapshots/overlayfs", "top")],
    });
    let m = mark(&g, now());
    assert!(m.has_content("a", &d('m')));
    // The manifest's references are not followed.
    assert!(!m.has_content("a", &d('c')));
    assert!(!m.has_content("a", &d('1')));
    // The snapshot's parents are; its labels are not.
    assert!(m.has_snapshot("a", "overlayfs", "top"));
    assert!(m.has_snapshot("a", "overlayfs", "chain1"));
    assert!(m.has_snapshot("a", "overlayfs", "chain0"));
    assert!(!m.has_content("a", &d('0')));

    // Reached flat first, then normally: the references are followed after all.
    g.leases.push(LeaseRoot {
        namespace: "a".into(),
        id: "deep".into(),
        expires: None,
        flat: false,
        resources: vec![res("content", &d('m'))],
    });
    let m = mark(&g, now());
    assert!(m.has_content("a", &d('c')));
    assert!(m.has_snapshot("a", "overlayfs", "chain2"));
}

#[test]
fn gc_root_labels_and_shared_configs() {
    let mut g = Graph::default();
    content(
        &mut g,
        "a",
        &d('r'),
        &[(ROOT_LABEL, "2024-01-01T00:00:00Z")],
    );
    content(&mut g, "a", &d('x'), &[]);
    snapshot(
        &mut g,
        "a",
        "native",
        "keep",
        Some("p"),
        &[(ROOT_LABEL, "")],
    );
    snapshot(&mut g, "a", "native", "p", None, &[]);
    let m = mark(&g, now());
    assert!(m.has_content("a", &d('r')));
    assert!(!m.has_content("a", &d('x')));
    assert!(m.has_snapshot("a", "native", "keep"));
    assert!(m.has_snapshot("a", "native", "p"));

    // Two names, one tree: held while either name exists.
    let mut g = Graph::default();
    image_graph(&mut g, "a", "one");
    g.images.push(ImageRoot {
        namespace: "a".into(),
        name: "two".into(),
        target: d('i'),
        labels: BTreeMap::new(),
    });
    g.images.remove(0);
    let m = mark(&g, now());
    assert!(m.has_snapshot("a", "overlayfs", "chain0"));
    assert!(m.has_content("a", &d('1')));
}

#[test]
fn leased_images_and_image_labels() {
    let mut g = Graph::default();
    content(&mut g, "a", &d('t'), &[]);
    content(&mut g, "a", &d('e'), &[]);
    g.images.push(ImageRoot {
        namespace: "a".into(),
        name: "img".into(),
        target: d('t'),
        labels: labels(&[("containerd.io/gc.ref.content.extra", &d('e'))]),
    });
    g.leases.push(LeaseRoot {
        namespace: "a".into(),
        id: "l".into(),
        expires: None,
        flat: false,
        resources: vec![res("images", "img"), res("images", "missing")],
    });
    let m = mark(&g, now());
    assert!(m.has_content("a", &d('t')));
    assert!(m.has_content("a", &d('e')));
}

/// The redb side: one collection removes unreferenced records, their blob files and
/// expired leases, and keeps what the image reaches; `schedule` collects on its own.
#[tokio::test]
async fn collector_sweeps_the_database_and_the_files() {
    use crate::images::{Descriptor, Images};
    use berth_snapshotter::metastore::SnapshotRecord;
    use prost::Message;

    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(&dir.path().join("meta.redb")).expect("db");
    let cs = ContentStore::open(
        dir.path(),
        store.clone(),
        crate::content::DEFAULT_INGEST_EXPIRY,
        crate::events::Exchange::new(),
        &crate::collector::channel().0,
    )
    .expect("content");
    let images = Images::new(
        store.clone(),
        crate::events::Exchange::new(),
        crate::collector::channel().0,
    );
    let leases = crate::leases::Leases::new(store.clone(), crate::collector::channel().0);
    let write = |data: &'static [u8], l: BTreeMap<String, String>, lease: Option<String>| {
        let cs = cs.clone();
        async move {
            let mut w = cs
                .writer("ns", &format!("w-{}", data.len()), 0, "", None)
                .await
                .expect("writer");
            w.write(data.to_vec()).await.expect("write");
            w.commit(0, "", l, lease).await.expect("commit").digest
        }
    };
    let child = write(b"child", BTreeMap::new(), None).await;
    let top = write(
        b"top blob",
        labels(&[
            ("containerd.io/gc.ref.content.l.0", &child),
            ("containerd.io/gc.ref.snapshot.overlayfs", "kept"),
        ]),
        None,
    )
    .await;
    let stray = write(b"stray blob!", BTreeMap::new(), None).await;
    let past = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(5));
    leases
        .create(
            "ns",
            "old".into(),
            labels(&[(crate::leases::EXPIRE_LABEL, &past.to_string())]),
        )
        .await
        .expect("lease");
    let leased = write(b"leased, expired", BTreeMap::new(), Some("old".into())).await;
    images
        .create(
            "ns",
            Image {
                name: "img".into(),
                target: Some(Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: top.clone(),
                    size: 8,
                    annotations: BTreeMap::new(),
                }),
                ..Default::default()
            },
        )
        .await
        .expect("image");
    store
        .update(|txn| {
            let mut t = txn.open_table(SNAPSHOTS).ctx("open")?;
            for (key, id) in [("kept", 1u64), ("stray", 2)] {
                let rec = SnapshotRecord {
                    id,
                    kind: 3,
                    ..Default::default()
                };
                t.insert(("ns", "overlayfs", key), rec.encode_to_vec().as_slice())
                    .ctx("insert")?;
            }
            Ok(())
        })
        .await
        .expect("snapshots");

    let snapshotters = Snapshotters::open(dir.path(), &store, "overlayfs");
    let gc = start(store.clone(), cs.clone(), snapshotters);
    let stats = gc.collect().await.expect("collect");
    assert_eq!(
        stats,
        Stats {
            content: 2,
            snapshots: 1,
            content_records: 2,
            leases: 1,
            ingests: 0,
        }
    );
    for d in [&top, &child] {
        assert!(cs.blob_path(d).expect("path").exists(), "{d} removed");
    }
    for d in [&stray, &leased] {
        assert!(!cs.blob_path(d).expect("path").exists(), "{d} kept");
        assert!(cs.info("ns", d).await.is_err());
    }
    assert!(
        leases
            .list("ns", crate::filters::Filter::always())
            .await
            .expect("leases")
            .is_empty()
    );
    let keys: Vec<String> = store
        .view(|txn| {
            let t = txn.open_table(SNAPSHOTS).ctx("open")?;
            let mut out = Vec::new();
            for item in t.iter().ctx("iter")? {
                out.push(item.ctx("row")?.0.value().2.to_string());
            }
            Ok(out)
        })
        .await
        .expect("keys");
    assert_eq!(keys, vec!["kept".to_string()]);

    // A scheduled collection after the image goes takes the rest.
    images
        .delete("ns", "img", None, false)
        .await
        .expect("delete");
    gc.schedule();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cs.blob_path(&top).expect("path").exists() {
        assert!(
            Instant::now() < deadline,
            "scheduled collection did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = gc.collect().await.expect("collect");
    assert_eq!(stats, Stats::default(), "nothing left to collect");
    assert!(!cs.blob_path(&child).expect("path").exists());
}

/// Ingests have owners: one under a lease lives while the lease does and goes at the next
/// collection after it; one no lease holds goes once untouched for the expiry, by a
/// collection the collector runs on its own at that time; one being written stays.
#[tokio::test]
async fn abandoned_ingests_are_collected() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(&dir.path().join("meta.redb")).expect("db");
    let expiry = Duration::from_millis(600);
    let cs = ContentStore::open(
        dir.path(),
        store.clone(),
        expiry,
        crate::events::Exchange::new(),
        &crate::collector::channel().0,
    )
    .expect("content");
    let leases = crate::leases::Leases::new(store.clone(), crate::collector::channel().0);
    for id in ["pull", "live"] {
        leases
            .create("ns", id.into(), BTreeMap::new())
            .await
            .expect("lease");
    }
    let ingest = |r: &'static str, lease: Option<&'static str>| {
        let cs = cs.clone();
        async move {
            let mut w = cs
                .writer("ns", r, 1 << 20, "", lease)
                .await
                .expect("writer");
            w.write(b"partial".to_vec()).await.expect("write");
        }
    };
    ingest("by-pull", Some("pull")).await;
    ingest("by-live", Some("live")).await;
    ingest("unleased", None).await;
    let mut busy = cs.writer("ns", "busy", 0, "", None).await.expect("writer");
    busy.write(b"x".to_vec()).await.expect("write");
    // The lease lists the ingest among its resources, as containerd's does.
    let held: Vec<String> = leases
        .list_resources("ns", "pull")
        .await
        .expect("resources")
        .into_iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(held, vec!["ingests/by-pull".to_string()]);
    let refs = || async {
        let mut r: Vec<String> = cs
            .list_statuses("ns", crate::filters::Filter::always())
            .await
            .expect("statuses")
            .into_iter()
            .map(|s| s.reference)
            .collect();
        r.sort();
        r
    };

    let snapshotters = Snapshotters::open(dir.path(), &store, "overlayfs");
    let gc = start(store.clone(), cs.clone(), snapshotters);
    assert_eq!(gc.collect().await.expect("collect").ingests, 0);
    assert_eq!(refs().await, ["busy", "by-live", "by-pull", "unleased"]);

    // The pull's lease ends: its ingest goes with the next collection.
    leases.delete("ns", "pull").await.expect("delete");
    assert_eq!(gc.collect().await.expect("collect").ingests, 1);
    assert_eq!(refs().await, ["busy", "by-live", "unleased"]);

    // The unleased one expires and is collected without being asked; the one being
    // written stays however old it is.
    let deadline = Instant::now() + Duration::from_secs(10);
    while refs().await.contains(&"unleased".to_string()) {
        assert!(Instant::now() < deadline, "expired ingest not collected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(expiry).await;
    gc.collect().await.expect("collect");
    assert_eq!(refs().await, ["busy", "by-live"]);
    drop(busy);
    tokio::time::sleep(expiry).await;
    gc.collect().await.expect("collect");
    assert_eq!(
        refs().await,
        ["by-live"],
        "a leased ingest never expires by age"
    );
}
