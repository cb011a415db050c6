//! The volumes domain on a real store and a temporary root: names, the table, the in-use
//! rule, filters and prune.

use std::collections::BTreeMap;

use super::*;
use crate::containers::Containers;
use crate::events::Exchange;

struct Fixture {
    _dir: tempfile::TempDir,
    volumes: Volumes,
    containers: Containers,
    exchange: Exchange,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(&dir.path().join("meta.redb")).expect("db");
    let (gc, _requests) = crate::collector::channel();
    let containers = Containers::new(store.clone(), Exchange::new(), gc);
    let exchange = Exchange::new();
    let volumes = Volumes::new(store, exchange.clone(), dir.path().join("volumes"));
    Fixture {
        _dir: dir,
        volumes,
        containers,
        exchange,
    }
}

fn named(name: &str) -> CreateVolume {
    CreateVolume {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

async fn container_using(f: &Fixture, id: &str, volumes: &str, anonymous: &str) {
    let mut labels = BTreeMap::from([(VOLUMES_LABEL.to_string(), volumes.to_string())]);
    if !anonymous.is_empty() {
        labels.insert(ANONYMOUS_VOLUMES_LABEL.to_string(), anonymous.to_string());
    }
    f.containers
        .create(
            "ns",
            Container {
                id: id.to_string(),
                labels,
                runtime: Some(crate::containers::Runtime {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                }),
                spec: Some(crate::types::AnyValue {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: b"{}".to_vec(),
                }),
                ..Default::default()
            },
        )
        .await
        .expect("container");
}

#[test]
fn names_follow_dockers_rule() {
    for good in ["ab", "data", "a.b-c_1", "0x"] {
        assert!(valid_name(good), "{good}");
    }
    for bad in ["a", "", "-ab", ".ab", "a b", "a/b", "ü1"] {
        assert!(!valid_name(bad), "{bad}");
    }
    let anon = anonymous_name();
    assert_eq!(anon.len(), 64);
    assert!(anon.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(valid_name(&anon));
}

#[tokio::test]
async fn create_is_idempotent_and_makes_the_data_directory() {
    let f = fixture();
    let mut req = named("data");
    req.labels.insert("k".into(), "v".into());
    let (v, created) = f.volumes.create("ns", req).await.expect("create");
    assert!(created);
    assert_eq!(v.driver, "local");
    assert!(v.mountpoint.ends_with("volumes/ns/data/_data"));
    assert!(v.mountpoint.is_dir());
    std::fs::write(v.mountpoint.join("f"), "x").expect("write");
    let (again, created) = f.volumes.create("ns", named("data")).await.expect("again");
    assert!(!created);
    assert_eq!(again.labels.get("k").map(String::as_str), Some("v"));
    assert!(again.mountpoint.join("f").exists(), "data kept");
    // Another namespace has its own volume of that name.
    let (other, created) = f.volumes.create("ns2", named("data")).await.expect("ns2");
    assert!(created);
    assert_ne!(other.mountpoint, v.mountpoint);
}

#[tokio::test]
async fn create_refuses_bad_names_drivers_and_options() {
    let f = fixture();
    let err = f.volumes.create("ns", named("a/b")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string().contains("includes invalid characters"),
        "{err}"
    );
    let mut req = named("data");
    req.driver = "nfs".into();
    let err = f.volumes.create("ns", req).await.unwrap_err();
    assert!(
        err.to_string().contains("plugin \"nfs\" not found"),
        "{err}"
    );
    let mut req = named("data");
    req.options.insert("colour".into(), "red".into());
    let err = f.volumes.create("ns", req).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid option: \"colour\""),
        "{err}"
    );
    let err = f.volumes.create("ns", named("a")).await.unwrap_err();
    assert!(
        err.to_string().contains("volume name is too short"),
        "{err}"
    );
    assert!(
        f.volumes
            .get("ns", "data")
            .await
            .unwrap_err()
            .is_not_found(),
        "nothing recorded"
    );
}

#[tokio::test]
async fn anonymous_volumes_get_a_random_name_and_dockers_label() {
    let f = fixture();
    let (v, _) = f
        .volumes
        .create(
            "ns",
            CreateVolume {
                anonymous: true,
                ..Default::default()
            },
        )
        .await
        .expect("create");
    assert_eq!(v.name.len(), 64);
    assert!(v.anonymous);
    assert!(v.labels.contains_key(ANONYMOUS_LABEL));
}

#[tokio::test]
async fn a_volume_in_use_is_not_removed() {
    let f = fixture();
    f.volumes.create("ns", named("data")).await.expect("create");
    container_using(&f, "c1", "other,data", "").await;
    let v = f.volumes.get("ns", "data").await.expect("get");
    assert_eq!(v.used_by, ["c1"]);
    for force in [false, true] {
        let err = f.volumes.delete("ns", "data", force).await.unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "remove data: volume is in use - [c1]: failed precondition"
        );
    }
    f.containers.delete("ns", "c1").await.expect("rm container");
    let dir = v.mountpoint.parent().expect("dir").to_path_buf();
    f.volumes.delete("ns", "data", false).await.expect("rm");
    assert!(!dir.exists());
    let err = f.volumes.delete("ns", "data", false).await.unwrap_err();
    assert_eq!(err.to_string(), "get data: no such volume: not found");
    f.volumes
        .delete("ns", "data", true)
        .await
        .expect("rm -f of a missing volume");
}

