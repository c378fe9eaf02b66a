//! Status sampled over a run (PROTOCOL.md 8.1): the service's sync status every few
//! seconds, through the same admin code as `stormcell service status`, kept for the run's
//! report as a timeline of changes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stormcell_model::admin::Admin;
use stormcell_model::ids::ServiceId;

use crate::checker::secs;
use crate::trace::sim_now_ms;

/// One sample of the service status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSample {
    /// Virtual milliseconds since the start.
    pub at_ms: u64,
    /// The service's status, as `stormcell service status` prints it; or why it could not
    /// be read.
    pub service: String,
    /// Each repository's status.
    pub repos: Vec<(String, String)>,
}

/// Samples `service` every `every` until `until_ms`, appending to `out`.
pub async fn run(
    admin: Arc<Admin>,
    service: ServiceId,
    every: Duration,
    until_ms: u64,
    out: Arc<Mutex<Vec<StatusSample>>>,
) {
    loop {
        tokio::time::sleep(every).await;
        let at_ms = sim_now_ms();
        if at_ms >= until_ms {
            return;
        }
        let sample = match admin.service_status(&service).await {
            Ok(status) => StatusSample {
                at_ms,
                service: stormcell_model::admin::sync_text(&status.sync),
                repos: status
                    .repos
                    .iter()
                    .map(|(r, s)| (r.to_string(), format!("{s:?}")))
                    .collect(),
            },
            Err(e) => StatusSample {
                at_ms,
                service: format!("unavailable ({e})"),
                repos: Vec::new(),
            },
        };
        out.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
    }
}

/// The timeline as text: one line per change of the service's status.
pub fn render(samples: &[StatusSample]) -> String {
    let mut out = String::new();
    let mut last: Option<&str> = None;
    for s in samples {
        if last == Some(s.service.as_str()) {
            continue;
        }
        last = Some(s.service.as_str());
        out.push_str(&format!("{:>10}  {}\n", secs(s.at_ms), s.service));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_shows_changes_only() {
        let s = |at_ms, service: &str| StatusSample {
            at_ms,
            service: service.to_owned(),
            repos: Vec::new(),
        };
        let text = render(&[
            s(5_000, "Synchronized"),
            s(10_000, "Synchronized"),
            s(15_000, "Partial (lag 2)"),
            s(20_000, "Synchronized"),
        ]);
        assert_eq!(
            text,
            "    5.000s  Synchronized\n   15.000s  Partial (lag 2)\n   20.000s  Synchronized\n"
        );
    }
}
