//! A whole node: the service on its listening address, background replication and the
//! database health checks.

use std::sync::Arc;

use crate::engine::Engine;
use crate::{failover, replication, service};

/// Runs a device until its listener fails: the node service on `listen` and the
/// background replication loop.
pub async fn run(
    engine: Arc<Engine>,
    triggers: tokio::sync::mpsc::UnboundedReceiver<crate::ids::RepoId>,
    listen: &str,
) -> std::io::Result<()> {
    let listener = engine.ports().net.listen(listen).await?;
    let spawn = Arc::clone(&engine.ports().spawn);
    let background = spawn.spawn(Box::pin(replication::run(Arc::clone(&engine), triggers)));
    let health = spawn.spawn(Box::pin(failover::monitor(Arc::clone(engine.failover()))));
    let served = service::serve(engine, listener).await;
    background.abort();
    health.abort();
    served
}
