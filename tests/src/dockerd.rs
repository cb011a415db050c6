//! A dockerd of one test (or bench) alone: Debian's `docker.io`, with its own data root,
//! exec root, pidfile and socket, no bridge and no iptables rules, so that it collides with
//! nothing; the same busybox as berth's fixture imported under the same name. The oracle
//! for the docker-style verbs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{BUSYBOX_REF, host_busybox};
use crate::ok;

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    docker: PathBuf,
}

impl Dockerd {
    /// Starts one; fails loudly when Debian's `docker.io` is not installed.
    pub fn start() -> Dockerd {
        Self::start_if_installed()
            .expect("dockerd and docker (Debian's docker.io) are needed: .ci/run installs them")
    }

    /// Starts one if `dockerd` and `docker` are installed.
    pub fn start_if_installed() -> Option<Dockerd> {
        let (dockerd, docker) = (on_path("dockerd")?, on_path("docker")?);
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let p = |n: &str| dir.path().join(n).display().to_string();
        let child = Command::new(dockerd)
            .args(["--data-root", &p("root"), "--exec-root", &p("exec")])
            .args([
                "--pidfile",
                &p("pid"),
                "-H",
                &format!("unix://{}", p("sock")),
            ])
            .args(["--bridge=none", "--iptables=false", "--ip-forward=false"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { child, dir, docker };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd does not answer: {}",
                std::fs::read_to_string(d.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d.import_busybox();
        Some(d)
    }

    /// The same busybox as berth's fixture, as a flat image of the same name.
    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
        std::fs::copy(host_busybox(), rootfs.join("bin/busybox")).expect("busybox");
        for applet in ["sh", "true", "sleep", "echo", "hostname", "cat", "ls"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet");
        }
        let tar = self.dir.path().join("rootfs.tar");
        ok(
            &Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .output()
                .expect("tar"),
            "tar rootfs",
        );
        ok(
            &self.docker(&["import", &tar.display().to_string(), BUSYBOX_REF]),
            "docker import",
        );
    }

    /// `docker -H <its socket> args`.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// The `docker` CLI against this dockerd, to be run as the caller likes.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.docker);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.dir.path().join("sock").display()))
            .args(args);
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let _ = self.docker(&["network", "prune", "-f"]);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        crate::clean_up_after(self.dir.path());
    }
}
