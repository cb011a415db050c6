//! The files berth manages in a container with a network of its own, as Docker does:
//! `/etc/hosts` (localhost and the container's own name), `/etc/resolv.conf` (the host's,
//! without loopback nameservers, which the container cannot reach; on a user-defined
//! network, berthd's name server there with the host's search domains and options) and
//! `/etc/hostname`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The managed files of one container, bind-mounted over the rootfs' own.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedFiles {
    pub dir: PathBuf,
}

impl ManagedFiles {
    /// `(destination in the container, file on the host)` of each file.
    pub fn mounts(&self) -> [(&'static str, PathBuf); 3] {
        [
            ("/etc/hosts", self.dir.join("hosts")),
            ("/etc/resolv.conf", self.dir.join("resolv.conf")),
            ("/etc/hostname", self.dir.join("hostname")),
        ]
    }
}

/// The `/etc/hosts` of a container named `hostname` with `addresses`.
pub fn hosts(hostname: &str, addresses: &[String]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for a in addresses.iter().filter(|a| !a.is_empty()) {
        out.push_str(&format!("{a}\t{hostname}\n"));
    }
    out
}

/// The `/etc/resolv.conf` of a container from the host's: loopback nameservers dropped (a
/// container's loopback is its own); when none is left, Google's public resolvers, as
/// Docker falls back to.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or_default();
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// The `/etc/resolv.conf` of a container whose names are asked of `nameserver` (berthd's
/// name server on its network, which forwards the rest to the host's): the host's search
/// domains and options kept.
pub fn resolv_conf_with(host: &str, nameserver: &str) -> String {
    let mut out = format!("nameserver {nameserver}\n");
    for line in host.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search" | "domain" | "options")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Writes the files into `dir` (created; each through a temp file, fsync and rename) and
/// returns them. `nameserver`: berthd's name server on the container's network, if any.
pub fn write(
    dir: &Path,
    hostname: &str,
    addresses: &[String],
    nameserver: Option<&str>,
) -> Result<ManagedFiles> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = match nameserver {
        Some(ns) => resolv_conf_with(&host_resolv, ns),
        None => resolv_conf(&host_resolv),
    };
    let files = [
        ("hosts", hosts(hostname, addresses)),
        ("resolv.conf", resolv),
        ("hostname", format!("{hostname}\n")),
    ];
    for (name, text) in files {
        crate::runtime::write_file_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(ManagedFiles {
        dir: dir.to_path_buf(),
    })
}

/// Removes the files' directory; one already gone is no error.
pub fn remove(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove directory", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_container() {
        let h = hosts("web", &["172.17.0.2".into()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("172.17.0.2\tweb\n"));
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let host = "nameserver 127.0.0.53\noptions edns0\nsearch example.com\n";
        assert_eq!(
            resolv_conf(host),
            "options edns0\nsearch example.com\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let host = "nameserver 10.0.0.1\nnameserver ::1\n";
        assert_eq!(resolv_conf(host), "nameserver 10.0.0.1\n");
    }
}
