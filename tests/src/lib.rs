//! Test support: start the real `berthd` (and real containerd) on temporary root, state and
//! socket paths, run the real `ctr` and our `berth` against them, and clean up by pid.
//!
//! The binaries are the workspace's own build output (`cargo build --workspace` first, as
//! `.ci/run` does); a missing binary fails the test loudly.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub mod dockerd;
pub mod fixtures;

/// The directory holding the workspace's built binaries (`target/<profile>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one of our binaries; panics with a clear message when it was not built. A
/// release run (the benchmarks) takes the deployed build of berthd and of the shim in
/// `target/lean` (deploy/build-lean.sh) when it is there and not older than the release
/// build's own.
pub fn bin(name: &str) -> PathBuf {
    let dir = target_dir();
    let lean = dir.with_file_name("lean").join(name);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if dir.ends_with("release")
        && let Some(lean_time) = modified(&lean)
        && modified(&dir.join(name)).is_none_or(|t| lean_time >= t)
    {
        return lean;
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// Path of a system program the tests need; panics when it is not installed.
pub fn system_bin(name: &str) -> PathBuf {
    for dir in ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: .ci/run installs it (apt-get install containerd runc ...)");
}

/// Writes an executable script at `path` that appends its command line to `log`, then runs
/// Debian's runc with it: a runtime binary whose calls a test can read.
pub fn noting_runc(path: &Path, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        system_bin("runc").display()
    );
    std::fs::write(path, script).expect("write the runc script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the runc script");
}

/// Where berthd finds the shim: the directory of [`bin`]'s shim.
pub fn shim_dir() -> PathBuf {
    let shim = bin("containerd-shim-berth-v2");
    shim.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(target_dir)
}

/// Builds the Go program in `tests/<name>/` (GOPATH mode, offline, on Debian's Go
/// packages under /usr/share/gocode) into the target dir, once per test process, and
/// returns its path. It is built under a name of its own, then renamed: another test
/// process building at the same time never sees a half-written binary.
pub fn go_build(name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get_or_insert_with(HashMap::new).get(name) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let out = target_dir().join(name);
    let tmp = target_dir().join(format!("{name}.tmp-{}", std::process::id()));
    let mut cmd = Command::new(system_bin("go"));
    cmd.arg("build")
        .arg("-o")
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .stdin(Stdio::null());
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
        cmd.env("GOCACHE", target_dir().join("go-build-cache"));
    }
    let result = cmd.output().expect("run go build");
    assert!(
        result.status.success(),
        "go build of {} failed ({}):\n{}{}",
        src.display(),
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the Go program into place");
    built
        .get_or_insert_with(HashMap::new)
        .insert(name.to_string(), out.clone());
    out
}

/// The registry of a CRI side-by-side run (images built under `work`): busybox as
/// `lib/busybox:1.35` (returned with its reference), and, as containerd's sandbox image, a
/// busybox that sleeps as `pause:3.6`.
pub fn cri_registry(work: &Path) -> (fixtures::Registry, String, fixtures::BuiltImage) {
    let reg = fixtures::Registry::start();
    let bb = fixtures::busybox_image(&work.join("bb"), "1.35");
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    let pause = fixtures::busybox_image_with(
        &work.join("pause"),
        "3.6",
        serde_json::json!({"Entrypoint": ["/bin/sleep"], "Cmd": ["100000000"]}),
    );
    reg.push_layout(&pause.layout, "pause:3.6");
    let image = reg.reference("lib/busybox:1.35");
    (reg, image, bb)
}

/// What berthd logs once it serves every call (the previous run's tasks restored).
pub const READY: &str = "tasks restored; every call is served";

/// A berthd process on its own temporary root, state and socket.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    pub log: PathBuf,
    extra_args: Vec<String>,
    /// The config file's text (empty: the embedded defaults).
    config: String,
    /// A directory put first on berthd's `PATH` (before the shim's own directory).
    path_first: Option<PathBuf>,
    /// The default bridge network of this daemon alone (its interface and subnet).
    pub network: TestNetwork,
}

/// A bridge interface name and a /24 that no other test on this machine holds while this
/// one lives: a berthd's default bridge network, so that parallel daemons never share one.
/// Taken by creating `/tmp/berth-test-subnets/<n>`; given back (with the bridge and any
/// iptables rule left for the subnet) when dropped.
pub struct TestNetwork {
    pub bridge: String,
    pub subnet: String,
    /// `10.x.y.` — every address of the subnet starts so.
    pub prefix: String,
    claim: PathBuf,
}

