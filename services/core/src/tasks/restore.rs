//! Restart of berthd: every bundle a previous run left is either reconnected to its shim
//! (the task lives on) or cleaned up (`shim delete`, `/tasks/exit` and `/tasks/delete`,
//! bundle removed); shims of this daemon that serve no known task are ended.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::runtime::{ProcessState, Shim};

use super::bundle::{SavedTask, blocking, remove_bundle, remove_bundle_now};
use super::{
    CLEANUP_TIMEOUT, NewTask, PROBE_TIMEOUT, Restored, SLOW_PROBE_TIMEOUT, TaskStatus, Tasks, key,
    open_pidfd, process_exists,
};

/// Restart of berthd.
impl Tasks {
    /// Finds the tasks a previous berthd left: reconnects to each shim that answers and
    /// cleans up after each that does not. Every bundle is handled concurrently and in
    /// bounded time, so a hung shim cannot hold up start-up.
    pub async fn restore(&self) {
        let root = self.root.clone();
        let bundles = match blocking(move || scan_bundles(&root)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot scan task bundles; no task restored");
                return;
            }
        };
        if bundles.is_empty() {
            self.end_orphan_shims().await;
            return;
        }
        let results = futures::future::join_all(
            bundles
                .into_iter()
                .map(|(ns, id, bundle)| async move { self.restore_one(&ns, &id, &bundle).await }),
        )
        .await;
        self.end_orphan_shims().await;
        let running = results.iter().filter(|r| **r == Restored::Running).count();
        tracing::info!(
            restored = running,
            cleaned = results.len() - running,
            "task bundles of the previous run handled"
        );
    }

    /// Ends the shims of this daemon that serve no task it knows: what a crash in the middle
    /// of a create leaves (a shim started, its bundle then removed as half-made). A shim is
    /// known by the task it was started for or, when it serves a pod, by its pid (the task
    /// it was started for may be gone while the pod's other tasks live on).
    async fn end_orphan_shims(&self) {
        let (known, serving): (HashSet<(String, String)>, HashSet<u32>) = {
            let table = self.table();
            (
                table.tasks.keys().cloned().collect(),
                table.tasks.values().filter_map(|t| t.shim_pid).collect(),
            )
        };
        // The scan reads /proc: on the blocking pool.
        let address = self.manager.grpc_address().to_path_buf();
        let shims = blocking(move || Ok(crate::runtime::shims_of(&address)))
            .await
            .unwrap_or_default();
        for (pid, ns, id) in shims {
            let serves = u32::try_from(pid).is_ok_and(|p| serving.contains(&p));
            if serves || known.contains(&key(&ns, &id)) || pid == std::process::id() as i32 {
                continue;
            }
            tracing::warn!(namespace = %ns, id = %id, pid, "ending a shim that serves no task");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    #[tracing::instrument(skip(self, bundle), fields(namespace = ns, id = id))]
    async fn restore_one(&self, ns: &str, id: &str, bundle: &Path) -> Restored {
        let (saved, address) = read_bundle(bundle).await;
        let saved = self.runtime_of(ns, id, saved).await;
        if address.is_empty() {
            // berthd died while creating it: no shim ever served this task.
            return self.clean_up_half_made(ns, id, bundle, &saved.config).await;
        }
        let probed = match probe_patiently(&address, ns, id, saved.shim_pid).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "the task's shim does not answer");
                return self
                    .clean_up_bundle(ns, id, bundle, saved.config, None)
                    .await;
            }
            Err(_) => {
                tracing::warn!("the task's shim did not answer in time; treating it as dead");
                return self
                    .clean_up_bundle(ns, id, bundle, saved.config, None)
                    .await;
            }
        };
        self.take_over(ns, id, bundle, saved, probed).await
    }

    /// The task's runtime, from its saved record; without one (none, or unreadable), the
    /// container's runtime as configured now (its name alone if it no longer resolves).
    async fn runtime_of(&self, ns: &str, id: &str, saved: Option<SavedTask>) -> SavedTask {
        if let Some(s) = saved {
            return s;
        }
        let name = match self.containers.get(ns, id).await {
            Ok(c) => c.runtime_name().to_string(),
            Err(_) => String::new(),
        };
        let (runtime, config) = match self.manager.resolve(&name) {
            Ok((n, c)) => (n, c),
            Err(_) => (name, RuntimeConfig::default()),
        };
        SavedTask {
            runtime,
            config,
            shim_pid: None,
        }
    }

    /// Cleans up after a task whose creation did not finish (no shim ever served it):
    /// `shim delete` in bounded time, then the bundle removed.
    async fn clean_up_half_made(
        &self,
        ns: &str,
        id: &str,
        bundle: &Path,
        config: &RuntimeConfig,
    ) -> Restored {
        if let Err(e) = tokio::time::timeout(
            CLEANUP_TIMEOUT,
            self.manager.delete_shim(config, ns, id, bundle),
        )
        .await
        .unwrap_or_else(|_| Err(Error::Unavailable("shim delete timed out".into())))
        {
            tracing::debug!(error = %e, "shim delete of a half-made task");
        }
        remove_bundle(bundle).await;
        tracing::info!("removed the bundle of a task whose creation did not finish");
        Restored::Cleaned
    }

    /// Takes the task over from its answering shim (log forwarded, task in the table); a
    /// shim that knows no such task is shut down and the bundle cleaned up.
    async fn take_over(
        &self,
        ns: &str,
        id: &str,
        bundle: &Path,
        saved: SavedTask,
        probed: Probed,
    ) -> Restored {
        let Probed {
            mut shim,
            shim_pid,
            pidfd,
            state,
        } = probed;
        let Some(state) = state else {
            // The shim serves but has no such task (berthd died during its Create).
            tracing::info!("the shim knows no such task; shutting it down");
            return self
                .clean_up_bundle(ns, id, bundle, saved.config, Some(shim))
                .await;
        };
        match crate::runtime::forward_log(bundle, ns, id) {
            Ok(log) => shim.set_log(log),
            Err(e) => tracing::warn!(error = %e, "cannot forward the shim's log"),
        }
        let task = self.make_task(NewTask {
            namespace: ns.to_string(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            runtime: saved.runtime,
            runtime_config: saved.config,
            shim,
            shim_pid,
            pidfd,
            status: TaskStatus {
                status: state.status,
                pid: state.pid,
            },
        });
        self.table().tasks.insert(key(ns, id), task);
        tracing::info!(
            pid = state.pid,
            shim_pid = ?shim_pid,
            status = ?state.status,
            exit_status = state.exit_status,
            "task restored"
        );
        Restored::Running
    }

    /// Cleans up after a bundle whose task cannot be restored.
    async fn clean_up_bundle(
        &self,
        ns: &str,
        id: &str,
        bundle: &Path,
        config: RuntimeConfig,
        live_shim: Option<Shim>,
    ) -> Restored {
        if let Some(shim) = live_shim {
            shim.shut_down().await;
        }
        let exit = self.clean_up_dead(ns, id, &config, bundle).await;
        remove_bundle(bundle).await;
        tracing::info!(
            exit_status = exit.status,
            "cleaned up a task whose shim is gone"
        );
        Restored::Cleaned
    }
}

