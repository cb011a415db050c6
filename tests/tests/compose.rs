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
    let net = TestNetwork::claim();
    let dir = work.path().join("shop");
    std::fs::create_dir_all(dir.join("web")).expect("mkdir");
    std::fs::create_dir_all(dir.join("site")).expect("mkdir");
    std::fs::write(dir.join("site/index.txt"), "bound\n").expect("write");
    std::fs::write(dir.join(".env"), "GREETING=hello-from-dotenv\n").expect("write");
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
    command: \"sh -c 'echo web-up $$GREETING; sleep 600'\"
    environment:
      GREETING: ${{GREETING}}
      FROM_ENV: ${{TAG_FROM_ENV:-unset}}
    volumes:
      - data:/data
      - ./site:/site:ro
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
    labels:
      tier: front
    deploy:
      resources:
        limits:
          memory: 64m
  db:
    image: {IMAGE}
    command: [\"sh\", \"-c\", \"sleep 1; touch /ready; sleep 600\"]
    healthcheck:
      test: [\"CMD\", \"test\", \"-f\", \"/ready\"]
      interval: 1s
      retries: 10
    restart: unless-stopped
  migrate:
    image: {IMAGE}
    command: echo migrated
networks:
  default:
    driver_opts:
      com.docker.network.bridge.name: {bridge}
    ipam:
      config:
        - subnet: {subnet}
volumes:
  data: {{}}
",
            bridge = net.bridge,
            subnet = net.subnet,
        ),
    )
    .expect("write");
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
    assert_eq!(p.ok(&["config", "--services"]), "db\nmigrate\nweb\n");
    let up = p.ok(&["up", "-d"]);
    for line in [
        "Network shop_default  Created",
        "Volume \"shop_data\"  Created",
        "Container shop-db-1  Healthy",
        "Container shop-web-1  Started",
    ] {
        assert!(up.contains(line), "{line:?} missing:\n{up}");
    }
    // Started after what it depends on: the job had finished.
    let ps = p.ok(&["ps"]);
    assert!(ps.starts_with("NAME"), "{ps}");
    assert!(
        ps.contains("shop-web-1") && ps.contains("shop-db-1"),
        "{ps}"
    );
    assert!(
        !ps.contains("shop-migrate-1"),
        "a finished job is not running: {ps}"
    );
    assert!(p.ok(&["ps", "-a"]).contains("shop-migrate-1"));
    // The service's view: its build, env, volumes, the other service by name, its limits.
    let exec = p.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "cat /built.txt /site/index.txt; echo $FROM_ENV; ping -c 1 -W 2 db >/dev/null && echo db-resolves; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(
        exec,
        format!(
            "built-by-compose\nbound\nfrom-the-environment\ndb-resolves\n{}\n",
            64 << 20
        )
    );
    let logs = p.ok(&["logs", "web"]);
    assert!(
        logs.contains("shop-web-1  | web-up hello-from-dotenv"),
        "{logs}"
    );
    // A one-off container on the project's network.
    let run = p.ok(&[
        "run",
        "--rm",
        "migrate",
        "sh",
        "-c",
        "ping -c 1 -W 2 db >/dev/null && echo one-off",
    ]);
    assert_eq!(run, "one-off\n");
    // stop / start.
    assert!(
        p.ok(&["stop", "-t", "1", "web"])
            .contains("Container shop-web-1  Stopped")
    );
    assert!(!p.ok(&["ps"]).contains("shop-web-1"));
    p.ok(&["start", "web"]);
    assert!(p.ok(&["ps"]).contains("shop-web-1"));
    // down -v: nothing of the project stays.
    let down = p.ok(&["down", "-v"]);
    assert!(down.contains("Network shop_default  Removed"), "{down}");
    assert!(down.contains("Volume shop_data  Removed"), "{down}");
    let berth = |args: &[&str]| {
        let out = d.berth(args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(berth(&["ps", "-aq"]), "");
    assert!(!berth(&["network", "ls"]).contains("shop_default"));
    assert!(!berth(&["volume", "ls"]).contains("shop_data"));
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
