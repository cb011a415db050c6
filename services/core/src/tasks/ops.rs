//! The task operations after create: each finds the task, applies the daemon-side rule,
//! calls the shim through [`crate::runtime::Shim`], keeps the status up to date, and turns
//! the error of a dead shim into the clean-up of its task.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter};
use crate::runtime::{ExecOptions, Exit, PidInfo, ProcessState, ProcessStatus, ShimTime};
use crate::types::AnyValue;

use super::status::{Rule, TaskStatus, rules};
use super::{Task, Tasks};

/// The fields task filters can name: `id` (and `container_id`), `namespace`, `runtime`,
/// and, once the task's state is known, `pid` and `status`.
pub struct TaskFields<'a> {
    pub task: &'a Task,
    pub process: Option<&'a ProcessState>,
}

impl Adaptor for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let t = self.task;
        match path.first().map(String::as_str)? {
            "id" | "container_id" => Some(t.id.clone()),
            "namespace" => Some(t.namespace.clone()),
            "runtime" => Some(t.runtime.clone()),
            "pid" => self.process.map(|p| p.pid.to_string()),
            "status" => self.process.map(|p| p.status.name().to_string()),
            _ => None,
        }
    }
}

/// One task's statistics, when they were collected.
#[derive(Debug, Clone)]
pub struct Metric {
    pub id: String,
    pub collected: SystemTime,
    pub data: Option<AnyValue>,
}

