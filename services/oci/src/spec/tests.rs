//! The builder against the JSON the `berth` CLI wrote before it (its untyped `spec.rs`),
//! kept in `testdata/` as that code produced it for the same inputs. Capability lists are
//! sets: the expected ones are put in capability-number order, as [`to_value`] writes them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

const ID: &str = "3f2c8a9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a";

/// The JSON of `testdata/<name>.json`, capability lists in number order.
fn golden(name: &str) -> Value {
    let text = match name {
        "busybox_default" => include_str!("testdata/busybox_default.json"),
        "user_workdir_env" => include_str!("testdata/user_workdir_env.json"),
        "numeric_user" => include_str!("testdata/numeric_user.json"),
        "image_user_entrypoint" => include_str!("testdata/image_user_entrypoint.json"),
        "privileged" => include_str!("testdata/privileged.json"),
        "cap_add_drop" => include_str!("testdata/cap_add_drop.json"),
        "cap_drop_all" => include_str!("testdata/cap_drop_all.json"),
        "cap_add_all" => include_str!("testdata/cap_add_all.json"),
        "read_only" => include_str!("testdata/read_only.json"),
        "resources" => include_str!("testdata/resources.json"),
        "hostname_tty" => include_str!("testdata/hostname_tty.json"),
        "init_entrypoint" => include_str!("testdata/init_entrypoint.json"),
        "image_without_env" => include_str!("testdata/image_without_env.json"),
        other => panic!("no golden spec {other}"),
    };
    let mut v: Value = serde_json::from_str(text).unwrap();
    for set in ["bounding", "effective", "permitted"] {
        let list = v["process"]["capabilities"][set].as_array_mut().unwrap();
        list.sort_by_key(|c| {
            CAPABILITIES
                .iter()
                .position(|(n, _)| c == n)
                .unwrap_or(usize::MAX)
        });
    }
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn busybox() -> ImageConfig {
    ImageConfig {
        env: strings(&[DEFAULT_PATH]),
        cmd: strings(&["sh"]),
        ..Default::default()
    }
}

fn app() -> ImageConfig {
    ImageConfig {
        entrypoint: strings(&["/entry"]),
        cmd: strings(&["serve", "--x"]),
        env: strings(&["PATH=/bin", "A=1"]),
        working_dir: "/app".into(),
    }
}

/// What `berth run <image>` passes: root, hostname the short id, cgroup `/default/<id>`.
fn run(image: ImageConfig) -> ContainerConfig {
    ContainerConfig {
        image,
        hostname: Some(ID[..12].to_string()),
        user: User {
            uid: 0,
            gid: 0,
            additional_gids: vec![0],
        },
        host_capabilities: CAPABILITIES.iter().map(|(_, c)| *c).collect(),
        cgroups_path: Some(format!("/default/{ID}")),
        ..Default::default()
    }
}

/// `www-data` of the test rootfs, also in group `staff` (50).
fn www_data() -> User {
    User {
        uid: 33,
        gid: 33,
        additional_gids: vec![33, 50],
    }
}

fn json_of(c: &ContainerConfig) -> Value {
    to_value(&build(c).unwrap()).unwrap()
}

fn check(name: &str, c: &ContainerConfig) {
    let got = json_of(c);
    let want = golden(name);
    assert_eq!(
        got,
        want,
        "{name}: got\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

#[test]
fn default_busybox_run() {
    check("busybox_default", &run(busybox()));
    let mut c = run(ImageConfig {
        cmd: strings(&["/hello"]),
        ..Default::default()
    });
    c.image.env.clear();
    check("image_without_env", &c);
}

#[test]
fn user_workdir_and_env() {
    let mut c = run(busybox());
    c.user = www_data();
    c.cwd = Some("/tmp".into());
    c.env = strings(&["A=1", "PATH=/x", "HOSTNAME=mine"]);
    c.args = strings(&["id"]);
    check("user_workdir_env", &c);
    let mut c = run(busybox());
    c.user = User {
        uid: 1000,
        gid: 50,
        additional_gids: vec![50],
    };
    check("numeric_user", &c);
    let mut c = run(app());
    c.user = www_data();
    check("image_user_entrypoint", &c);
}

#[test]
fn privileged() {
    let mut c = run(busybox());
    c.privileged = true;
    check("privileged", &c);
}

#[test]
fn cap_add_and_drop() {
    let mut c = run(busybox());
    c.cap_add = strings(&["net_admin", "CAP_SYS_TIME"]);
    c.cap_drop = strings(&["CHOWN", "kill"]);
    check("cap_add_drop", &c);
    c.cap_add = strings(&["chown"]);
    c.cap_drop = strings(&["ALL"]);
    check("cap_drop_all", &c);
    c.cap_add = strings(&["ALL"]);
    c.cap_drop = strings(&["SYS_ADMIN"]);
    check("cap_add_all", &c);
    c.cap_add = strings(&["NOPE"]);
    assert!(matches!(build(&c), Err(Error::UnknownCapability(n)) if n == "NOPE"));
}

#[test]
fn read_only_rootfs() {
    let mut c = run(busybox());
    c.readonly_rootfs = true;
    check("read_only", &c);
}

#[test]
fn memory_cpus_and_pids() {
    let mut c = run(busybox());
    c.resources = Resources {
        memory_limit: Some(64 << 20),
        cpu_quota: Some(150_000),
        cpu_period: Some(100_000),
        pids_limit: Some(20),
        ..Default::default()
    };
    check("resources", &c);
}

#[test]
fn hostname_and_terminal() {
    let mut c = run(busybox());
    c.hostname = Some("box".into());
    c.terminal = true;
    check("hostname_tty", &c);
}

#[test]
fn init_and_entrypoint() {
    let mut c = run(app());
    c.user = www_data();
    c.init = Some("/usr/bin/tini-static".into());
    c.entrypoint = Some(strings(&["/bin/echo"]));
    c.args = strings(&["hi"]);
    check("init_entrypoint", &c);
}

#[test]
fn entrypoint_and_cmd_combine_as_docker_does() {
    let img = app();
    let none: &[String] = &[];
    let run = strings(&["run"]);
    let sh = strings(&["/bin/sh"]);
    assert_eq!(
        command(&img, None, none).unwrap(),
        ["/entry", "serve", "--x"]
    );
    assert_eq!(command(&img, None, &run).unwrap(), ["/entry", "run"]);
    assert_eq!(command(&img, Some(&sh), &run).unwrap(), ["/bin/sh", "run"]);
    assert_eq!(command(&img, Some(&sh), none).unwrap(), ["/bin/sh"]);
    assert!(matches!(
        command(&img, Some(none), none),
        Err(Error::NoCommand)
    ));
}

/// Mounts the old CLI could not make: appended after the defaults, replacing a default at
/// the same destination.
#[test]
fn tmpfs_and_bind_mounts() {
    let mut c = run(busybox());
    let tmpfs = Mount {
        destination: "/tmp".into(),
        kind: "tmpfs".into(),
        source: "tmpfs".into(),
        options: strings(&["nosuid", "nodev", "noexec"]),
    };
    let bind = Mount {
        destination: "/data".into(),
        kind: "bind".into(),
        source: "/srv/data".into(),
        options: strings(&["rbind", "ro"]),
    };
    let shm = Mount {
        destination: "/dev/shm".into(),
        kind: "bind".into(),
        source: "/host/shm".into(),
        options: strings(&["rbind"]),
    };
    c.mounts = vec![tmpfs, bind, shm];
    let mut want = golden("busybox_default");
    let mounts = want["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["destination"] != "/dev/shm");
    mounts.extend([
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "noexec"]}),
        json!({"destination": "/data", "type": "bind", "source": "/srv/data",
               "options": ["rbind", "ro"]}),
        json!({"destination": "/dev/shm", "type": "bind", "source": "/host/shm",
               "options": ["rbind"]}),
    ]);
    assert_eq!(json_of(&c), want);
}

#[test]
fn ulimits_replace_or_add() {
    let mut c = run(busybox());
    c.rlimits = vec![
        Rlimit {
            kind: "nofile".into(),
            soft: 2048,
            hard: 4096,
        },
        Rlimit {
            kind: "RLIMIT_NPROC".into(),
            soft: 100,
            hard: 200,
        },
    ];
    let mut want = golden("busybox_default");
    want["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 4096},
        {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
    ]);
    assert_eq!(json_of(&c), want);
    c.rlimits[0].kind = "files".into();
    assert!(matches!(build(&c), Err(Error::UnknownRlimit(k)) if k == "files"));
}

#[test]
fn sysctls_annotations_and_devices() {
    let mut c = run(busybox());
    c.sysctls = BTreeMap::from([("net.ipv4.ip_forward".into(), "1".into())]);
    c.annotations = BTreeMap::from([("io.berth.test".into(), "yes".into())]);
    c.devices = vec![Device {
        path: "/dev/fuse".into(),
        kind: LinuxDeviceType::C,
        major: 10,
        minor: 229,
        file_mode: Some(0o666),
        uid: Some(0),
        gid: Some(0),
        access: "rwm".into(),
    }];
    let mut want = golden("busybox_default");
    want["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    want["annotations"] = json!({"io.berth.test": "yes"});
    want["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10,
        "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0}]);
    want["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}));
    assert_eq!(json_of(&c), want);
}

/// What the CRI needs beyond `berth run`: joined namespaces, cpu shares, no new
/// privileges, its own masked paths, no hostname, no cgroups path.
#[test]
fn namespaces_shares_and_paths() {
    let mut c = run(busybox());
    c.hostname = None;
    c.cgroups_path = None;
    c.no_new_privileges = true;
    c.namespaces = Some(vec![
        Namespace {
            kind: LinuxNamespaceType::Network,
            path: Some("/var/run/netns/pod".into()),
        },
        Namespace {
            kind: LinuxNamespaceType::Mount,
            path: None,
        },
    ]);
    c.resources.cpu_shares = Some(512);
    c.masked_paths = Some(strings(&["/proc/kcore"]));
    c.readonly_paths = Some(Vec::new());
    let mut want = golden("busybox_default");
    let obj = want.as_object_mut().unwrap();
    obj.remove("hostname");
    obj["process"]["noNewPrivileges"] = json!(true);
    obj["process"]["env"] = json!([DEFAULT_PATH]);
    let linux = obj["linux"].as_object_mut().unwrap();
    linux.remove("cgroupsPath");
    linux.remove("readonlyPaths");
    linux["maskedPaths"] = json!(["/proc/kcore"]);
    linux["namespaces"] = json!([{"type": "network", "path": "/var/run/netns/pod"},
                                 {"type": "mount"}]);
    linux["resources"]["cpu"] = json!({"shares": 512});
    assert_eq!(json_of(&c), want);
}

#[test]
fn json_reads_back_as_the_same_spec() {
    let mut c = run(app());
    c.privileged = true;
    c.init = Some("/init".into());
    let spec = build(&c).unwrap();
    let back: Spec = serde_json::from_value(to_value(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn image_config_from_oci() {
    let cfg: oci_spec::image::Config = serde_json::from_value(json!({
        "Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["A=1"], "WorkingDir": "/app",
        "User": "nobody",
    }))
    .unwrap();
    assert_eq!(
        ImageConfig::from(&cfg),
        ImageConfig {
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["serve"]),
            env: strings(&["A=1"]),
            working_dir: "/app".into(),
        }
    );
}
