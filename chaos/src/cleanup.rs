//! Everything a run started, so that it can all be stopped: at the end of the run, on an
//! error, and on Ctrl-C or SIGTERM (from a thread that waits for those signals).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

/// A PostgreSQL server to stop: how to run `pg_ctl` for it and its data directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PgServer {
    pub(crate) bin: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) as_postgres: bool,
}

/// The processes and servers a run has running now.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pids: BTreeSet<u32>,
    servers: BTreeSet<PgServer>,
}

impl Registry {
    /// An empty registry, shared with the signal thread.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_pid(&self, pid: u32) {
        self.lock().pids.insert(pid);
    }

    pub(crate) fn remove_pid(&self, pid: u32) {
        self.lock().pids.remove(&pid);
    }

    pub(crate) fn add_server(&self, server: PgServer) {
        self.lock().servers.insert(server);
    }

    pub(crate) fn remove_server(&self, server: &PgServer) {
        self.lock().servers.remove(server);
    }

    /// Kills every registered process (`kill -9`, by pid) and stops every registered
    /// PostgreSQL server (woken first, in case it was hung by SIGSTOP).
    pub fn stop_everything(&self) {
        let (pids, servers) = {
            let mut inner = self.lock();
            (
                std::mem::take(&mut inner.pids),
                std::mem::take(&mut inner.servers),
            )
        };
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        for server in servers {
            crate::postgres::stop_server(&server);
        }
    }
}

/// Starts a thread that, on Ctrl-C or SIGTERM, stops everything in `registry` and ends
/// the process with status 130.
pub fn stop_on_signal(registry: Arc<Registry>) {
    let spawned = std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    biased;
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            eprintln!("stormcell-chaos: interrupted; stopping the nodes and PostgreSQL");
            registry.stop_everything();
            std::process::exit(130);
        });
    if let Err(e) = spawned {
        eprintln!("stormcell-chaos: cannot watch for Ctrl-C: {e}");
    }
}