impl TestNetwork {
    pub fn claim() -> TestNetwork {
        let dir = Path::new("/tmp/berth-test-subnets");
        std::fs::create_dir_all(dir).expect("subnet claims dir");
        let start = (std::process::id() as usize * 131) % 10_240;
        for i in 0..10_240 {
            let n = (start + i) % 10_240;
            let claim = dir.join(n.to_string());
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
                .is_ok()
            {
                let prefix = format!("10.{}.{}.", 200 + n / 256, n % 256);
                return TestNetwork {
                    bridge: format!("bt{n}"),
                    subnet: format!("{prefix}0/24"),
                    prefix,
                    claim,
                };
            }
        }
        panic!("no free test subnet: /tmp/berth-test-subnets is full");
    }

    /// berthd's `[network]` config section for this network.
    pub fn config(&self) -> String {
        format!(
            "[network]\nbridge = \"{}\"\nsubnet = \"{}\"\n",
            self.bridge, self.subnet
        )
    }

    /// A CNI configuration directory (`<work>/net.d`) for CRI pods on this network: a
    /// bridge on its interface and subnet, addresses from host-local (its data under
    /// `work`), and portmap for host ports.
    pub fn cni_conf_dir(&self, work: &Path) -> PathBuf {
        let dir = work.join("net.d");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("cri-{}", self.bridge),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": work.join("ipam").display().to_string(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        std::fs::write(dir.join("10-test.conflist"), conf.to_string()).expect("write conflist");
        dir
    }

    /// The iptables rules (`iptables-save` lines) that name this subnet.
    pub fn iptables_rules(&self) -> Vec<String> {
        let out = Command::new("iptables-save")
            .output()
            .expect("iptables-save");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&self.prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        // The safety net of a test that failed with containers attached.
        let out = Command::new("iptables-save").output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let mut table = String::new();
        for line in text.unwrap_or_default().lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(rule) = line.strip_prefix("-A ")
                && (line.contains(&self.prefix)
                    || line.split_whitespace().any(|w| w == self.bridge))
            {
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -w -t {table} -D {rule}"))
                    .output();
            }
        }
        // The host ports of CRI pods left by a failed test: portmap's per-pod chain and
        // its jump, named by the network's name (`cri-<bridge>`, see `cni_conf_dir`).
        let nat = Command::new("iptables-save").args(["-t", "nat"]).output();
        let nat = nat.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let name = format!("dnat name: \\\"cri-{}\\\"", self.bridge);
        for line in nat.unwrap_or_default().lines() {
            let Some(rule) = line.strip_prefix("-A CNI-HOSTPORT-DNAT ") else {
                continue;
            };
            let Some(chain) = rule.split_whitespace().skip_while(|w| *w != "-j").nth(1) else {
                continue;
            };
            if !rule.contains(&name) || !chain.starts_with("CNI-DN-") {
                continue;
            }
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "iptables -w -t nat -D CNI-HOSTPORT-DNAT {rule}; iptables -w -t nat -F {chain}; iptables -w -t nat -X {chain}"
                ))
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = std::fs::remove_file(&self.claim);
    }
}

impl Daemon {
    /// [`Daemon::start`] with the busybox fixture imported (as
    /// [`fixtures::BUSYBOX_REF`]); the temp dir holds the fixture's files.
    pub fn with_busybox() -> (Daemon, tempfile::TempDir) {
        let d = Daemon::start();
        let work = tempfile::tempdir().expect("tempdir");
        fixtures::import_busybox(work.path(), |a| d.ctr(a));
        (d, work)
    }

    /// Starts berthd with the embedded defaults and temp paths, and waits until it serves.
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Daemon {
        Self::start_in_with("/tmp", extra_args)
    }

    /// Starts berthd with its root and state under `base` (e.g. /dev/shm for benchmarks).
    pub fn start_in(base: &str) -> Daemon {
        Self::start_in_with(base, &[])
    }

    /// Starts berthd with `config` (TOML) as its config file.
    pub fn start_with_config(config: &str) -> Daemon {
        Self::start_full("/tmp", &[], config)
    }

    /// Starts berthd as deployed, at its embedded log level (info, not the tests' debug),
    /// with its root and state under `base`: what the benchmarks measure.
    pub fn start_in_as_deployed(base: &str) -> Daemon {
        Self::start_in_with(base, &["--log-level", "info"])
    }

    fn start_in_with(base: &str, extra_args: &[&str]) -> Daemon {
        Self::start_full(base, extra_args, "")
    }

    /// Like [`Daemon::start`], with `dir` put first on berthd's `PATH` (where it looks for
    /// `containerd-shim-<name>-v2` binaries), ahead of our shim's directory.
    pub fn start_with_path(dir: &Path) -> Daemon {
        Self::start_spawned("/tmp", &[], "", Some(dir.to_path_buf()))
    }

