//! The HTML timeline in a real headless browser (Chromium from the system's packages): the
//! page is loaded, its script runs, and the DOM the browser ends with is compared by
//! structure (lanes, bars, flagged bars, bars left by the filters), never by pixels. Says
//! SKIPPED when no Chromium is installed (`apt-get install chromium`).

use std::path::{Path, PathBuf};
use std::process::Command;

use stormcell_harness::runner::{self, RunResult, RunSpec};
use stormcell_harness::{scenario, timeline_html};
use stormcell_model::config::Profile;
use stormcell_model::plant::Bug;

fn browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// The DOM after the page's script ran, with `query` appended to the file URL.
fn dump_dom(browser: &Path, page: &Path, query: &str) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("file://{}{query}", page.display()))
        .output()
        .expect("the browser runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(all, hidden, flagged)` op bars in a DOM dump.
fn bars(dom: &str) -> (usize, usize, usize) {
    let classes: Vec<&str> = dom
        .split("class=\"op ")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let has = |word: &str| {
        classes
            .iter()
            .filter(|c| c.split(' ').any(|w| w == word))
            .count()
    };
    (classes.len(), has("hidden"), has("violating"))
}

fn failing_run() -> RunResult {
    runner::run(&RunSpec {
        scenario: scenario::builtin_named("steady").expect("built-in"),
        seed: 0,
        profile: Profile::Stormcell,
        plant: Some(Bug::SkipReadSync),
        keep_trace: false,
    })
}

#[test]
fn the_timeline_loads_in_a_browser_with_lanes_bars_and_filters() {
    let Some(browser) = browser() else {
        eprintln!("SKIPPED: no chromium, chromium-browser or google-chrome on PATH");
        return;
    };
    let result = failing_run();
    assert!(!result.passed());
    let page = std::env::temp_dir().join(format!("stormcell-timeline-{}.html", std::process::id()));
    timeline_html::write(&page, &result).expect("writes");

    let dom = dump_dom(&browser, &page, "");
    let lanes = dom.matches("class=\"lane\"").count();
    assert_eq!(lanes, result.history.devices.len());
    let flagged: std::collections::BTreeSet<u64> = result
        .verdicts
        .iter()
        .flat_map(|v| &v.violations)
        .filter_map(|v| v.op)
        .collect();
    let (all, hidden, violating) = bars(&dom);
    assert_eq!(all, result.history.ops.len());
    assert_eq!(hidden, 0);
    assert_eq!(violating, flagged.len());

    // The filters run in the browser: only R1's operations by client1 stay visible.
    let dom = dump_dom(&browser, &page, "?repo=R1&client=client1");
    let (all, hidden, _) = bars(&dom);
    let expected = result
        .history
        .ops
        .iter()
        .filter(|o| o.repo == "R1" && o.client == "client1")
        .count();
    assert!(expected > 0 && expected < all);
    assert_eq!(all - hidden, expected);

    // A screenshot is taken (its size is the window's; its pixels are not compared).
    let shot = page.with_extension("png");
    let status = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,600",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}?zoom=4", page.display()))
        .output()
        .expect("the browser runs");
    assert!(status.status.success());
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!((width, height), (1200, 600));
    let _ = std::fs::remove_file(&page);
    let _ = std::fs::remove_file(&shot);
}
