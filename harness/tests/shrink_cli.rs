//! `stormcell-sim shrink` end to end: a planted bug's first catching seed (skip-read-sync
//! on `steady`, seed 0 in the kill matrix) shrinks to a file that `replay` reads and that
//! still fails the same checker; `replay --html` and the trace filters work on it.

use std::process::Command;

fn sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stormcell-sim"))
        .args(args)
        .output()
        .expect("stormcell-sim runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_shrunk_seed_replays_and_fails_the_same_checker() {
    let dir = std::env::temp_dir().join(format!("stormcell-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("shrunk.toml");
    let file_arg = file.to_string_lossy().into_owned();
    let (code, out) = sim(&[
        "shrink",
        "steady",
        "--seed",
        "0",
        "--plant",
        "skip-read-sync",
        "--jobs",
        "1",
        "--out",
        &file_arg,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("failure kept: checker 2 stale-read"), "{out}");
    let replay = format!("replay: stormcell-sim replay {file_arg} --seed 0 --plant skip-read-sync");
    assert!(out.contains(&replay), "{out}");
    let size = |prefix: &str| -> usize {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split(" faults, ").nth(1))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} line in {out}"))
    };
    assert!(size("after:  ") * 5 <= size("before: "), "{out}");

    let html = dir.join("t.html");
    let (code, out) = sim(&[
        "replay",
        &file_arg,
        "--seed",
        "0",
        "--plant",
        "skip-read-sync",
        "--kinds",
        "op",
        "--repo",
        "R1",
        "--html",
        &html.to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] 2 stale-read"), "{out}");
    let trace: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    assert!(!trace.is_empty(), "{out}");
    assert!(
        trace
            .iter()
            .all(|l| l.contains(" op ") && l.contains(" R1 ")),
        "{out}"
    );
    let page = std::fs::read_to_string(&html).expect("the page");
    assert!(page.contains("class=\"op ") && page.contains(" violating\""));
    let _ = std::fs::remove_dir_all(&dir);
}