    fn start_full(base: &str, extra_args: &[&str], config: &str) -> Daemon {
        Self::start_spawned(base, extra_args, config, None)
    }

    fn start_spawned(
        base: &str,
        extra_args: &[&str],
        config: &str,
        path_first: Option<PathBuf>,
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir_in(base)
            .expect("tempdir");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let address = state.join("berth.sock");
        let log = dir.path().join("berthd.log");
        let network = TestNetwork::claim();
        let config = if config.contains("[network]") {
            config.to_string()
        } else {
            format!("{config}\n{}", network.config())
        };
        let mut d = Daemon {
            child: None,
            root,
            state,
            address,
            log,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            config,
            path_first,
            network,
        };
        d.spawn();
        d
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin("berthd"));
        cmd.arg("--config")
            .arg(self.dir.path().join("no-config.toml"))
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--address")
            .arg(&self.address);
        // The tests read berthd's debug lines, unless the daemon was given its own level.
        if !self.extra_args.iter().any(|a| a == "--log-level") {
            cmd.arg("--log-level").arg("debug");
        }
        cmd.args(&self.extra_args);
        // The default runtime names the shim by bare name: find ours first on PATH.
        let shim_dir = shim_dir();
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", shim_dir.display()));
        if let Some(first) = &self.path_first {
            cmd.env(
                "PATH",
                format!("{}:{}:{path}", first.display(), shim_dir.display()),
            );
        }
        cmd
    }

    fn spawn(&mut self) {
        let start = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        self.spawn_process();
        self.wait_ready(start);
    }

    /// Whether the log past byte `start` says berthd serves every call (said once per
    /// start, after the previous run's tasks are restored). Only this start's part of the
    /// log is read: a long run's log is large.
    fn ready_since(&self, start: u64) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut log) = File::open(&self.log) else {
            return false;
        };
        let mut text = Vec::new();
        if log.seek(SeekFrom::Start(start)).is_err() || log.read_to_end(&mut text).is_err() {
            return false;
        }
        String::from_utf8_lossy(&text).contains(READY)
    }

    /// Starts the berthd process (its output appended to the log) without waiting for it.
    fn spawn_process(&mut self) {
        // An empty config file: berthd runs on its embedded defaults plus our flags.
        std::fs::write(self.dir.path().join("no-config.toml"), &self.config).expect("write config");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
    }

    /// Runs berthd with the same paths in the foreground (for tests of start-up failures).
    pub fn run_second(&self) -> Output {
        self.command()
            .stdin(Stdio::null())
            .output()
            .expect("run berthd")
    }

    /// Waits until this start's berthd serves every call: its socket answers and its log,
    /// past byte `start`, says so.
    fn wait_ready(&mut self, start: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.address).is_ok()
                && self.ready_since(start)
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "berthd exited during start-up ({status}):\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "berthd did not start serving within 20s:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM berthd");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "berthd did not exit within 30s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL berthd");
        child.wait().expect("reap berthd");
    }

    /// Kills berthd with SIGKILL and starts it again on the same paths without waiting for
    /// it to serve (for measuring how soon it does).
    pub fn crash_and_spawn(&mut self) {
        self.kill9();
        self.spawn_process();
    }

    /// Starts berthd again on the same root, state and socket.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(
                status.success(),
                "berthd exited with {status} on SIGTERM:\n{}",
                self.log_text()
            );
        }
        self.spawn();
    }

    /// Runs the real `ctr` against this daemon.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(system_bin("ctr"))
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// Runs our `berth` CLI against this daemon.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// Our `berth` CLI against this daemon, to be run as the caller likes.
    pub fn berth_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("berth"));
        cmd.arg("--address")
            .arg(&self.address)
            .args(args)
            .env_remove("BERTH_NAMESPACE");
        cmd
    }

    /// A gRPC channel to this daemon.
    pub async fn channel(&self) -> tonic::transport::Channel {
        channel(&self.address).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        clean_up_after(self.dir.path());
    }
}

/// Every running shim process (`containerd-shim*`): its pid and its arguments.
pub fn shim_processes() -> Vec<(i32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.contains("containerd-shim")) {
            found.push((pid, args));
        }
    }
    found
}