/// The bundle's small files, read on the blocking pool: the saved runtime record (None
/// when absent or unreadable, which is logged) and the shim's address ("" when absent).
async fn read_bundle(bundle: &Path) -> (Option<SavedTask>, String) {
    let dir = bundle.to_path_buf();
    let read = blocking(move || {
        let address = std::fs::read_to_string(dir.join("address"))
            .map(|a| a.trim().to_string())
            .unwrap_or_default();
        Ok((SavedTask::load(&dir), address))
    })
    .await;
    let (saved, address) = match read {
        Ok(r) => r,
        Err(e) => (Err(e), String::new()),
    };
    let saved = match saved {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable runtime record; using the container's runtime");
            None
        }
    };
    (saved, address)
}

/// A shim that answered a probe.
struct Probed {
    shim: Shim,
    shim_pid: Option<u32>,
    /// A pidfd of the shim, to watch.
    pidfd: Option<OwnedFd>,
    /// The task's state; None when the shim does not know the task.
    state: Option<ProcessState>,
}

/// Probes the shim within [`PROBE_TIMEOUT`]; a shim that did not answer in time but whose
/// process lives is slow, not dead (cleaning up would kill its container), and gets one
/// longer wait ([`SLOW_PROBE_TIMEOUT`]). The outer error: no answer in time.
async fn probe_patiently(
    address: &str,
    ns: &str,
    id: &str,
    saved_pid: Option<u32>,
) -> std::result::Result<Result<Probed>, tokio::time::error::Elapsed> {
    let probed = tokio::time::timeout(PROBE_TIMEOUT, probe(address, ns, id, saved_pid)).await;
    if probed.is_err() && saved_pid.is_some_and(process_exists) {
        tracing::warn!("the task's shim is slow to answer; waiting longer");
        return tokio::time::timeout(SLOW_PROBE_TIMEOUT, probe(address, ns, id, saved_pid)).await;
    }
    probed
}

/// The task's shim at `address`, if it answers: the connection, the shim's pid and a pidfd
/// of it, and the task's state (None when the shim does not know the task).
async fn probe(address: &str, ns: &str, id: &str, saved_pid: Option<u32>) -> Result<Probed> {
    let shim = Shim::connect(address, ns, id).await?;
    let shim_pid = match shim.pids_of(id).await {
        Ok((pid, _)) if pid != 0 => Some(pid),
        Ok(_) | Err(Error::NotImplemented(_)) => saved_pid,
        Err(e) => return Err(e),
    };
    // The pidfd is taken before the State below: if the shim answers that, the pid is its.
    let pidfd = shim_pid.and_then(open_pidfd);
    let state = match shim.process_state(id, "").await {
        Ok(s) => Some(s),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(Probed {
        shim,
        shim_pid,
        pidfd,
        state,
    })
}

/// The bundles under `<state>/tasks`: `(namespace, id, path)`. Hidden leftovers (a bundle
/// renamed for removal) are removed.
pub(super) fn scan_bundles(root: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let mut out = Vec::new();
    let namespaces = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read task bundles", root, e)),
    };
    for ns in namespaces.flatten() {
        if !ns.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let ns_path = ns.path();
        let entries = std::fs::read_dir(&ns_path).map_err(|e| Error::io("read", &ns_path, e))?;
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let (ns, id) = (
                ns.file_name().to_string_lossy().into_owned(),
                entry.file_name().to_string_lossy().into_owned(),
            );
            if id.starts_with('.') {
                remove_bundle_now(&entry.path());
                continue;
            }
            out.push((ns, id, entry.path()));
        }
    }
    Ok(out)
}
