//! The server on a thread of its own, for callers that embed it (a load test against the
//! built-in engine): its HTTP work then never shares a runtime with theirs.

use super::serve;
use crate::api::Backend;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A [`serve`] loop on its own OS thread and tokio runtime; dropping it shuts the server down
/// (in-flight requests get `grace`, then are aborted) and joins the thread.
#[derive(Debug)]
pub struct ServerThread {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl ServerThread {
    /// Binds `addr` (port 0 picks a free port) and serves `backend` with `workers` runtime
    /// threads; returns once the socket is bound.
    pub fn start(
        backend: Arc<dyn Backend>,
        addr: SocketAddr,
        workers: usize,
        grace: Duration,
    ) -> std::io::Result<Self> {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("dyno-serve".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .thread_name("dyno-serve-worker")
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        let kind = e.kind();
                        let _ = bound_tx.send(Err(e));
                        return Err(std::io::Error::new(kind, "bind failed"));
                    }
                };
                let _ = bound_tx.send(listener.local_addr());
                serve(backend, listener, async move { drop(stop_rx.await) }, grace).await
            })
        })?;
        match bound_rx.recv() {
            Ok(Ok(addr)) => Ok(Self { addr, stop: Some(stop_tx), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(std::io::Error::other("the server thread ended before binding")),
            },
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down and waits for the server to finish.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
