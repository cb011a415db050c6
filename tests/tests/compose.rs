//! `berth compose` (issue 15): a project's services built, started in their dependency
//! order (a healthy database before the web service, a finished job before its user), on
//! the project's network (names resolve) with its volumes; ps, logs, exec, run, config,
//! stop/start and down -v.

use std::process::Command;

use berth_tests::{Daemon, TestNetwork, bin};

const IMAGE: &str = "example.com/busybox:latest";

struct Project<'a> {
    d: &'a Daemon,
    dir: std::path::PathBuf,
}

impl Project<'_> {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("berth"))
            .arg("--address")
            .arg(&self.d.address)
            .arg("compose")
            .args(args)
            .current_dir(&self.dir)
            .env_remove("BERTH_NAMESPACE")
            .env("TAG_FROM_ENV", "from-the-environment")
            .output()
            .expect("berth compose")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "compose {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn a_project_comes_up_and_goes_down() {
    let (d, work) = Daemon::with_busybox();
    let (net, back) = (TestNetwork::claim(), TestNetwork::claim());
    let port = berth_tests::fixtures::free_port();
    let dir = work.path().join("shop");
    std::fs::create_dir_all(dir.join("web")).expect("mkdir");
    std::fs::create_dir_all(dir.join("site")).expect("mkdir");
    std::fs::write(dir.join("site/index.txt"), "bound\n").expect("write");
    std::fs::write(
        dir.join(".env"),
        "GREETING=hello-from-dotenv\nPORT=PORT_VALUE\n".replace("PORT_VALUE", &port.to_string()),
    )
    .expect("write");
    std::fs::write(
        dir.join("web/Dockerfile"),
        format!("FROM {IMAGE}\nRUN echo built-by-compose > /built.txt\n"),
    )
    .expect("write");
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:
  web:
    build: ./web
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/site\"]
    ports:
      - \"127.0.0.1:${{PORT}}:80\"
    volumes:
      - ./site:/site:ro
    networks: [front]
    environment:
      GREETING: ${{GREETING}}
      FROM_ENV: ${{TAG_FROM_ENV:-unset}}
    depends_on:
      migrate:
        condition: service_completed_successfully
    labels:
      tier: front
    deploy:
      resources:
        limits:
          memory: 64m
  app:
    image: {IMAGE}
    command: \"sh -c 'echo app-up $$GREETING; while :; do wget -q -O /data/fetched http://web/index.txt && sleep 600; sleep 0.2; done'\"
    environment:
      - GREETING
    volumes:
      - data:/data
    networks:
      front:
        aliases: [shop-app]
      back: {{}}
    depends_on:
      web:
        condition: service_healthy
  migrate:
    image: {IMAGE}
    command: echo migrated
    networks: [back]
networks:
  front:
    driver_opts:
      com.docker.network.bridge.name: {bridge}
    ipam:
      config:
        - subnet: {subnet}
  back:
    driver_opts:
      com.docker.network.bridge.name: {back_bridge}
    ipam:
      config:
        - subnet: {back_subnet}
volumes:
  data: {{}}
