//! JUnit XML of a campaign, for CI systems: one test case per scenario (and profile and
//! planted bug) over the seed range it ran, failing with each failing seed's violation and
//! `replay` command, and one test case per scenario declaring `reach = [...]`, failing
//! when a declared state was never reached. Written from a [`SummaryFile`], so a merged
//! campaign gives the same XML as one run on one machine.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use crate::report::{RunLine, SummaryFile};

/// The test cases of a campaign, grouped as they are written.
struct Case<'a> {
    classname: String,
    name: String,
    time_s: f64,
    /// `(message, body)` of the failure, if any.
    failure: Option<(String, String)>,
    runs: Vec<&'a RunLine>,
}

/// A seed range in words: `seeds 0-19`, or `seeds 0-39 (10 runs)` when some are missing
/// (a shard's slice).
fn seed_range(seeds: &[u64]) -> String {
    match (seeds.iter().min(), seeds.iter().max()) {
        (Some(lo), Some(hi)) if hi - lo + 1 == seeds.len() as u64 => format!("seeds {lo}-{hi}"),
        (Some(lo), Some(hi)) => format!("seeds {lo}-{hi} ({} runs)", seeds.len()),
        _ => "no seeds".to_owned(),
    }
}

/// Runs are grouped by scenario, profile and planted bug.
type GroupKey = (String, String, Option<String>);

fn cases(file: &SummaryFile) -> Vec<Case<'_>> {
    // Runs are sorted by scenario then seed; group them keeping that order.
    let mut groups: Vec<(GroupKey, Vec<&RunLine>)> = Vec::new();
    for r in &file.runs {
        let key = (r.scenario.clone(), r.profile.clone(), r.plant.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let mut out = Vec::new();
    for ((scenario, profile, plant), runs) in groups {
        let seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
        let failing: Vec<&&RunLine> = runs.iter().filter(|r| !r.passed).collect();
        let failure = failing.first().map(|first| {
            let message = format!(
                "{} of {} runs failed; first: seed {}: {}",
                failing.len(),
                runs.len(),
                first.seed,
                first.violation.as_deref().unwrap_or("failed")
            );
            let body = failing
                .iter()
                .map(|r| {
                    format!(
                        "seed {}: {}\n  replay: {}",
                        r.seed,
                        r.violation.as_deref().unwrap_or("failed"),
                        r.replay
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            (message, body)
        });
        out.push(Case {
            classname: match &plant {
                Some(p) => format!("stormcell-sim.{profile}.{p}"),
                None => format!("stormcell-sim.{profile}"),
            },
            name: format!("{scenario} {}", seed_range(&seeds)),
            time_s: runs.iter().map(|r| r.wall_s).sum(),
            failure,
            runs,
        });
    }
    let mut unreached: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in &file.unreached {
        for scenario in file.reach.keys() {
            if line.starts_with(&format!("scenario {scenario} ")) {
                unreached.entry(scenario).or_default().push(line);
            }
        }
    }
    for (scenario, points) in &file.reach {
        let missing = unreached.get(scenario.as_str());
        out.push(Case {
            classname: "stormcell-sim.coverage".to_owned(),
            name: format!(
                "{scenario} reaches {}",
                points
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            time_s: 0.0,
            failure: missing.map(|lines| {
                (
                    format!("{} declared state(s) never reached", lines.len()),
                    lines.join("\n"),
                )
            }),
            runs: Vec::new(),
        });
    }
    out
}

/// The JUnit XML document of `file`.
pub fn render(file: &SummaryFile) -> std::io::Result<String> {
    let cases = cases(file);
    let tests = cases.len().to_string();
    let failures = cases
        .iter()
        .filter(|c| c.failure.is_some())
        .count()
        .to_string();
    let time = format!("{:.3}", file.summary.total_wall_s);
    let suite_name = match file.shard {
        Some(shard) => format!("stormcell-sim campaign (shard {shard})"),
        None => "stormcell-sim campaign".to_owned(),
    };
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let attrs = [
        ("name", "stormcell-sim"),
        ("tests", tests.as_str()),
        ("failures", failures.as_str()),
        ("errors", "0"),
        ("time", time.as_str()),
    ];
    w.create_element("testsuites")
        .with_attributes(attrs)
        .write_inner_content(|w| {
            let attrs = [
                ("name", suite_name.as_str()),
                ("tests", tests.as_str()),
                ("failures", failures.as_str()),
                ("errors", "0"),
                ("skipped", "0"),
                ("time", time.as_str()),
            ];
            w.create_element("testsuite")
                .with_attributes(attrs)
                .write_inner_content(|w| {
                    for case in &cases {
                        write_case(w, case)?;
                    }
                    Ok(())
                })?;
            Ok(())
        })?;
    String::from_utf8(w.into_inner())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn write_case(w: &mut Writer<Vec<u8>>, case: &Case<'_>) -> std::io::Result<()> {
    let time = format!("{:.3}", case.time_s);
    let attrs = [
        ("classname", case.classname.as_str()),
        ("name", case.name.as_str()),
        ("time", time.as_str()),
    ];
    let element = w.create_element("testcase").with_attributes(attrs);
    let out = case
        .runs
        .iter()
        .map(|r| {
            format!(
                "seed {} {} {} trace {}",
                r.seed,
                if r.passed { "pass" } else { "FAIL" },
                r.final_outcome,
                r.trace_hash
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    if case.failure.is_none() && out.is_empty() {
        element.write_empty()?;
        return Ok(());
    }
    element.write_inner_content(|w| {
        if let Some((message, body)) = &case.failure {
            w.create_element("failure")
                .with_attributes([("message", message.as_str()), ("type", "violation")])
                .write_text_content(BytesText::new(body))?;
        }
        if !out.is_empty() {
            w.create_element("system-out")
                .write_text_content(BytesText::new(&out))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Writes the JUnit XML of `file` to `path`.
pub fn write(path: &Path, file: &SummaryFile) -> anyhow::Result<()> {
    let xml = render(file)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, xml).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_name_gaps() {
        assert_eq!(seed_range(&[3, 4, 5]), "seeds 3-5");
        assert_eq!(seed_range(&[0, 4, 8]), "seeds 0-8 (3 runs)");
    }
}
