//! A private scratch directory (mode 0700 under the temp dir), removed with what it holds
//! when dropped: where `import` and `build` put what they assemble.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct Staging(PathBuf);

impl Staging {
    /// A new directory named `<prefix>-<uuid>`.
    pub fn new(prefix: &str) -> anyhow::Result<Staging> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        Ok(Staging(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