/// The safety net of a test that failed before removing its containers: every shim started
/// for a daemon under `dir` (its `-address` lies there) has its container deleted with
/// `runc delete --force` (container processes, runc state and cgroups go) and is killed;
/// then whatever is still mounted under `dir` is unmounted, deepest first.
pub fn clean_up_after(dir: &Path) {
    let needle = dir.display().to_string();
    for (pid, args) in shim_processes() {
        if !args.iter().any(|a| a.starts_with(&needle)) {
            continue;
        }
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        if let (Some(ns), Some(id)) = (flag("-namespace"), flag("-id")) {
            let roots = [
                dir.join("state").join("runc").join(&ns),
                Path::new("/run/berth/runc").join(&ns),
                Path::new("/run/containerd/runc").join(&ns),
            ];
            for root in roots.iter().filter(|r| r.join(&id).exists()) {
                let _ = Command::new(system_bin("runc"))
                    .arg("--root")
                    .arg(root)
                    .args(["delete", "--force", &id])
                    .output();
            }
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&needle))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").args(["-l", &m]).output();
    }
}

/// A gRPC channel over a unix socket.
pub async fn channel(path: &Path) -> tonic::transport::Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::try_from("http://berthd.invalid")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connect")
}

/// Adds the namespace header to a request.
pub fn in_ns<T>(ns: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "containerd-namespace",
        ns.parse().expect("namespace header"),
    );
    r
}

