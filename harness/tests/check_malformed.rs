//! `stormcell-sim check` on malformed histories: it names the file, the JSON path of the
//! bad field (which field of which operation) and what is wrong there, exits 2 (bad input,
//! nothing checked), and never panics.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A successful final probe (a push of nothing, or a read) of `repo1` on `device`.
fn probe(id: u64, device: &str, kind: &str) -> serde_json::Value {
    let (kind, refs) = match kind {
        "push" => (
            serde_json::json!({"type": "push", "updates": []}),
            serde_json::Value::Null,
        ),
        _ => (
            serde_json::json!({"type": "read"}),
            serde_json::json!({"refs/heads/main": "c1"}),
        ),
    };
    serde_json::json!({"id": id, "client": "probe", "device": device, "repo": "repo1",
        "phase": "final", "invoked_ms": 100 + id, "completed_ms": 101 + id, "kind": kind,
        "outcome": {"type": "ok", "refs": refs, "possibly_stale": false}})
}

/// A well-formed history: a push, a read that sees it, and final probes on both devices.
fn sample() -> serde_json::Value {
    serde_json::json!({
        "scenario": "s", "seed": 1, "profile": "stormcell",
        "devices": ["R1", "R2"],
        "repositories": [{"name": "repo1", "initial_refs": {"refs/heads/main": "c0"},
                          "has_rows": true}],
        "ops": [
            {"id": 1, "client": "c", "device": "R1", "repo": "repo1", "phase": "workload",
             "invoked_ms": 1, "completed_ms": 2,
             "kind": {"type": "push", "updates": [
                 {"name": "refs/heads/main", "old": "c0", "new": "c1"}]},
             "outcome": {"type": "ok", "refs": null, "possibly_stale": false}},
            {"id": 2, "client": "c", "device": "R2", "repo": "repo1", "phase": "workload",
             "invoked_ms": 3, "completed_ms": 4, "kind": {"type": "read"},
             "outcome": {"type": "ok", "refs": {"refs/heads/main": "c1"},
                         "possibly_stale": false}},
            probe(3, "R1", "push"), probe(4, "R1", "read"),
            probe(5, "R2", "push"), probe(6, "R2", "read")
        ],
        "faults": [],
        "expect": "converged",
        "final_state": {"active_devices": ["R1", "R2"], "refs": {
            "R1": {"repo1": {"refs/heads/main": "c1"}},
            "R2": {"repo1": {"refs/heads/main": "c1"}}}}
    })
}

/// A directory of its own for this test's files.
fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("check-malformed-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    d
}

