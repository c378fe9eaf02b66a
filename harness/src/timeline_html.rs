//! The HTML timeline of a run: one self-contained file (inline CSS and JavaScript, nothing
//! fetched) with a lane per host, every operation as a bar coloured by its outcome on the
//! lane of the device it went to, faults as shaded spans on the lanes of the hosts they hit,
//! operator actions and status changes as marks, and the operations a checker flagged
//! outlined with the checker's message. Zoom buttons widen the time axis; two selectors
//! filter the operations by repository and by client.
//!
//! The structure is written by Rust, not built by the script, so the file reads the same in
//! any browser and tests can count its parts: `div.lane` per host, `div.op` per operation
//! (`.violating` for the flagged ones), `div.fault` per shaded span, `div.mark` per mark.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::history::{FaultEvent, FaultKind, OpKind, Outcome};
use crate::runner::RunResult;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1000.0)
}

/// The end event of a fault that starts with `kind`, if it has one.
fn end_of(kind: FaultKind) -> Option<FaultKind> {
    match kind {
        FaultKind::Strike => Some(FaultKind::Restart),
        FaultKind::Partition => Some(FaultKind::Repair),
        FaultKind::Hold => Some(FaultKind::Release),
        FaultKind::Lag => Some(FaultKind::LagEnd),
        FaultKind::DiskFailing => Some(FaultKind::DiskRecovered),
        _ => None,
    }
}

/// A shaded span: a fault from its start to its end (or the end of the run).
struct Span<'a> {
    from_ms: u64,
    to_ms: u64,
    start: &'a FaultEvent,
}

/// Pairs every start event with the first later end event of the same hosts.
fn spans(faults: &[FaultEvent], end_ms: u64) -> (Vec<Span<'_>>, Vec<&FaultEvent>) {
    let mut used = vec![false; faults.len()];
    let mut spans = Vec::new();
    let mut instants = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        match end_of(f.kind) {
            Some(end) => {
                let close = faults
                    .iter()
                    .enumerate()
                    .skip(i + 1)
                    .find(|(j, g)| !used[*j] && g.kind == end && g.hosts == f.hosts);
                let to_ms = match close {
                    Some((j, g)) => {
                        used[j] = true;
                        g.at_ms
                    }
                    None => end_ms,
                };
                spans.push(Span {
                    from_ms: f.at_ms,
                    to_ms,
                    start: f,
                });
            }
            None if end_of_any(f.kind) => {}
            None => instants.push(f),
        }
    }
    (spans, instants)
}

/// Whether `kind` ends some fault (drawn as part of its span, not on its own).
fn end_of_any(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::Restart
            | FaultKind::Repair
            | FaultKind::Release
            | FaultKind::LagEnd
            | FaultKind::DiskRecovered
    )
}