#[tokio::test]
async fn filters_and_prune() {
    let f = fixture();
    let mut labelled = named("keep");
    labelled.labels.insert("tier".into(), "db".into());
    f.volumes.create("ns", labelled).await.expect("keep");
    f.volumes.create("ns", named("used")).await.expect("used");
    f.volumes.create("ns", named("idle")).await.expect("idle");
    let (anon, _) = f
        .volumes
        .create(
            "ns",
            CreateVolume {
                anonymous: true,
                ..Default::default()
            },
        )
        .await
        .expect("anon");
    std::fs::write(anon.mountpoint.join("f"), "12345").expect("write");
    container_using(&f, "c1", "used", "").await;

    let names = |vs: Vec<Volume>| vs.into_iter().map(|v| v.name).collect::<Vec<_>>();
    let list = |filters: &[&str]| {
        let parsed =
            VolumeFilters::parse(&filters.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("filters");
        let v = f.volumes.clone();
        async move { names(v.list("ns", &parsed).await.expect("list")) }
    };
    assert_eq!(list(&["label=tier=db"]).await, ["keep"]);
    assert_eq!(list(&["label=tier"]).await, ["keep"]);
    // (not a hex digit in the filter: the anonymous volume's name is random hex)
    assert_eq!(list(&["name=kee"]).await, ["keep"]);
    assert_eq!(list(&["name=^id"]).await, ["idle"]);
    assert_eq!(list(&["dangling=false"]).await, ["used"]);
    assert_eq!(list(&["dangling=true", "driver=local"]).await.len(), 3);
    assert!(list(&["driver=nfs"]).await.is_empty());
    assert!(VolumeFilters::parse(&["colour=red".into()]).is_err());
    assert!(VolumeFilters::parse(&["dangling=maybe".into()]).is_err());

    // Docker ≥ 23: only anonymous volumes, unless all.
    let none = VolumeFilters::default();
    let pruned = f.volumes.prune("ns", false, &none).await.expect("prune");
    assert_eq!(pruned.deleted, std::slice::from_ref(&anon.name));
    assert_eq!(pruned.reclaimed, 5);
    let not_db = VolumeFilters::parse(&["label!=tier".into()]).expect("filters");
    let pruned = f
        .volumes
        .prune("ns", true, &not_db)
        .await
        .expect("prune -a");
    assert_eq!(pruned.deleted, ["idle"]);
    let left = names(f.volumes.list("ns", &none).await.expect("list"));
    assert_eq!(left, ["keep", "used"]);
}

#[tokio::test]
async fn anonymous_volumes_go_with_their_container() {
    let f = fixture();
    f.volumes.create("ns", named("named")).await.expect("named");
    let (anon, _) = f
        .volumes
        .create(
            "ns",
            CreateVolume {
                anonymous: true,
                ..Default::default()
            },
        )
        .await
        .expect("anon");
    let list = format!("named,{}", anon.name);
    container_using(&f, "c1", &list, &anon.name).await;
    let labels = f.containers.get("ns", "c1").await.expect("get").labels;
    // Still in use by its record: stays.
    f.volumes
        .remove_anonymous_of("ns", &labels)
        .await
        .expect("remove");
    assert!(f.volumes.get("ns", &anon.name).await.is_ok());
    f.containers.delete("ns", "c1").await.expect("rm");
    f.volumes
        .remove_anonymous_of("ns", &labels)
        .await
        .expect("remove");
    assert!(
        f.volumes
            .get("ns", &anon.name)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(f.volumes.get("ns", "named").await.is_ok(), "named stays");
}

#[tokio::test]
async fn sweep_removes_directories_without_records() {
    let f = fixture();
    let (v, _) = f.volumes.create("ns", named("real")).await.expect("create");
    let stray = f.volumes.root().join("ns").join("stray").join("_data");
    std::fs::create_dir_all(&stray).expect("stray");
    assert_eq!(f.volumes.sweep().await.expect("sweep"), 1);
    assert!(!stray.exists());
    assert!(v.mountpoint.exists());
}

#[tokio::test]
async fn a_namespace_with_volumes_is_not_deleted() {
    let f = fixture();
    f.volumes.create("ns", named("data")).await.expect("create");
    let namespaces = crate::namespaces::Namespaces::new(f.volumes.store.clone(), Exchange::new());
    let err = namespaces.delete("ns").await.unwrap_err();
    assert!(err.to_string().contains("still has volumes"), "{err}");
    f.volumes.delete("ns", "data", false).await.expect("rm");
    namespaces.delete("ns").await.expect("now empty");
}

#[tokio::test]
async fn creations_and_removals_are_published() {
    let f = fixture();
    let filter =
        crate::filters::Filter::parse_all(&["topic~=\"/volumes/\"".to_string()]).expect("filter");
    let mut events = f.exchange.subscribe(filter);
    f.volumes.create("ns", named("data")).await.expect("create");
    f.volumes
        .create("ns", named("data"))
        .await
        .expect("again: no event");
    f.volumes.delete("ns", "data", false).await.expect("rm");
    let first = events.next(&crate::events::NoFields).await.expect("event");
    assert_eq!(
        (first.namespace.as_str(), first.topic.as_str()),
        ("ns", "/volumes/create")
    );
    let second = events.next(&crate::events::NoFields).await.expect("event");
    assert_eq!(second.topic, "/volumes/delete");
}
