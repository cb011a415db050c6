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

/// What a container's `/etc` files say besides the host's defaults (`run --hostname
/// --domainname --dns --dns-search --dns-option --add-host --link`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub hostname: String,
    pub domainname: String,
    /// The container's own addresses.
    pub addresses: Vec<String>,
    /// berthd's name server on the container's network, if any.
    pub nameserver: Option<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `(address, names)` lines added to `/etc/hosts` (`--add-host`, `--link`).
    pub extra_hosts: Vec<(String, String)>,
}

/// The `/etc/hosts` of a container: localhost, the extra lines, then its own addresses
/// under its hostname (with the domain name first when it has one), as Docker writes it.
pub fn hosts(s: &Settings) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (ip, names) in &s.extra_hosts {
        out.push_str(&format!("{ip}\t{names}\n"));
    }
    let names = if s.domainname.is_empty() {
        s.hostname.clone()
    } else {
        format!("{}.{} {}", s.hostname, s.domainname, s.hostname)
    };
    for a in s.addresses.iter().filter(|a| !a.is_empty()) {
        out.push_str(&format!("{a}\t{names}\n"));
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

/// The container's `/etc/resolv.conf`: berthd's name server first on a user-defined
/// network, else the host's resolvers; `--dns`, `--dns-search` and `--dns-option` replace
/// the host's servers, search domains and options, as Docker does.
pub fn resolv_conf_for(host: &str, s: &Settings) -> String {
    let base = match &s.nameserver {
        Some(_) => host
            .lines()
            .filter(|l| {
                matches!(
                    l.split_whitespace().next(),
                    Some("search" | "domain" | "options")
                )
            })
            .map(|l| format!("{l}\n"))
            .collect(),
        None if !s.dns.is_empty() => host
            .lines()
            .filter(|l| l.split_whitespace().next() != Some("nameserver"))
            .map(|l| format!("{l}\n"))
            .collect(),
        None => resolv_conf(host),
    };
    let mut servers: Vec<String> = s.nameserver.iter().cloned().collect();
    servers.extend(s.dns.iter().cloned());
    let mut out: String = servers
        .iter()
        .map(|n| format!("nameserver {n}\n"))
        .collect();
    for line in base.lines() {
        let key = line.split_whitespace().next();
        let replaced = match key {
            Some("search" | "domain") => !s.dns_search.is_empty(),
            Some("options") => !s.dns_options.is_empty(),
            _ => false,
        };
        if !replaced {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !s.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", s.dns_search.join(" ")));
    }
    if !s.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", s.dns_options.join(" ")));
    }
    out
}

/// Writes the files into `dir` (created; each through a temp file and a rename, so that a
/// reader never sees half of one) and returns them. No fsync: they live in the state
/// directory, written anew at every start, and a reboot that could lose them takes the
/// container with it.
pub fn write(dir: &Path, s: &Settings) -> Result<ManagedFiles> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [
        ("hosts", hosts(s)),
        ("resolv.conf", resolv_conf_for(&host_resolv, s)),
        ("hostname", format!("{}\n", s.hostname)),
    ];
    for (name, text) in files {
        let (path, tmp) = (dir.join(name), dir.join(format!(".{name}.tmp")));
        std::fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    }
    Ok(ManagedFiles {
        dir: dir.to_path_buf(),
    })
}

/// Writes `/etc/hosts` of [`write`]'s files in `dir` again, in place: the runtime may have
/// bind-mounted the file, and a rename would leave the container with the old one.
pub fn rewrite_hosts(dir: &Path, s: &Settings) -> Result<()> {
    use std::io::Write;
    let path = dir.join("hosts");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    f.write_all(hosts(s).as_bytes())
        .map_err(|e| Error::io("write", &path, e))
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
        let mut s = Settings {
            hostname: "web".into(),
            addresses: vec!["172.17.0.2".into()],
            ..Default::default()
        };
        let h = hosts(&s);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("172.17.0.2\tweb\n"));
        s.domainname = "example.org".into();
        s.extra_hosts = vec![("10.0.0.9".into(), "db".into())];
        let h = hosts(&s);
        assert!(h.contains("10.0.0.9\tdb\n"), "{h}");
        assert!(h.ends_with("172.17.0.2\tweb.example.org web\n"), "{h}");
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

    #[test]
    fn resolv_conf_takes_the_dns_flags_and_berths_name_server() {
        let host = "nameserver 10.0.0.1\nsearch a.example\noptions edns0\n";
        let mut s = Settings {
            dns: vec!["9.9.9.9".into()],
            dns_search: vec!["b.example".into()],
            ..Default::default()
        };
        assert_eq!(
            resolv_conf_for(host, &s),
            "nameserver 9.9.9.9\noptions edns0\nsearch b.example\n"
        );
        s.nameserver = Some("10.9.0.1".into());
        s.dns.clear();
        s.dns_options = vec!["ndots:2".into()];
        assert_eq!(
            resolv_conf_for(host, &s),
            "nameserver 10.9.0.1\nsearch b.example\noptions ndots:2\n"
        );
    }
}
