//! Registry credentials written by `berth login`: a Docker-style `config.json`
//! (`{"auths": {"host": {"auth": base64("user:password")}}}`, mode 0600, replaced
//! atomically), in the format berthd reads too (`berth_oci::credentials`). The CLI answers
//! berthd's credential requests from it during pulls and pushes.

use std::path::PathBuf;

use anyhow::Context;
use berth_oci::credentials::{self, Credentials};

pub struct Store {
    path: PathBuf,
}

impl Store {
    /// `$BERTH_AUTH_FILE`, else `$HOME/.config/berth/auth.json`.
    pub fn default_location() -> anyhow::Result<Store> {
        if let Some(p) = std::env::var_os("BERTH_AUTH_FILE") {
            return Ok(Store {
                path: PathBuf::from(p),
            });
        }
        let home = std::env::var_os("HOME").context("HOME is not set; set BERTH_AUTH_FILE")?;
        Ok(Store {
            path: PathBuf::from(home).join(".config/berth/auth.json"),
        })
    }

    pub fn lookup(&self, host: &str) -> anyhow::Result<Option<(String, String)>> {
        let file = credentials::load(&self.path)?;
        Ok(file
            .get(host)
            .map(|c| (c.username.clone(), c.password.clone())))
    }

    pub fn store(&self, host: &str, user: &str, password: &str) -> anyhow::Result<()> {
        let creds = Credentials {
            username: user.to_string(),
            password: password.to_string(),
        };
        Ok(credentials::store(&self.path, host, &creds)?)
    }

    pub fn remove(&self, host: &str) -> anyhow::Result<bool> {
        Ok(credentials::remove(&self.path, host)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store {
            path: dir.path().join("a/auth.json"),
        };
        assert_eq!(s.lookup("127.0.0.1:5000").unwrap(), None);
        s.store("127.0.0.1:5000", "u", "p:w").unwrap();
        assert_eq!(
            s.lookup("127.0.0.1:5000").unwrap(),
            Some(("u".into(), "p:w".into()))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a/auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(s.remove("127.0.0.1:5000").unwrap());
        assert!(!s.remove("127.0.0.1:5000").unwrap());
    }
}
