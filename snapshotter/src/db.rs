//! The redb database the daemon's metadata and its snapshotters share, reopened in place
//! after an I/O failure.
//!
//! Once a commit fails on I/O (a full disk), redb refuses every later transaction with
//! "Previous I/O error occurred. Please close and re-open the database." until the file is
//! opened again. Every user of the database goes through one [`SharedDb`]: a transaction
//! that meets that error reopens the file (once, for everyone) and is begun again, so
//! freeing the space is all it takes for writes to work again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadTransaction, StorageError, TransactionError, WriteTransaction,
};

/// How long a reopen waits for transactions of the failed handle to end.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// redb's page cache (read cache and write buffer together). redb's default is 1 GiB, which
/// a daemon whose metadata is a few MB never needs and which kept whatever a big request
/// brought in (15.6 MB of labels left 160 MB resident). Reads past it come from the
/// kernel's page cache.
const CACHE_BYTES: usize = 16 << 20;

/// Opens (or creates) the database file with berth's settings.
fn create(path: &Path) -> Result<Database, DatabaseError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
}

/// A redb database that can be reopened under its users. Cheap to share (`Arc`).
pub struct SharedDb {
    path: PathBuf,
    current: RwLock<Option<Arc<Database>>>,
}

fn storage(e: DatabaseError) -> TransactionError {
    match e {
        DatabaseError::Storage(s) => TransactionError::Storage(s),
        other => {
            TransactionError::Storage(StorageError::Io(std::io::Error::other(other.to_string())))
        }
    }
}

impl SharedDb {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Arc<SharedDb>, DatabaseError> {
        let db = create(path)?;
        Ok(Arc::new(SharedDb {
            path: path.to_path_buf(),
            current: RwLock::new(Some(Arc::new(db))),
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open handle, opening the file again if a reopen left none.
    fn handle(&self) -> Result<Arc<Database>, TransactionError> {
        if let Ok(cur) = self.current.read()
            && let Some(db) = cur.as_ref()
        {
            return Ok(db.clone());
        }
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = cur.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(self.create_waiting().map_err(storage)?);
        *cur = Some(db.clone());
        Ok(db)
    }

    /// Database::create, waiting while transactions of a closed handle still hold the file.
    fn create_waiting(&self) -> Result<Database, DatabaseError> {
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            match create(&self.path) {
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    /// Closes the handle `failed` (if it is still the current one) so that the next
    /// transaction opens the file again.
    fn reopen(&self, failed: Arc<Database>) -> Result<(), TransactionError> {
        let id = Arc::as_ptr(&failed);
        drop(failed);
        {
            let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
            if cur.as_ref().is_some_and(|db| Arc::as_ptr(db) == id) {
                tracing::warn!(path = %self.path.display(), "reopening the metadata database after an I/O error");
                cur.take();
            }
        }
        self.handle().map(drop)
    }

    /// Begins a write transaction; after an I/O failure of an earlier one, on a reopened
    /// file.
    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        let db = self.handle()?;
        match db.begin_write() {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.reopen(db)?;
                self.handle()?.begin_write()
            }
            r => r,
        }
    }

    /// Begins a read transaction; after an I/O failure, on a reopened file.
    pub fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        use redb::ReadableDatabase;
        let db = self.handle()?;
        match db.begin_read() {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.reopen(db)?;
                self.handle()?.begin_read()
            }
            r => r,
        }
    }
}
