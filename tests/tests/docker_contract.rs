//! The docker CLI contract (issue 14), the parts built so far: Docker's short flags belong
//! to the commands (`ps -aq`, `ps -n 1`, `images -qa`, `run -h NAME`, `logs -n`), berthd's
//! socket is `-H/--host` (`--address` too), the namespace a long option, usage errors
//! exit 125 as Docker's own errors do, and `--help` exits 0.

use std::process::Command;

use berth_tests::{Daemon, bin, ok};

const IMAGE: &str = "example.com/busybox:latest";

#[test]
fn dockers_short_flags_and_exit_codes() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    // -h after run is the hostname, not help.
    assert_eq!(
        berth(&["run", "--rm", "-h", "myhost", IMAGE, "hostname"]),
        "myhost\n"
    );
    let first = berth(&["run", "-d", "--name", "one", IMAGE, "true"]);
    let second = berth(&["run", "-d", "--name", "two", IMAGE, "sleep", "600"]);
    let (first, second) = (first.trim(), second.trim());
    ok(&d.berth(&["wait", "one"]), "wait");
    // -a: every state; -q: short ids; -n 1 / -l: the last created, whatever its state.
    let all = berth(&["ps", "-aq"]);
    assert_eq!(all, format!("{}\n{}\n", &second[..12], &first[..12]));
    assert_eq!(berth(&["ps", "-q"]), format!("{}\n", &second[..12]));
    assert_eq!(berth(&["ps", "-q", "-n", "1"]), format!("{}\n", &second[..12]));
    assert_eq!(berth(&["ps", "-ql"]), format!("{}\n", &second[..12]));
    assert_eq!(berth(&["ps", "-aq", "-n", "5"]).lines().count(), 2);
    // images -qa parses (no intermediate images: the same list as -q).
    assert_eq!(berth(&["images", "-qa"]), berth(&["images", "-q"]));
    berth(&["logs", "-n", "1", "one"]);
    // The socket as Docker names it, and as ctr does; the namespace as a long option.
    let sock = d.address.display().to_string();
    for flag in ["-H", "--host", "--address"] {
        let out = Command::new(bin("berth"))
            .args([flag, &sock, "--namespace", "default", "ps", "-q"])
            .output()
            .expect("berth");
        assert_eq!(ok(&out, flag), format!("{}\n", &second[..12]));
    }
    // The old spellings before the verb still work.
    let out = Command::new(bin("berth"))
        .args(["-a", &sock, "-n", "default", "ps", "-q"])
        .output()
        .expect("berth");
    assert_eq!(ok(&out, "-a -n"), format!("{}\n", &second[..12]));
    // Usage errors: 125, as docker's; help: 0.
    let bad = d.berth(&["ps", "--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--no-such-flag"),
        "{bad:?}"
    );
    assert_eq!(d.berth(&["no-such-verb"]).status.code(), Some(125));
    let help = d.berth(&["ps", "--help"]);
    assert_eq!(help.status.code(), Some(0), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));
    berth(&["rm", "-f", "one", "two"]);
}