fn kebab(kind: FaultKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The page for `result`.
pub fn render(result: &RunResult) -> String {
    let history = &result.history;
    let end_ms = history
        .ops
        .iter()
        .map(|o| o.completed_ms)
        .chain([result.virtual_ms, 1])
        .max()
        .unwrap_or(1);
    let pos = |ms: u64| format!("{:.4}%", ms.min(end_ms) as f64 * 100.0 / end_ms as f64);
    let width = |from: u64, to: u64| {
        format!(
            "{:.4}%",
            (to.min(end_ms).saturating_sub(from.min(end_ms))) as f64 * 100.0 / end_ms as f64
        )
    };

    // Lanes: the devices, then the database hosts, then the operator.
    let mut hosts: Vec<String> = history.devices.clone();
    let mut seen: BTreeSet<String> = hosts.iter().cloned().collect();
    let mut add = |h: &str, hosts: &mut Vec<String>| {
        if seen.insert(h.to_owned()) {
            hosts.push(h.to_owned());
        }
    };
    for op in &history.ops {
        add(&op.device, &mut hosts);
    }
    if let Some(db) = &history.database {
        add(&db.primary, &mut hosts);
        for r in &db.replicas {
            add(r, &mut hosts);
        }
    }
    for f in &history.faults {
        for h in &f.hosts {
            add(h, &mut hosts);
        }
    }
    let operator_lane = !history.operator.is_empty() || !result.status.is_empty();

    // The checkers' messages per operation.
    let mut flagged: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut unattached = Vec::new();
    for v in result.verdicts.iter().flat_map(|v| &v.violations) {
        match v.op {
            Some(op) => flagged.entry(op).or_default().push(v.to_string()),
            None => unattached.push(v.to_string()),
        }
    }

    let (spans, instants) = spans(&history.faults, end_ms);
    let mut lanes: BTreeMap<&str, String> =
        hosts.iter().map(|h| (h.as_str(), String::new())).collect();
    for s in &spans {
        let kind = kebab(s.start.kind);
        for h in &s.start.hosts {
            if let Some(lane) = lanes.get_mut(h.as_str()) {
                let _ = write!(
                    lane,
                    "<div class=\"fault {kind}\" data-kind=\"{kind}\" style=\"left:{};width:{}\" title=\"{}\"></div>",
                    pos(s.from_ms),
                    width(s.from_ms, s.to_ms),
                    esc(&format!(
                        "{} {} {}..{} {}",
                        kind,
                        s.start.hosts.join(","),
                        secs(s.from_ms),
                        secs(s.to_ms),
                        s.start.detail
                    ))
                );
            }
        }
    }
    for f in &instants {
        let kind = kebab(f.kind);
        for h in &f.hosts {
            if let Some(lane) = lanes.get_mut(h.as_str()) {
                let _ = write!(
                    lane,
                    "<div class=\"mark fault-mark\" data-kind=\"{kind}\" style=\"left:{}\" title=\"{}\"></div>",
                    pos(f.at_ms),
                    esc(&format!("{kind} at {} {}", secs(f.at_ms), f.detail))
                );
            }
        }
    }
    if let Some(db) = &history.database {
        for flip in &db.health_flips {
            if let Some(lane) = lanes.get_mut(flip.device.as_str()) {
                let what = if flip.healthy { "healthy" } else { "unhealthy" };
                let _ = write!(
                    lane,
                    "<div class=\"mark status\" data-kind=\"health\" style=\"left:{}\" title=\"{}\"></div>",
                    pos(flip.at_ms),
                    esc(&format!(
                        "{} sees database {} {what} at {}",
                        flip.device,
                        flip.host,
                        secs(flip.at_ms)
                    ))
                );
            }
        }
    }
    let mut repos = BTreeSet::new();
    let mut clients = BTreeSet::new();
    for op in &history.ops {
        repos.insert(op.repo.as_str());
        clients.insert(op.client.as_str());
        let (outcome, said) = match &op.outcome {
            Outcome::Ok { possibly_stale, .. } => (
                "ok",
                if *possibly_stale {
                    "ok (possibly stale)".to_owned()
                } else {
                    "ok".to_owned()
                },
            ),
            Outcome::Refused { error, message } => {
                ("refused", format!("refused {error:?}: {message}"))
            }
            Outcome::Unknown { reason } => ("unknown", format!("unknown: {reason}")),
        };
        let kind = match &op.kind {
            OpKind::Push { updates } => format!(
                "push {}",
                updates
                    .iter()
                    .map(|u| format!("{} -> {}", u.name, u.new))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            OpKind::Read => "read".to_owned(),
        };
        let short = if matches!(op.kind, OpKind::Push { .. }) {
            "push"
        } else {
            "read"
        };
        let messages = flagged.get(&op.id);
        let mut title = format!(
            "op {} {} by {} on {} {}..{}\n{kind}\n{said}",
            op.id,
            op.repo,
            op.client,
            op.device,
            secs(op.invoked_ms),
            secs(op.completed_ms)
        );
        for m in messages.into_iter().flatten() {
            title.push_str("\nVIOLATION ");
            title.push_str(m);
        }
        if let Some(lane) = lanes.get_mut(op.device.as_str()) {
            let _ = write!(
                lane,
                "<div class=\"op {outcome} {short}{}\" id=\"op-{}\" data-op=\"{}\" data-repo=\"{}\" data-client=\"{}\" style=\"left:{};width:{}\" title=\"{}\"></div>",
                if messages.is_some() { " violating" } else { "" },
                op.id,
                op.id,
                esc(&op.repo),
                esc(&op.client),
                pos(op.invoked_ms),
                width(op.invoked_ms, op.completed_ms.max(op.invoked_ms + 1)),
                esc(&title)
            );
        }
    }

    let mut operator = String::new();
    for a in &history.operator {
        let _ = write!(
            operator,
            "<div class=\"mark action{}\" data-kind=\"operator\" style=\"left:{}\" title=\"{}\"></div>",
            if a.ok { "" } else { " failed" },
            pos(a.started_ms),
            esc(&format!("{} at {}: {}", a.command, secs(a.started_ms), a.result))
        );
    }
    let mut last_status: Option<&str> = None;
    for s in &result.status {
        if last_status == Some(s.service.as_str()) {
            continue;
        }
        last_status = Some(s.service.as_str());
        let repos: Vec<String> = s.repos.iter().map(|(r, st)| format!("{r} {st}")).collect();
        let _ = write!(
            operator,
            "<div class=\"mark status\" data-kind=\"status\" style=\"left:{}\" title=\"{}\"></div>",
            pos(s.at_ms),
            esc(&format!(
                "status at {}: {} {}",
                secs(s.at_ms),
                s.service,
                repos.join(", ")
            ))
        );
    }

    let mut page = String::new();
    let title = format!(
        "{} seed {} ({}{}): {}",
        result.scenario,
        result.seed,
        result.profile,
        result
            .plant
            .map(|b| format!(", plant {b}"))
            .unwrap_or_default(),
        if result.passed() { "PASS" } else { "FAIL" }
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n<p class=\"meta\">replay: <code>{}</code> &middot; final state {} &middot; {} operations &middot; {} fault events &middot; trace hash {:016x}</p>\n",
        esc(&title),
        esc(&title),
        esc(&result.replay_command()),
        result.final_outcome.name(),
        history.ops.len(),
        history.faults.len(),
        result.trace_hash
    );
    page.push_str("<div class=\"controls\">zoom <button id=\"zoom-out\">&minus;</button><button id=\"zoom-in\">+</button><button id=\"zoom-reset\">1&times;</button> <label>repository <select id=\"filter-repo\"><option value=\"\">all</option>");
    for r in &repos {
        let _ = write!(page, "<option>{}</option>", esc(r));
    }
    page.push_str("</select></label> <label>client <select id=\"filter-client\"><option value=\"\">all</option>");
    for c in &clients {
        let _ = write!(page, "<option>{}</option>", esc(c));
    }
    page.push_str("</select></label> <span class=\"legend\"><i class=\"ok\"></i>ok <i class=\"refused\"></i>refused <i class=\"unknown\"></i>unknown <i class=\"violating-key\"></i>flagged by a checker <i class=\"fault-key\"></i>fault</span></div>\n");
    page.push_str("<div class=\"scroller\"><div class=\"timeline\" id=\"timeline\">\n");
    // The time axis: about ten ticks at a round number of seconds.
    let step_s = [1u64, 2, 5, 10, 20, 30, 60, 120, 300, 600]
        .into_iter()
        .find(|s| end_ms / (s * 1000) <= 12)
        .unwrap_or(1200);
    page.push_str("<div class=\"axis\"><div class=\"lane-label\"></div><div class=\"track\">");
    let mut t = 0;
    while t * 1000 <= end_ms {
        let _ = write!(
            page,
            "<span class=\"tick\" style=\"left:{}\">{t}s</span>",
            pos(t * 1000)
        );
        t += step_s;
    }
    page.push_str("</div></div>\n");
    for h in &hosts {
        let _ = writeln!(
            page,
            "<div class=\"lane\" data-host=\"{}\"><div class=\"lane-label\">{}</div><div class=\"track\">{}</div></div>",
            esc(h),
            esc(h),
            lanes.get(h.as_str()).map(String::as_str).unwrap_or_default()
        );
    }
    if operator_lane {
        let _ = writeln!(
            page,
            "<div class=\"lane operator\" data-host=\"operator\"><div class=\"lane-label\">operator</div><div class=\"track\">{operator}</div></div>"
        );
    }
    page.push_str("</div></div>\n");

    page.push_str("<h2>Checkers</h2>\n<ul class=\"verdicts\">");
    for v in &result.verdicts {
        let _ = write!(
            page,
            "<li class=\"{}\">{} {}",
            if v.passed() { "pass" } else { "fail" },
            if v.passed() { "pass" } else { "FAIL" },
            esc(&v.checker.to_string())
        );
        if !v.violations.is_empty() {
            page.push_str("<ul>");
            for x in &v.violations {
                let link =
                    x.op.map(|op| {
                        format!(" <a href=\"#op-{op}\" class=\"goto\" data-op=\"{op}\">op {op}</a>")
                    })
                    .unwrap_or_default();
                let _ = write!(
                    page,
                    "<li class=\"violation\">{}{link}</li>",
                    esc(&x.to_string())
                );
            }
            page.push_str("</ul>");
        }
        page.push_str("</li>");
    }
    if let Some(e) = &result.sim_error {
        let _ = write!(page, "<li class=\"fail\">simulation error: {}</li>", esc(e));
    }
    page.push_str("</ul>\n");
    if !unattached.is_empty() {
        page.push_str(
            "<p>Violations about the final state (no single operation) are listed above.</p>\n",
        );
    }
    let _ = write!(page, "<script>{JS}</script>\n</body></html>\n");
    page
}

/// Writes the page for `result` to `path`.
pub fn write(path: &Path, result: &RunResult) -> std::io::Result<()> {
    std::fs::write(path, render(result))
}

const CSS: &str = r#"
body{font:13px/1.4 system-ui,sans-serif;margin:12px;color:#222}
h1{font-size:16px;margin:0 0 4px} h2{font-size:14px}
.meta{color:#555;margin:0 0 8px}
.controls{margin:6px 0;position:sticky;top:0;background:#fff;padding:4px 0;z-index:5}
.legend i{display:inline-block;width:12px;height:10px;margin:0 3px 0 10px;vertical-align:middle}
.scroller{overflow-x:auto;border:1px solid #ccc}
.timeline{--zoom:1;width:calc(100% * var(--zoom));min-width:100%}
.lane,.axis{display:flex;border-bottom:1px solid #eee;height:28px}
.axis{height:18px}
.lane-label{flex:0 0 90px;position:sticky;left:0;background:#fafafa;z-index:3;padding:4px;font-weight:600;border-right:1px solid #ddd}
.track{position:relative;flex:1}
.tick{position:absolute;top:2px;font-size:10px;color:#777;border-left:1px solid #bbb;padding-left:2px}
.op{position:absolute;top:8px;height:12px;min-width:2px;opacity:.85;box-sizing:border-box;z-index:2;cursor:pointer}
.op.read{top:15px;height:8px}
.op.ok,.legend .ok{background:#2e9d4a}
.op.refused,.legend .refused{background:#e39b2d}
.op.unknown,.legend .unknown{background:#8a7fb8}
.op.violating,.legend .violating-key{outline:3px solid #d11;z-index:4;opacity:1}
.op.selected{outline:3px solid #000}
.fault,.legend .fault-key{background:repeating-linear-gradient(45deg,rgba(210,40,40,.18),rgba(210,40,40,.18) 4px,rgba(210,40,40,.08) 4px,rgba(210,40,40,.08) 8px)}
.fault{position:absolute;top:0;bottom:0;z-index:1}
.fault.hold,.fault.lag{background:rgba(40,90,210,.15)}
.mark{position:absolute;top:0;bottom:0;width:2px;background:#333;z-index:3}
.mark.status{background:#1a73e8}
.mark.action{background:#000;width:3px}
.mark.action.failed{background:#d11}
.mark.fault-mark{background:#d11}
.hidden{display:none}
.verdicts .fail{color:#b00} .verdicts .pass{color:#2e7d32}
.violation{color:#222}
"#;

const JS: &str = r#"
(function(){
  var tl=document.getElementById('timeline');var zoom=1;
  function setZoom(z){zoom=Math.max(1,Math.min(64,z));tl.style.setProperty('--zoom',zoom);}
  document.getElementById('zoom-in').onclick=function(){setZoom(zoom*2);};
  document.getElementById('zoom-out').onclick=function(){setZoom(zoom/2);};
  document.getElementById('zoom-reset').onclick=function(){setZoom(1);};
  tl.addEventListener('wheel',function(e){if(e.ctrlKey){e.preventDefault();setZoom(e.deltaY<0?zoom*1.25:zoom/1.25);}},{passive:false});
  var repo=document.getElementById('filter-repo'),client=document.getElementById('filter-client');
  function filter(){
    var r=repo.value,c=client.value;
    var ops=tl.querySelectorAll('.op');
    for(var i=0;i<ops.length;i++){
      var o=ops[i];var show=(!r||o.dataset.repo===r)&&(!c||o.dataset.client===c);
      o.classList.toggle('hidden',!show);
    }
  }
  repo.onchange=filter;client.onchange=filter;
  var links=document.querySelectorAll('a.goto');
  for(var i=0;i<links.length;i++){links[i].onclick=function(e){
    e.preventDefault();var o=document.getElementById('op-'+this.dataset.op);if(!o)return;
    var sel=tl.querySelectorAll('.op.selected');for(var j=0;j<sel.length;j++)sel[j].classList.remove('selected');
    o.classList.add('selected');o.scrollIntoView({block:'center',inline:'center'});};}
  var params=new URLSearchParams(location.search);
  if(params.get('repo')){repo.value=params.get('repo');}
  if(params.get('client')){client.value=params.get('client');}
  if(params.get('zoom')){setZoom(parseFloat(params.get('zoom'))||1);}
  filter();
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{self, RunSpec};
    use crate::scenario;
    use stormcell_model::config::Profile;
    use stormcell_model::plant::Bug;

    fn count(page: &str, needle: &str) -> usize {
        page.matches(needle).count()
    }

    /// A failing run: a lane per host, a bar per operation, the flagged operations
    /// outlined, a shaded span per fault with an end.
    #[test]
    fn the_page_has_a_lane_per_host_and_a_bar_per_operation() {
        let result = runner::run(&RunSpec {
            scenario: scenario::builtin_named("steady").expect("built-in"),
            seed: 0,
            profile: Profile::Stormcell,
            plant: Some(Bug::SkipReadSync),
            keep_trace: false,
        });
        assert!(!result.passed());
        let page = render(&result);
        assert_eq!(
            count(&page, "<div class=\"lane\""),
            result.history.devices.len()
        );
        assert_eq!(count(&page, "<div class=\"op "), result.history.ops.len());
        let flagged: BTreeSet<u64> = result
            .verdicts
            .iter()
            .flat_map(|v| &v.violations)
            .filter_map(|v| v.op)
            .collect();
        assert!(!flagged.is_empty());
        assert_eq!(count(&page, " violating\""), flagged.len());
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn faults_are_shaded_on_the_hosts_they_hit() {
        let result = runner::run(&RunSpec {
            scenario: scenario::builtin_named("lightning").expect("built-in"),
            seed: 1,
            profile: Profile::Stormcell,
            plant: None,
            keep_trace: false,
        });
        let strikes = result
            .history
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Strike)
            .map(|f| f.hosts.len())
            .sum::<usize>();
        assert!(strikes > 0);
        let page = render(&result);
        assert_eq!(count(&page, "class=\"fault strike\""), strikes);
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
