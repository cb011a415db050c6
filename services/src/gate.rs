//! Calls held while berthd restores the tasks a previous run left.
//!
//! berthd serves its socket as soon as its stores are open. Restoring the previous run's
//! tasks (reconnecting every shim, cleaning up after the dead ones, sweeping their
//! networks) goes on behind it: with a hundred live containers that is most of a restart.
//! The services whose answers depend on those tasks, or that change them (tasks,
//! containers, CRI's RuntimeService, networks, volumes, restart policies), hold each call
//! until the restore is done and then serve it as usual; the others (version, content,
//! images, leases, snapshots, …) answer at once. A client therefore never sees a task
//! missing that is only not restored yet.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, Either};
use tokio::sync::watch;

/// Opens the gate: every held call goes on, and later calls are no longer held.
pub struct Opener(watch::Sender<bool>);

impl Opener {
    pub fn open(self) {
        self.0.send_replace(true);
    }
}

/// The [`tower::Layer`] that holds the calls of the listed services until opened.
#[derive(Clone)]
pub struct Gate {
    open: watch::Receiver<bool>,
    /// The held services' full names (`containerd.services.tasks.v1.Tasks`).
    held: Arc<[&'static str]>,
}

impl Gate {
    /// A closed gate over the services named in `held`, and what opens it.
    pub fn closed(held: impl IntoIterator<Item = &'static str>) -> (Gate, Opener) {
        let (tx, rx) = watch::channel(false);
        let gate = Gate {
            open: rx,
            held: held.into_iter().collect(),
        };
        (gate, Opener(tx))
    }

    /// Whether a call to `path` (`/<service>/<method>`) waits while the gate is closed.
    fn holds(&self, path: &str) -> bool {
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        self.held.contains(&service)
    }
}

impl<S> tower::Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.clone(),
        }
    }
}

/// A service behind the [`Gate`].
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    gate: Gate,
}

impl<S, B> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if *self.gate.open.borrow() || !self.gate.holds(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        // The service made ready by `poll_ready` goes with the call; a clone stays.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let mut open = self.gate.open.clone();
        tracing::debug!(
            path = request.uri().path(),
            "call held until the tasks are restored"
        );
        Either::Right(Box::pin(async move {
            // A dropped opener (the daemon stopping) lets the call through to be refused
            // or served by what is there.
            let _ = open.wait_for(|open| *open).await;
            inner.call(request).await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, Service, ServiceExt};

    /// Counts the calls that reached it.
    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicUsize>);

    impl tower::Service<http::Request<()>> for Counter {
        type Response = ();
        type Error = Infallible;
        type Future = std::future::Ready<Result<(), Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }

    /// The future of one call to `path` through `service`.
    async fn call(
        service: &mut Gated<Counter>,
        path: &str,
    ) -> impl std::future::Future<Output = Result<(), Infallible>> + use<> {
        let request = http::Request::builder().uri(path).body(()).unwrap();
        service.ready().await.unwrap().call(request)
    }

    #[tokio::test]
    async fn holds_the_listed_services_until_opened() {
        let counter = Counter::default();
        let (gate, opener) = Gate::closed(["containerd.services.tasks.v1.Tasks"]);
        let mut service = gate.layer(counter.clone());

        // Another service is answered at once.
        call(
            &mut service,
            "/containerd.services.version.v1.Version/Version",
        )
        .await
        .await
        .unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);

        // A held one waits: not even a prefix of its name matches another service.
        let held = call(&mut service, "/containerd.services.tasks.v1.Tasks/List").await;
        let mut held = tokio::spawn(held);
        call(&mut service, "/containerd.services.tasks.v1.TasksX/List")
            .await
            .await
            .unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut held)
                .await
                .is_err(),
            "a held call finished before the gate opened"
        );
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);

        opener.open();
        held.await.unwrap().unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 3);
        // Open: nothing waits any more.
        call(&mut service, "/containerd.services.tasks.v1.Tasks/Get")
            .await
            .await
            .unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn the_service_is_the_first_path_segment() {
        let (gate, _opener) = Gate::closed(["runtime.v1.RuntimeService"]);
        assert!(gate.holds("/runtime.v1.RuntimeService/RunPodSandbox"));
        assert!(!gate.holds("/runtime.v1.ImageService/PullImage"));
        assert!(!gate.holds("runtime.v1.RuntimeService/RunPodSandbox"));
        assert!(!gate.holds("/runtime.v1.RuntimeService"));
        assert!(!gate.holds(""));
    }
}