/// Runs `stormcell-sim check` on `bytes`: the exit code and stderr.
fn check(dir: &Path, file: &str, bytes: &[u8]) -> (Option<i32>, String, String) {
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let out = Command::new(env!("CARGO_BIN_EXE_stormcell-sim"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run stormcell-sim: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a clean rejection: exit 2, no panic, the file named, `needles` in the message.
fn rejected(dir: &Path, file: &str, bytes: &[u8], needles: &[&str]) {
    let (code, stdout, stderr) = check(dir, file, bytes);
    assert_eq!(code, Some(2), "{file}: stdout {stdout}\nstderr {stderr}");
    assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    assert!(
        stderr.contains(file),
        "{file}: the file is not named: {stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{file}: {needle:?} missing from {stderr}"
        );
    }
}

#[test]
fn the_sample_is_a_history_and_passes() {
    let d = dir("sample");
    let (code, stdout, stderr) = check(&d, "ok.json", sample().to_string().as_bytes());
    assert_eq!(code, Some(0), "stdout {stdout}\nstderr {stderr}");
    assert!(stdout.contains("PASS"), "{stdout}");
}

#[test]
fn a_field_of_the_wrong_type_is_named_by_its_path() {
    let d = dir("wrong-type");
    let mut v = sample();
    v["ops"][1]["invoked_ms"] = serde_json::json!("soon");
    rejected(
        &d,
        "wrong-type.json",
        v.to_string().as_bytes(),
        &["field ops[1].invoked_ms", "invalid type"],
    );
    let mut v = sample();
    v["ops"][0]["kind"]["updates"][0]["new"] = serde_json::json!(7);
    rejected(
        &d,
        "wrong-type-update.json",
        v.to_string().as_bytes(),
        &["field ops[0].kind.updates[0].new", "invalid type"],
    );
    let mut v = sample();
    v["ops"][1]["outcome"]["possibly_stale"] = serde_json::json!("yes");
    rejected(
        &d,
        "wrong-type-stale.json",
        v.to_string().as_bytes(),
        &["field ops[1].outcome.possibly_stale", "invalid type"],
    );
}

#[test]
fn a_missing_field_is_named_with_its_operation() {
    let d = dir("missing");
    let mut v = sample();
    if let Some(op) = v["ops"][1].as_object_mut() {
        op.remove("completed_ms");
    }
    rejected(
        &d,
        "missing-op-field.json",
        v.to_string().as_bytes(),
        &["field ops[1]", "completed_ms"],
    );
    let mut v = sample();
    v["ops"][0]["outcome"] = serde_json::json!({"type": "refused", "message": "m"});
    rejected(
        &d,
        "missing-error.json",
        v.to_string().as_bytes(),
        &["field ops[0].outcome", "`error`"],
    );
    let mut v = sample();
    if let Some(h) = v.as_object_mut() {
        h.remove("final_state");
    }
    rejected(
        &d,
        "missing-final-state.json",
        v.to_string().as_bytes(),
        &["final_state"],
    );
}

#[test]
fn an_unknown_outcome_or_error_name_is_named_by_its_path() {
    let d = dir("unknown-name");
    let mut v = sample();
    v["ops"][1]["outcome"] = serde_json::json!({"type": "maybe"});
    rejected(
        &d,
        "unknown-outcome.json",
        v.to_string().as_bytes(),
        &["field ops[1].outcome.type", "maybe"],
    );
    let mut v = sample();
    v["ops"][0]["outcome"] =
        serde_json::json!({"type": "refused", "error": "too-busy", "message": "m"});
    rejected(
        &d,
        "unknown-error.json",
        v.to_string().as_bytes(),
        &["field ops[0].outcome.error", "too-busy"],
    );
}

#[test]
fn truncated_empty_and_non_json_files_are_refused_cleanly() {
    let d = dir("not-json");
    let text = sample().to_string();
    // Cut in the middle of the second operation.
    let cut = text.find("\"id\":2").map_or(text.len() / 2, |i| i + 12);
    rejected(
        &d,
        "truncated.json",
        &text.as_bytes()[..cut],
        &["field ops[1]", "EOF"],
    );
    rejected(&d, "empty.json", b"", &["EOF"]);
    rejected(&d, "not-json.json", b"hello, world\n", &["expected value"]);
    rejected(&d, "array.json", b"[1, 2, 3]", &["invalid type"]);
    rejected(
        &d,
        "trailing.json",
        format!("{text} {{}}").as_bytes(),
        &["trailing"],
    );
    rejected(
        &d,
        "binary.json",
        &[0xff, 0xfe, 0x00, 0x7b],
        &["binary.json"],
    );
    // A file that is not there at all is bad input too.
    let (code, _, stderr) = {
        let out = Command::new(env!("CARGO_BIN_EXE_stormcell-sim"))
            .arg("check")
            .arg(d.join("absent.json"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run stormcell-sim: {e}"));
        (
            out.status.code(),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("absent.json"), "{stderr}");
}

#[test]
fn odd_but_well_formed_histories_are_judged_without_panicking() {
    // Times at the edge of u64, backwards intervals, unknown hosts and devices, a read
    // that claims refs of an unknown repository: judged (pass or fail), never a panic.
    let d = dir("odd");
    let mut v = sample();
    v["ops"][0]["invoked_ms"] = serde_json::json!(u64::MAX);
    v["ops"][0]["completed_ms"] = serde_json::json!(u64::MAX);
    v["ops"][1]["invoked_ms"] = serde_json::json!(u64::MAX - 1);
    v["ops"][1]["completed_ms"] = serde_json::json!(0);
    v["ops"][1]["repo"] = serde_json::json!("elsewhere");
    v["faults"] = serde_json::json!([
        {"at_ms": u64::MAX, "kind": "strike", "hosts": ["R1"], "detail": ""},
        {"at_ms": 5, "kind": "repair", "hosts": ["R1"], "detail": ""},
        {"at_ms": 6, "kind": "partition", "hosts": ["R1", "db", "R2"], "detail": ""},
        {"at_ms": u64::MAX, "kind": "hold", "hosts": ["R2", "db"], "detail": ""},
        {"at_ms": 7, "kind": "promote", "hosts": [], "detail": ""}
    ]);
    v["database"] = serde_json::json!({"primary": "db", "replicas": ["db-r1"],
        "health_flips": [{"at_ms": u64::MAX, "device": "R9", "host": "db", "healthy": false}]});
    v["operator"] = serde_json::json!([{"started_ms": u64::MAX, "completed_ms": 0,
        "command": "", "ok": true, "result": "",
        "demoted": [{"repo": "repo1", "device": "R1"}],
        "plan": [{"repo": "repo1", "device": "R1", "name": "refs/heads/main",
                  "commit": "c1", "salvageable": true}]}]);
    let (code, stdout, stderr) = check(&d, "odd.json", v.to_string().as_bytes());
    assert!(
        matches!(code, Some(0 | 1)),
        "stdout {stdout}\nstderr {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("operations checked"), "{stdout}");
}
