//! Containers that remove themselves: `berth run -d --rm` labels its container
//! [`AUTO_REMOVE_LABEL`]` = "true"`, and when that container's init process exits berthd
//! deletes its task and its record (the snapshot goes with the next collection) and the log
//! file its [`LOG_LABEL`] names, if that file is in the daemon's runtime directory, and
//! the anonymous volumes made for it (as Docker's `run --rm`). No client
//! has to stay around, as with Docker's daemon.
//!
//! The same watcher tells the task core of every init exit ([`Tasks::observe_exit`]), so the
//! daemon-side status of tasks is current, and has the exited task's network released
//! ([`Tasks::release_network`]).
//!
//! A `/tasks/oom` of one of berth's containers is recorded on it ([`OOM_LABEL`]: Docker's
//! `State.OOMKilled`).
//!
//! The exit arrives as the shim's `/tasks/exit` event: shims keep an exit until berthd has
//! taken it, so one that happened while berthd was down is acted on after the restart.

use std::path::{Path, PathBuf};

use berth_proto::containerd::events::{TaskExit, TaskOom};
use prost::Message;

use crate::containers::Containers;
use crate::events::{Exchange, NoFields};
use crate::filters::Filter;
use crate::tasks::Tasks;

/// Set to "true" on containers berthd removes when their task exits.
pub const AUTO_REMOVE_LABEL: &str = "berth/auto-remove";
/// The container's log file (written by its shim), removed with it.
pub const LOG_LABEL: &str = "berth/log-path";
/// The FIFO of the container's stdin (made with `-i`), removed with it.
pub const STDIN_LABEL: &str = "berth/stdin-path";
/// Set to "true" on a container whose processes the kernel killed for want of memory
/// (a `/tasks/oom` of it), as Docker's `State.OOMKilled`; the next start clears it.
pub const OOM_LABEL: &str = "berth/oom-killed";

/// What removes auto-remove containers.
pub struct AutoRemover {
    pub exchange: Exchange,
    pub tasks: Tasks,
    pub containers: Containers,
    /// The container's anonymous volumes go with it (`run --rm`).
    pub volumes: Option<crate::volumes::Volumes>,
    /// Log files are only removed from under here.
    pub runtime_root: PathBuf,
}

impl AutoRemover {
    /// Subscribes at once (so no exit published from now on is missed) and handles the
    /// exits in a task of its own until `stop` turns true.
    pub fn spawn(self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let topics = [
            "topic==\"/tasks/exit\"".to_string(),
            "topic==\"/tasks/oom\"".to_string(),
        ];
        let events = match Filter::parse_all(&topics) {
            Ok(f) => Some(self.exchange.subscribe(f)),
            Err(e) => {
                tracing::error!(error = %e, "auto-remove: bad event filter");
                None
            }
        };
        tokio::spawn(async move {
            if let Some(events) = events {
                self.run(events, stop).await;
            }
        })
    }

    async fn run(
        self,
        mut events: crate::events::Subscription,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let envelope = tokio::select! {
                e = events.next(&NoFields) => match e {
                    Some(e) => e,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            if envelope.topic == "/tasks/oom" {
                if let Some(oom) = envelope
                    .event
                    .as_ref()
                    .and_then(|a| TaskOom::decode(a.value.as_slice()).ok())
                {
                    // In line: recorded before the exit that follows it is handled.
                    self.mark_oom(&envelope.namespace, &oom.container_id).await;
                }
                continue;
            }
            let Some(exit) = envelope
                .event
                .as_ref()
                .and_then(|a| TaskExit::decode(a.value.as_slice()).ok())
            else {
                continue;
            };
            // Only the init process's exit ends the container (an exec's id differs).
            if exit.id != exit.container_id || exit.container_id.is_empty() {
                continue;
            }
            let (ns, id) = (envelope.namespace.clone(), exit.container_id.clone());
            // The task core learns of the exit here too (its daemon-side status).
            self.tasks.observe_exit(&ns, &id, exit.pid);
            let remover = self.clone_parts();
            let pid = exit.pid;
            // One container's clean-up never holds up the next event.
            tokio::spawn(async move {
                // A stopped container holds no address, port or name (as with Docker).
                remover.tasks.release_network(&ns, &id, pid).await;
                remover.remove(&ns, &id).await
            });
        }
    }

    fn clone_parts(&self) -> AutoRemover {
        AutoRemover {
            exchange: self.exchange.clone(),
            tasks: self.tasks.clone(),
            containers: self.containers.clone(),
            volumes: self.volumes.clone(),
            runtime_root: self.runtime_root.clone(),
        }
    }

    /// Records on container `id` that the kernel killed one of its processes for want of
    /// memory.
    async fn mark_oom(&self, ns: &str, id: &str) {
        let Ok(mut container) = self.containers.get(ns, id).await else {
            return;
        };
        // Only berth's own containers carry berth's labels (a ctr or CRI one is left as
        // its client made it).
        if !container.labels.keys().any(|k| k.starts_with("berth/")) {
            return;
        }
        container
            .labels
            .insert(OOM_LABEL.to_string(), "true".to_string());
        let paths = vec![format!("labels.{OOM_LABEL}")];
        if let Err(e) = self.containers.update(ns, container, paths).await {
            tracing::warn!(namespace = %ns, id = %id, error = %e, "record an OOM kill");
        } else {
            tracing::info!(namespace = %ns, id = %id, "a process of the container was OOM-killed");
        }
    }

    async fn remove(&self, ns: &str, id: &str) {
        let Ok(container) = self.containers.get(ns, id).await else {
            return;
        };
        if container.labels.get(AUTO_REMOVE_LABEL).map(String::as_str) != Some("true") {
            return;
        }
        tracing::info!(namespace = %ns, id = %id, "auto-remove: the container's task exited");
        if let Err(e) = self.tasks.delete(ns, id).await
            && !matches!(e, crate::error::Error::NotFound(_))
        {
            tracing::warn!(namespace = %ns, id = %id, error = %e, "auto-remove: delete task");
            return;
        }
        match self.containers.delete(ns, id).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(namespace = %ns, id = %id, error = %e, "auto-remove: delete container");
                return;
            }
        }
        if let Some(volumes) = &self.volumes
            && let Err(e) = volumes.remove_anonymous_of(ns, &container.labels).await
        {
            tracing::warn!(namespace = %ns, id = %id, error = %e, "auto-remove: remove anonymous volumes");
        }
        for label in [LOG_LABEL, STDIN_LABEL] {
            if let Some(file) = container.labels.get(label)
                && let Some(path) = inside(&self.runtime_root, Path::new(file))
            {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
    }
}

/// `path` if it lies under `root` (no `..`, absolute), else None: a label must not make the
/// daemon delete files elsewhere.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    path.starts_with(root).then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_only_under_the_runtime_root() {
        let root = Path::new("/var/lib/berth/runtime");
        assert!(inside(root, Path::new("/var/lib/berth/runtime/default/x.log")).is_some());
        assert!(inside(root, Path::new("/var/lib/berth/runtime/../meta.redb")).is_none());
        assert!(inside(root, Path::new("/etc/passwd")).is_none());
        assert!(inside(root, Path::new("runtime/x.log")).is_none());
    }
}
