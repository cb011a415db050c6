//! Tests of the bundle records and the runtime options.

use super::bundle::RUNC_OPTIONS;
use super::restore::scan_bundles;
use super::*;
use berth_proto::ttrpc::protobuf::well_known_types::any::Any as PbAny;
use berth_proto::ttrpc::shim::oci::Options;

fn runtime(root: Option<&str>) -> crate::config::RuntimeConfig {
    crate::config::RuntimeConfig {
        shim: "containerd-shim-berth-v2".into(),
        runtime: "crun".into(),
        runtime_root: root.map(PathBuf::from),
    }
}

fn decode(a: Option<PbAny>) -> Options {
    let a = a.expect("options");
    assert_eq!(a.type_url, RUNC_OPTIONS);
    Options::parse_from_bytes(&a.value).expect("decode")
}

#[test]
fn saved_task_round_trip_and_bundle_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tasks");
    let bundle = root.join("ns1").join("t1");
    std::fs::create_dir_all(&bundle).expect("bundle");
    assert_eq!(SavedTask::load(&bundle).expect("load"), None);
    let saved = SavedTask {
        runtime: "io.containerd.runc.v2".into(),
        config: runtime(Some("/r")),
        shim_pid: Some(42),
    };
    saved.save(&bundle).expect("save");
    assert_eq!(SavedTask::load(&bundle).expect("load"), Some(saved));
    std::fs::write(bundle.join(SavedTask::FILE), b"{").expect("corrupt");
    assert!(matches!(
        SavedTask::load(&bundle),
        Err(Error::Corrupt { .. })
    ));

    // A hidden leftover goes; a stray file is not a bundle.
    std::fs::create_dir_all(root.join("ns1").join(".t0-deleting")).expect("hidden");
    std::fs::write(root.join("ns1").join("stray"), b"").expect("stray");
    let found = scan_bundles(&root).expect("scan");
    assert_eq!(found, vec![("ns1".into(), "t1".into(), bundle)]);
    assert!(!root.join("ns1").join(".t0-deleting").exists());
    assert!(
        scan_bundles(&dir.path().join("none"))
            .expect("scan")
            .is_empty()
    );
}

#[test]
fn runc_options_fill_binary_and_per_daemon_root() {
    let o = decode(runc_options(None, &runtime(None), Path::new("/run/b")).expect("opts"));
    assert_eq!(o.binary_name, "crun");
    assert_eq!(o.root, "/run/b/runc");

    let o = decode(runc_options(None, &runtime(Some("/r")), Path::new("/run/b")).expect("opts"));
    assert_eq!(o.root, "/r");

    // A client's own binary and root win; its other settings are kept.
    let given = Options {
        binary_name: "runc.custom".into(),
        root: "/mine".into(),
        systemd_cgroup: true,
        ..Default::default()
    };
    let any = AnyValue {
        type_url: format!("type.googleapis.com/{RUNC_OPTIONS}"),
        value: given.write_to_bytes().expect("encode"),
    };
    let o = decode(runc_options(Some(any), &runtime(None), Path::new("/s")).expect("opts"));
    assert_eq!(o.binary_name, "runc.custom");
    assert_eq!(o.root, "/mine");
    assert!(o.systemd_cgroup);

    // Options of another type go to the shim unchanged.
    let other = AnyValue {
        type_url: "x.Other".into(),
        value: vec![1, 2],
    };
    let a = runc_options(Some(other), &runtime(None), Path::new("/s"))
        .expect("opts")
        .expect("some");
    assert_eq!(
        (a.type_url.as_str(), a.value.as_slice()),
        ("x.Other", &[1u8, 2][..])
    );

    let bad = AnyValue {
        type_url: RUNC_OPTIONS.into(),
        value: vec![0xff, 0xff],
    };
    assert!(matches!(
        runc_options(Some(bad), &runtime(None), Path::new("/s")),
        Err(Error::InvalidArgument(_))
    ));
}