/// A background process whose stdout goes to a file we can poll (e.g. `ctr events`).
pub struct Background {
    child: Child,
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Background {
        let dir = tempfile::Builder::new()
            .prefix("berth-bg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let out = dir.path().join("out");
        let f = File::create(&out).expect("out file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn background process");
        Background {
            child,
            out,
            _dir: dir,
        }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The process's exit status, when it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .try_wait()
            .expect("wait for a background process")
    }

    /// Waits (bounded) for the process to exit; returns its status and output.
    pub fn wait(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return (status, self.text());
            }
            if Instant::now() > deadline {
                panic!("still running after {timeout:?}; output:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the output contains every needle; returns the output.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {needles:?} in output:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stdout of a command that must succeed.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a command that must fail.
pub fn fails(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A container record (runc v2 runtime, [`minimal_spec`]) for the Containers service.
pub fn container_record(id: &str) -> berth_proto::containerd::services::containers::v1::Container {
    use berth_proto::containerd::services::containers::v1 as cpb;
    cpb::Container {
        id: id.to_string(),
        runtime: Some(cpb::container::Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: minimal_spec().into_bytes(),
        }),
        ..Default::default()
    }
}

/// A minimal OCI runtime spec, enough for a container record.
pub fn minimal_spec() -> String {
    serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {"args": ["/bin/sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
    })
    .to_string()
}

/// Real containerd (Debian's package) on its own temporary root, state and socket, for
/// side-by-side comparisons. CRI is disabled unless asked for ([`Containerd::start_with_cri`]).
pub struct Containerd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub address: PathBuf,
    pub log: PathBuf,
    /// containerd's `PATH`, when a directory is put first on it.
    path: Option<String>,
}

impl Containerd {
    pub fn start() -> Containerd {
        Self::start_in("/tmp")
    }

    /// Starts containerd with its root and state under `base`.
    pub fn start_in(base: &str) -> Containerd {
        Self::start_in_with(base, "", None)
    }

    /// Starts containerd with `extra_toml` appended to its config (e.g. a
    /// `[proxy_plugins.<name>]` table).
    pub fn start_with_config(extra_toml: &str) -> Containerd {
        Self::start_in_with("/tmp", extra_toml, None)
    }

    /// Like [`Containerd::start_in`], with `path_first` put first on containerd's `PATH`
    /// (where it looks for `containerd-shim-<name>-v2` binaries).
    pub fn start_with_path(base: &str, path_first: Option<&Path>) -> Containerd {
        Self::start_in_with(base, "", path_first)
    }

    /// Starts containerd with its CRI plugin on, `cri_toml` appended to its config (the
    /// plugin's sandbox image, CNI and registry tables).
    pub fn start_with_cri(cri_toml: &str) -> Containerd {
        Self::start_full("/tmp", cri_toml, None, true)
    }

    /// containerd with its CRI plugin on, as the CRI side-by-side runs use it: the
    /// sandbox image `<registry>/pause:3.6` (see [`cri_registry`]), that registry as a
    /// plain-HTTP mirror, Debian's CNI plugins with the config of `cni_conf_dir`.
    pub fn start_cri(registry: &str, cni_conf_dir: &Path) -> Containerd {
        Self::start_with_cri(&format!(
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n\
               sandbox_image = \"{registry}/pause:3.6\"\n\
               disable_apparmor = true\n\
               restrict_oom_score_adj = true\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
               bin_dir = \"/usr/lib/cni\"\n\
               conf_dir = \"{}\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{registry}\"]\n\
               endpoint = [\"http://{registry}\"]\n",
            cni_conf_dir.display()
        ))
    }

    fn start_in_with(base: &str, extra_toml: &str, path_first: Option<&Path>) -> Containerd {
        Self::start_full(base, extra_toml, path_first, false)
    }

    fn start_full(
        base: &str,
        extra_toml: &str,
        path_first: Option<&Path>,
        cri: bool,
    ) -> Containerd {
        let disabled = if cri {
            ""
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-ctd-")
            .tempdir_in(base)
            .expect("tempdir");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let address = state.join("containerd.sock");
        let log = dir.path().join("containerd.log");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\n{disabled}\
                 [grpc]\n  address = {:?}\n[ttrpc]\n  address = \"{}.ttrpc\"\n[debug]\n  address = \"\"\n\
                 [metrics]\n  address = \"\"\n{extra_toml}\n",
                root.display().to_string(),
                state.display().to_string(),
                address.display().to_string(),
                address.display()
            ),
        )
        .expect("write containerd config");
        let path = path_first.map(|dir| {
            let path = std::env::var("PATH").unwrap_or_default();
            format!("{}:{path}", dir.display())
        });
        let mut c = Containerd {
            child: None,
            dir,
            address,
            log,
            path,
        };
        c.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&c.address).is_err() {
            if let Some(child) = c.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "containerd exited ({status}):\n{}",
                    std::fs::read_to_string(&c.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start within 30s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    fn spawn(&mut self) {
        let f = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = Command::new(system_bin("containerd"));
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        let child = cmd
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn containerd");
        self.child = Some(child);
    }

    /// Kills containerd with SIGKILL and starts it again on the same paths without
    /// waiting for it to serve.
    pub fn crash_and_spawn(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut exited = false;
            while !exited && Instant::now() < deadline {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                if !exited {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        clean_up_after(self.dir.path());
    }
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Drops a program's file from the page cache (`POSIX_FADV_DONTNEED`; pages some process
/// maps stay), so that the next start maps it as after a reboot. How a binary came into
/// the page cache (written by the linker, copied, read ahead) sets the size of its cached
/// folios and so how many pages each fault maps: the same file started "warm" after a copy
/// showed 0.9 MB more RSS here than started cold. The memory benches start every daemon
/// and shim cold.
pub fn evict_from_page_cache(path: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .unwrap_or_else(|e| panic!("fadvise {}: {e}", path.display()));
}

/// Proportional set size of a process (shared pages counted once across their sharers), in
/// KiB; 0 once it is gone.
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A benchmark's timings as (median, min, max), in milliseconds; `v` must not be empty.
pub fn spread_ms(v: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
}

/// The parent pid of a process (from `/proc/<pid>/status`); None once it is gone.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The process group and session of a process (from `/proc/<pid>/stat`).
pub fn group_and_session(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses: state ppid pgrp session.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// Whether a process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits (bounded) until the process is gone or a zombie; panics naming `what` otherwise.
pub fn wait_dead(pid: u32, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The mount points at or under `dir` (by path components, so `/a/bc` is not under
/// `/a/b`), from this process's mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

/// A tmpfs of a given size mounted on a temp dir for one test (the disk-full tests); on
/// drop, whatever was started on it is cleaned up and it is unmounted.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("berth-disk-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        ok(
            &Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
                .expect("mount"),
            "mount tmpfs",
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The mount point as a `&str` (for [`Daemon::start_in`]).
    pub fn base(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 path")
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.dir.path()).expect("statvfs");
        st.blocks_available() * st.fragment_size()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        clean_up_after(self.dir.path());
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a failed CRI test leaves of a pod's host ports (portmap's per-pod chain and
    /// its jump) goes with the test's network.
    #[test]
    fn a_network_takes_its_pods_host_ports_along() {
        let net = TestNetwork::claim();
        let chain = format!("CNI-DN-berthtest{}", std::process::id());
        let rule = format!(
            "-p tcp -m comment --comment 'dnat name: \"cri-{}\" id: \"x\"' -m multiport --dports 9 -j {chain}",
            net.bridge
        );
        let run = |cmd: &str| {
            let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
            assert!(out.status.success(), "{cmd}: {out:?}");
        };
        // portmap's chain may not exist on this host yet.
        let _ = Command::new("iptables")
            .args(["-w", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT"])
            .output();
        run(&format!("iptables -w -t nat -N {chain}"));
        run(&format!("iptables -w -t nat -A CNI-HOSTPORT-DNAT {rule}"));
        drop(net);
        let nat = Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .expect("iptables-save");
        assert!(!String::from_utf8_lossy(&nat.stdout).contains(&chain));
    }
}