",
            bridge = net.bridge,
            subnet = net.subnet,
            back_bridge = back.bridge,
            back_subnet = back.subnet,
        ),
    )
    .expect("write");
    // web's health: its page served.
    let compose_file = dir.join("compose.yaml");
    let text = std::fs::read_to_string(&compose_file).expect("read");
    let text = text.replace(
        "    labels:\n      tier: front\n",
        "    labels:\n      tier: front\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1/index.txt\"]\n      interval: 1s\n      retries: 20\n",
    );
    std::fs::write(&compose_file, text).expect("write");
    let p = Project {
        d: &d,
        dir: dir.clone(),
    };
    // config: interpolated (.env and the environment), $$ a dollar.
    let config = p.ok(&["config"]);
    assert!(config.contains("GREETING: hello-from-dotenv"), "{config}");
    assert!(
        config.contains("FROM_ENV: from-the-environment"),
        "{config}"
    );
    assert!(config.contains("$GREETING"), "{config}");
    assert_eq!(p.ok(&["config", "--services"]), "migrate\nweb\napp\n");
    let up = p.ok(&["up", "-d"]);
    for line in [
        "Network shop_front  Created",
        "Network shop_back  Created",
        "Volume \"shop_data\"  Created",
        "Container shop-web-1  Healthy",
        "Container shop-app-1  Started",
    ] {
        assert!(up.contains(line), "{line:?} missing:\n{up}");
    }
    // The web server answers on its published port.
    let page = http_get(port, "/index.txt");
    assert!(page.ends_with("bound\n"), "{page}");
    // The app reached it by its service name, into the named volume.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = p.compose(&["exec", "app", "cat", "/data/fetched"]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout) == "bound\n" {
            break;
        }
        if std::time::Instant::now() >= deadline {
            // What the app sees, for the failure's message.
            let why = p.compose(&[
                "exec",
                "app",
                "sh",
                "-c",
                "cat /etc/resolv.conf; nslookup web; wget -O - http://web/index.txt",
            ]);
            panic!(
                "the app never fetched the page: {out:?}\n{}\n{}",
                String::from_utf8_lossy(&why.stdout),
                String::from_utf8_lossy(&why.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The job had finished before web started; it is not running.
    let ps = p.ok(&["ps"]);
    assert!(ps.starts_with("NAME"), "{ps}");
    assert!(
        ps.contains("shop-web-1") && ps.contains("shop-app-1"),
        "{ps}"
    );
    assert!(
        !ps.contains("shop-migrate-1"),
        "a finished job is not running: {ps}"
    );
    assert!(p.ok(&["ps", "-a"]).contains("shop-migrate-1"));
    // The service's view: its build, env, and its limits.
    let exec = p.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "cat /built.txt; echo $FROM_ENV; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(
        exec,
        format!("built-by-compose\nfrom-the-environment\n{}\n", 64 << 20)
    );
    let logs = p.ok(&["logs", "app"]);
    assert!(
        logs.contains("shop-app-1  | app-up hello-from-dotenv"),
        "{logs}"
    );
    // A one-off container on the service's networks.
    let run = p.ok(&["run", "--rm", "migrate", "sh", "-c", "echo one-off"]);
    assert_eq!(run, "one-off\n");
    // stop / start.
    assert!(
        p.ok(&["stop", "-t", "1", "app"])
            .contains("Container shop-app-1  Stopped")
    );
    assert!(!p.ok(&["ps"]).contains("shop-app-1"));
    p.ok(&["start", "app"]);
    assert!(p.ok(&["ps"]).contains("shop-app-1"));
    // down -v: nothing of the project stays.
    let down = p.ok(&["down", "-v"]);
    assert!(down.contains("Network shop_front  Removed"), "{down}");
    assert!(down.contains("Volume shop_data  Removed"), "{down}");
    let berth = |args: &[&str]| {
        let out = d.berth(args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(berth(&["ps", "-aq"]), "");
    let nets = berth(&["network", "ls"]);
    assert!(
        !nets.contains("shop_front") && !nets.contains("shop_back"),
        "{nets}"
    );
    assert!(!berth(&["volume", "ls"]).contains("shop_data"));
}

#[test]
fn up_attached_shows_output_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let (d, work) = Daemon::with_busybox();
    let dir = work.path().join("fg");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:
  talker:
    image: {IMAGE}
    network_mode: none
    command: [\"sh\", \"-c\", \"trap 'echo got-term; exit 0' TERM; echo hello-from-talker; while :; do sleep 0.1; done\"]
  once:
    image: {IMAGE}
    network_mode: none
    command: [\"sh\", \"-c\", \"echo one-shot-done; exit 3\"]
"
        ),
    )
    .expect("write");
    let mut child = Command::new(bin("berth"))
        .arg("--address")
        .arg(&d.address)
        .args(["compose", "up"])
        .current_dir(&dir)
        .env_remove("BERTH_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("berth compose up");
    // The output, line by line, as it comes.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let wait_for = |seen: &mut Vec<String>, want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !seen.iter().any(|l| l.contains(want)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("{want:?} never came:\n{}", seen.join("\n")),
            }
        }
    };
    wait_for(&mut seen, "fg-talker-1  | hello-from-talker");
    wait_for(&mut seen, "fg-once-1    | one-shot-done");
    wait_for(&mut seen, "fg-once-1 exited with code 3");
    assert!(
        seen.iter().any(|l| l.starts_with("Attaching to fg-")),
        "{seen:?}"
    );
    // Ctrl-C: the running container stopped gracefully (its TERM trap ran), then up ends.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    while let Ok(line) = rx.try_recv() {
        seen.push(line);
    }
    let text = seen.join("\n");
    assert!(status.success(), "{status:?}\n{text}");
    for want in [
        "Gracefully stopping... (press Ctrl+C again to force)",
        "fg-talker-1  | got-term",
        " Container fg-talker-1  Stopped",
        "fg-talker-1 exited with code 0",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let out = d.berth(&["ps", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let p = Project {
        d: &d,
        dir: dir.clone(),
    };
    p.ok(&["down"]);
}

/// A GET of `path` on 127.0.0.1:`port`: the whole answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && !out.is_empty() {
                return out;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing answers on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn bad_projects_are_refused_with_reasons() {
    let (d, work) = Daemon::with_busybox();
    let dir = work.path().join("bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let p = Project {
        d: &d,
        dir: dir.clone(),
    };
    let none = p.compose(&["ps"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no configuration file provided"));
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  a:\n    image: x\n    depends_on: [b]\n",
    )
    .expect("write");
    let undefined = p.compose(&["config"]);
    assert!(
        String::from_utf8_lossy(&undefined.stderr).contains("depends on undefined service"),
        "{undefined:?}"
    );
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  a:\n    image: ${MISSING:?set MISSING}\n",
    )
    .expect("write");
    let required = p.compose(&["config"]);
    assert!(
        String::from_utf8_lossy(&required.stderr).contains("set MISSING"),
        "{required:?}"
    );
}