impl Task {
    /// The daemon's view of the init process.
    pub fn status(&self) -> TaskStatus {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new status of the init process; a stopped process stays stopped.
    pub(super) fn set_status(&self, status: ProcessStatus, pid: Option<u32>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_final() {
            return;
        }
        s.status = status;
        if let Some(pid) = pid.filter(|p| *p != 0) {
            s.pid = pid;
        }
    }
}

impl Tasks {
    /// Runs `call` on the task's shim; an error that says the shim is unreachable, when the
    /// shim is indeed gone, cleans the task up and becomes NotFound.
    async fn on_shim<T, F, Fut>(&self, task: &Arc<Task>, call: F) -> Result<T>
    where
        F: FnOnce(Arc<Task>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match call(task.clone()).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.check_shim(task, e).await),
        }
    }

    /// Applies `rule` for `op` on the init process. A refusal on a status that may be
    /// stale is checked against the shim's answer first.
    async fn ensure(&self, task: &Arc<Task>, op: &str, rule: Rule) -> Result<()> {
        let known = task.status();
        if known.check(op, &task.id, rule).is_ok() {
            return Ok(());
        }
        if known.is_final() {
            return known.check(op, &task.id, rule);
        }
        let state = self
            .on_shim(
                task,
                |t| async move { t.shim.process_state(&t.id, "").await },
            )
            .await?;
        task.set_status(state.status, Some(state.pid));
        task.status().check(op, &task.id, rule)
    }

    /// Starts the task's init process (`exec_id` empty) or one of its execs; the pid.
    pub async fn start(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
        let task = self.get(ns, id)?;
        if exec_id.is_empty() {
            self.ensure(&task, "start", rules::can_start).await?;
            // The container's network comes up while its shim and runtime create it; the
            // process starts once it is up.
            self.networks.ready(ns, id).await?;
        }
        let exec = exec_id.to_string();
        let init = exec_id.is_empty();
        if init {
            task.started
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let pid = self
            .on_shim(&task, |t| async move {
                t.shim.start_process(&t.id, &exec).await
            })
            .await
            .inspect_err(|_| {
                if init {
                    task.started
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                }
            })?;
        if init {
            task.set_status(ProcessStatus::Running, Some(pid));
        }
        Ok(pid)
    }

    /// The state of the init process or of an exec, as the shim reports it.
    pub async fn state(&self, ns: &str, id: &str, exec_id: &str) -> Result<ProcessState> {
        let task = self.get(ns, id)?;
        let exec = exec_id.to_string();
        let state = self
            .on_shim(&task, |t| async move {
                t.shim.process_state(&t.id, &exec).await
            })
            .await?;
        if exec_id.is_empty() {
            task.set_status(state.status, Some(state.pid));
        }
        Ok(state)
    }

    /// The init processes of `ns` that `filter` matches (an empty filter matches all), in
    /// id order. Tasks deleted meanwhile, or whose shim died, are left out.
    pub async fn list_states(
        &self,
        ns: &str,
        filter: &Filter,
    ) -> Result<Vec<(Arc<Task>, ProcessState)>> {
        let mut out = Vec::new();
        for task in self.list(ns) {
            let state = match self.state(ns, &task.id, "").await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let fields = TaskFields {
                task: &task,
                process: Some(&state),
            };
            if filter.matches(&fields) {
                out.push((task, state));
            }
        }
        Ok(out)
    }

    /// Deletes an exec process (the init process goes with [`Tasks::delete`]).
    pub async fn delete_process(&self, ns: &str, id: &str, exec_id: &str) -> Result<Exit> {
        if exec_id.is_empty() {
            return Err(Error::invalid("exec id must be set to delete a process"));
        }
        let task = self.get(ns, id)?;
        let exec = exec_id.to_string();
        self.on_shim(&task, |t| async move {
            t.shim.delete_process(&t.id, &exec).await
        })
        .await
    }

    /// Sends `signal` to the init process or an exec (`all`: every process of the task).
    pub async fn kill(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let task = self.get(ns, id)?;
        let exec = exec_id.to_string();
        self.on_shim(&task, |t| async move {
            t.shim.kill_process(&t.id, &exec, signal, all).await
        })
        .await
    }

    /// Adds an exec process to the task (started with [`Tasks::start`]).
    pub async fn exec(&self, ns: &str, id: &str, exec_id: &str, opts: ExecOptions) -> Result<()> {
        if exec_id.is_empty() {
            return Err(Error::invalid("exec id must not be empty"));
        }
        let task = self.get(ns, id)?;
        self.ensure(&task, "exec in", rules::can_exec).await?;
        let exec = exec_id.to_string();
        self.on_shim(&task, |t| async move {
            t.shim.exec_process(&t.id, &exec, opts).await
        })
        .await
    }

    pub async fn resize_pty(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let task = self.get(ns, id)?;
        let exec = exec_id.to_string();
        self.on_shim(&task, |t| async move {
            t.shim.resize(&t.id, &exec, width, height).await
        })
        .await
    }

    pub async fn close_io(&self, ns: &str, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let task = self.get(ns, id)?;
        let exec = exec_id.to_string();
        self.on_shim(&task, |t| async move {
            t.shim.close_stdin(&t.id, &exec, stdin).await
        })
        .await
    }

    pub async fn pause(&self, ns: &str, id: &str) -> Result<()> {
        let task = self.get(ns, id)?;
        self.ensure(&task, "pause", rules::can_pause).await?;
        self.on_shim(&task, |t| async move { t.shim.pause_task(&t.id).await })
            .await?;
        task.set_status(ProcessStatus::Paused, None);
        Ok(())
    }

    pub async fn resume(&self, ns: &str, id: &str) -> Result<()> {
        let task = self.get(ns, id)?;
        self.ensure(&task, "resume", rules::can_resume).await?;
        self.on_shim(&task, |t| async move { t.shim.resume_task(&t.id).await })
            .await?;
        task.set_status(ProcessStatus::Running, None);
        Ok(())
    }

    /// The processes of the task.
    pub async fn pids(&self, ns: &str, id: &str) -> Result<Vec<PidInfo>> {
        let task = self.get(ns, id)?;
        self.on_shim(&task, |t| async move { t.shim.list_pids(&t.id).await })
            .await
    }

    /// Changes the task's resources (a typed `Any`, e.g. `LinuxResources`) and annotations.
    pub async fn update(
        &self,
        ns: &str,
        id: &str,
        resources: Option<AnyValue>,
        annotations: impl IntoIterator<Item = (String, String)> + Send,
    ) -> Result<()> {
        let task = self.get(ns, id)?;
        self.ensure(&task, "update", rules::can_update).await?;
        let annotations: Vec<(String, String)> = annotations.into_iter().collect();
        self.on_shim(&task, |t| async move {
            t.shim.update_task(&t.id, resources, annotations).await
        })
        .await
    }

    /// Waits for the init process or an exec to exit: its status and time.
    pub async fn wait(&self, ns: &str, id: &str, exec_id: &str) -> Result<(u32, Option<ShimTime>)> {
        let task = self.get(ns, id)?;
        let exec = exec_id.to_string();
        let exit = self
            .on_shim(
                &task,
                |t| async move { t.shim.wait_process(&t.id, &exec).await },
            )
            .await?;
        if exec_id.is_empty() {
            task.set_status(ProcessStatus::Stopped, None);
        }
        Ok(exit)
    }

    /// The statistics of the tasks of `ns` that `filter` matches (by id, namespace and
    /// runtime). Tasks deleted meanwhile, or whose shim died, have none (as containerd).
    pub async fn metrics(&self, ns: &str, filter: &Filter) -> Result<Vec<Metric>> {
        let mut metrics = Vec::new();
        for task in self.list(ns) {
            let fields = TaskFields {
                task: &task,
                process: None,
            };
            if !filter.matches(&fields) {
                continue;
            }
            let collected = SystemTime::now();
            let stats = self
                .on_shim(&task, |t| async move { t.shim.task_stats(&t.id).await })
                .await;
            let data = match stats {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            metrics.push(Metric {
                id: task.id.clone(),
                collected,
                data,
            });
        }
        Ok(metrics)
    }

    /// Checkpoints are not made by berthd.
    pub fn checkpoint(&self, id: &str) -> Result<()> {
        Err(Error::NotImplemented(format!(
            "checkpoint of task {id}: berthd does not checkpoint tasks"
        )))
    }

    /// Marks the init process of `ns`/`id` stopped when the exit of `pid` is reported
    /// (the shim's `/tasks/exit`); an exit of an earlier task of the same id is ignored.
    pub fn observe_exit(&self, ns: &str, id: &str, pid: u32) {
        let Ok(task) = self.get(ns, id) else {
            return;
        };
        if task.status().pid == pid {
            task.set_status(ProcessStatus::Stopped, None);
        }
    }
}
