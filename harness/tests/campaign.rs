//! Campaign tooling end to end: reports for every built-in scenario read back, JUnit XML
//! that parses and names failures with their replay command, shards merged into the same
//! runs and trace hashes as one machine (through JOB_COMPLETION_INDEX, as a Kubernetes
//! Indexed Job runs them), declared coverage that fails a campaign, and time-boxed runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use quick_xml::events::Event;
use quick_xml::Reader;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use stormcell_harness::campaign;
use stormcell_harness::mutants;
use stormcell_harness::report::{self, Summary, SummaryFile};
use stormcell_harness::runner::RunSpec;
use stormcell_harness::scenario;
use stormcell_model::config::Profile;

const SIM: &str = env!("CARGO_BIN_EXE_stormcell-sim");

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("campaign-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

fn sim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(SIM);
    cmd.args(args).env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run stormcell-sim")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A JSON value that refuses an object holding one key twice (serde_json keeps the last
/// silently, which once hid the nemesis's `"action": "arm"` tag under a second `action`).
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                while a.next_element::<Strict>()?.is_some() {}
                Ok(Strict)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = a.next_key::<String>()? {
                    if keys.contains(&k) {
                        return Err(serde::de::Error::custom(format!("key {k:?} twice")));
                    }
                    a.next_value::<Strict>()?;
                    keys.push(k);
                }
                Ok(Strict)
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads back one run report: strict JSON, and the fields a developer needs.
fn read_back(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read a run report");
    if let Err(e) = serde_json::from_str::<Strict>(&text) {
        panic!("{}: {e}", path.display());
    }
    let v: serde_json::Value = serde_json::from_str(&text).expect("a run report is JSON");
    let replay = v["replay"].as_str().unwrap_or_default();
    assert!(
        replay.starts_with("stormcell-sim replay "),
        "{}",
        path.display()
    );
    let schedule = v["drawn"]["schedule"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for planned in &schedule {
        assert!(
            planned["action"]["action"].is_string(),
            "{}: a planned fault without its kind: {planned}",
            path.display()
        );
    }
    assert!(v["history"]["ops"].is_array(), "{}", path.display());
    v
}

fn spec(s: &scenario::Scenario, seed: u64, plant: Option<stormcell_model::plant::Bug>) -> RunSpec {
    RunSpec {
        scenario: s.clone(),
        seed,
        profile: Profile::Stormcell,
        plant,
        keep_trace: false,
    }
}

#[test]
fn reports_write_and_read_back_for_every_builtin_scenario_passing_and_planted() {
    let dir = scratch("reports");
    let scenarios = scenario::builtin();
    // Passing: one seed of every built-in scenario, a full report for each run (the drawn
    // fault schedule of every fault kind must serialize, armed failpoints included).
    let specs: Vec<RunSpec> = scenarios.iter().map(|s| spec(s, 0, None)).collect();
    let outcome = campaign::run_all(&specs, 2);
    let mut kinds: Vec<String> = Vec::new();
    for r in &outcome.results {
        let path = report::write_run_report(&dir, r).expect("write a run report");
        let v = read_back(&path);
        for planned in v["drawn"]["schedule"].as_array().into_iter().flatten() {
            if let Some(kind) = planned["action"]["action"].as_str() {
                kinds.push(kind.to_owned());
            }
        }
    }
    assert!(
        kinds.iter().any(|k| k == "arm"),
        "no armed failpoint drawn: {kinds:?}"
    );
    let summary = Summary::of(&scenarios, &outcome);
    let file = SummaryFile::of(&scenarios, &outcome, &summary, None);
    report::write_reports(&dir, &file, &outcome).expect("write the summary");
    let back = SummaryFile::read(&dir).expect("read summary.json back");
    assert_eq!(back.runs.len(), scenarios.len());
    assert_eq!(back.summary.rows.len(), scenarios.len());
    assert_eq!(back.coverage, file.coverage);

    // Failing: every planted bug on the scenario made to show it, a few seeds; each
    // failing run gets its report, written by the same path `run --report` takes.
    let planted = scratch("reports-planted");
    let specs: Vec<RunSpec> = mutants::MATRIX
        .iter()
        .flat_map(|m| {
            let s = scenario::builtin_named(m.scenario).expect("a built-in scenario");
            (0..3).map(move |seed| spec(&s, seed, Some(m.bug)))
        })
        .collect();
    let outcome = campaign::run_all(&specs, 2);
    let summary = Summary::of(&scenarios, &outcome);
    let file = SummaryFile::of(&scenarios, &outcome, &summary, None);
    report::write_reports(&planted, &file, &outcome).expect("write planted reports");
    let failing: Vec<_> = outcome.results.iter().filter(|r| !r.passed()).collect();
    assert!(
        failing.len() >= 5,
        "only {} planted runs failed",
        failing.len()
    );
    for r in &failing {
        let v = read_back(&planted.join(report::run_report_name(r)));
        assert_eq!(v["seed"].as_u64(), Some(r.seed));
        assert!(v["verdicts"].as_array().is_some_and(|a| !a.is_empty()));
    }
    let back = SummaryFile::read(&planted).expect("read planted summary back");
    assert_eq!(back.failed(), failing.len());
    assert!(back
        .runs
        .iter()
        .filter(|r| !r.passed)
        .all(|r| r.violation.is_some() && r.replay.contains("--plant")));
}

#[test]
fn replay_prints_the_drawn_options_of_an_armed_failpoint() {
    // db-link-drop arms a database link drop at a write point.
    let out = sim(
        &[
            "replay",
            "db-link-drop",
            "--seed",
            "2",
            "--plant",
            "ignore-writing-flag",
        ],
        &[],
    );
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("drawn options: "))
        .unwrap_or_else(|| panic!("no drawn options line:\n{text}"));
    let json = line.trim_start_matches("drawn options: ");
    serde_json::from_str::<Strict>(json).expect("drawn options are strict JSON");
    assert!(json.contains(r#""action":"arm""#), "{json}");
    assert!(
        json.contains(r#""effect":{"kind":"drop-db-link""#),
        "{json}"
    );
}

/// The parsed shape of a JUnit file: testcase (classname, name) → failure (message, body).
type Cases = BTreeMap<(String, String), Option<(String, String)>>;

fn parse_junit(path: &Path) -> (BTreeMap<String, String>, Cases) {
    let text = std::fs::read_to_string(path).expect("read JUnit XML");
    let mut reader = Reader::from_str(&text);
    let mut root = BTreeMap::new();
    let mut cases = Cases::new();
    let mut stack: Vec<String> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut failure_message: Option<String> = None;
    let attrs = |e: &quick_xml::events::BytesStart<'_>| -> BTreeMap<String, String> {
        e.attributes()
            .map(|a| {
                let a = a.expect("a well-formed attribute");
                (
                    String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                    a.unescape_value().expect("an attribute value").into_owned(),
                )
            })
            .collect()
    };
    let mut body = String::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                let a = attrs(&e);
                assert!(a.contains_key("time"));
                cases.insert((a["classname"].clone(), a["name"].clone()), None);
            }
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let a = attrs(&e);
                match name.as_str() {
                    "testsuites" => root = a,
                    "testcase" => {
                        assert!(a.contains_key("time"));
                        let key = (a["classname"].clone(), a["name"].clone());
                        cases.insert(key.clone(), None);
                        current = Some(key);
                    }
                    "failure" => {
                        failure_message = a.get("message").cloned();
                        body.clear();
                    }
                    _ => {}
                }
                stack.push(name);
            }
            // Escaped characters come as references between pieces of text.
            Event::Text(t) if stack.last().is_some_and(|n| n == "failure") => {
                body.push_str(&t.decode().expect("UTF-8 text"));
            }
            Event::GeneralRef(r) if stack.last().is_some_and(|n| n == "failure") => {
                if r.is_char_ref() {
                    body.extend(r.resolve_char_ref().expect("a character reference"));
                } else {
                    let name = r.decode().expect("UTF-8 reference");
                    body.push_str(
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .expect("a predefined entity"),
                    );
                }
            }
            Event::End(e) => {
                stack.pop();
                match e.name().as_ref() {
                    b"failure" => {
                        if let Some(key) = &current {
                            cases.insert(
                                key.clone(),
                                Some((failure_message.take().unwrap_or_default(), body.clone())),
                            );
                        }
                    }
                    b"testcase" => current = None,
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (root, cases)
}

#[test]
fn junit_names_each_scenario_and_seed_range_and_each_failure_with_its_replay() {
    let dir = scratch("junit");
    let xml = dir.join("out/junit.xml");
    let out = sim(
        &[
            "run",
            "write-interruption",
            "steady",
            "--seeds",
            "5",
            "--plant",
            "ignore-writing-flag",
            "--junit",
            xml.to_str().expect("a UTF-8 path"),
            "--jobs",
            "2",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let (root, cases) = parse_junit(&xml);
    let failing: Vec<_> = cases.iter().filter(|(_, f)| f.is_some()).collect();
    assert_eq!(root["tests"], cases.len().to_string());
    assert_eq!(root["failures"], failing.len().to_string());
    let wi = (
        "stormcell-sim.stormcell.ignore-writing-flag".to_owned(),
        "write-interruption seeds 0-4".to_owned(),
    );
    let Some(Some((message, body))) = cases.get(&wi) else {
        panic!("no failing write-interruption case: {cases:?}");
    };
    assert!(message.contains("of 5 runs failed"), "{message}");
    assert!(
        body.contains(
            "replay: stormcell-sim replay write-interruption --seed 4 --plant ignore-writing-flag"
        ),
        "{body}"
    );
    assert!(body.contains("durability"), "{body}");
    // The scenario declaring `reach` has its coverage case; a plant is not judged on it.
    let reach = cases
        .iter()
        .find(|((class, name), _)| {
            class == "stormcell-sim.coverage" && name.starts_with("write-interruption reaches")
        })
        .expect("a coverage case");
    assert!(reach.1.is_none());
}

/// The runs of a summary, without their wall time.
fn runs_of(file: &SummaryFile) -> Vec<(String, u64, String, bool, String, Vec<String>)> {
    file.runs
        .iter()
        .map(|r| {
            (
                r.scenario.clone(),
                r.seed,
                r.trace_hash.clone(),
                r.passed,
                r.replay.clone(),
                r.reached.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

#[test]
fn shards_from_job_completion_index_merge_into_the_same_campaign_as_one_machine() {
    let dir = scratch("shards");
    let base = [
        "run",
        "steady",
        "write-interruption",
        "db-link-drop",
        "--seeds",
        "2",
        "--jobs",
        "1",
    ];
    let whole = dir.join("whole");
    let mut args = base.to_vec();
    let whole_s = whole.to_str().expect("UTF-8").to_owned();
    let whole_junit = whole.join("junit.xml");
    let whole_junit_s = whole_junit.to_str().expect("UTF-8").to_owned();
    args.extend(["--report", &whole_s, "--junit", &whole_junit_s]);
    let one = sim(&args, &[]);
    assert_eq!(one.status.code(), Some(0), "{}", stdout(&one));

    // Three pods of an Indexed Job, each told only its completion index.
    let n = 3;
    let children: Vec<_> = (0..n)
        .map(|k| {
            let out = dir.join(format!("shard{k}"));
            let mut cmd = Command::new(SIM);
            cmd.args(base)
                .args(["--shard", "auto/3", "--report"])
                .arg(&out)
                .env("JOB_COMPLETION_INDEX", k.to_string());
            (out, cmd.spawn().expect("start a shard"))
        })
        .collect();
    let mut shard_dirs = Vec::new();
    let mut sizes = Vec::new();
    for (out, mut child) in children {
        assert!(child.wait().expect("a shard ends").success());
        let part = SummaryFile::read(&out).expect("a shard's summary");
        assert!(part.shard.is_some());
        sizes.push(part.runs.len());
        let mut names: Vec<&str> = part.runs.iter().map(|r| r.scenario.as_str()).collect();
        names.dedup();
        assert!(names.len() > 1, "a shard got one scenario only: {names:?}");
        shard_dirs.push(out);
    }
    assert_eq!(sizes.iter().sum::<usize>(), 6, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s == 2), "{sizes:?}");

    let merged = dir.join("merged");
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(shard_dirs.iter().map(|d| d.to_str().expect("UTF-8")));
    args.extend(["--out", merged.to_str().expect("UTF-8")]);
    let m = sim(&args, &[]);
    assert_eq!(m.status.code(), Some(0), "{}", stdout(&m));

    let a = SummaryFile::read(&whole).expect("whole summary");
    let b = SummaryFile::read(&merged).expect("merged summary");
    assert_eq!(runs_of(&a), runs_of(&b));
    assert_eq!(a.coverage, b.coverage);
    assert_eq!(a.reach, b.reach);
    assert_eq!(a.unreached, b.unreached);
    let rows = |f: &SummaryFile| -> Vec<(String, u64, u64)> {
        f.summary
            .rows
            .iter()
            .map(|r| (r.scenario.clone(), r.seeds, r.failed))
            .collect()
    };
    assert_eq!(rows(&a), rows(&b));
    let (_, ca) = parse_junit(&whole_junit);
    let (_, cb) = parse_junit(&merged.join("junit.xml"));
    assert_eq!(ca, cb);

    // Merging a shard twice is refused: shards must be disjoint.
    let twice = sim(
        &[
            "merge",
            shard_dirs[0].to_str().expect("UTF-8"),
            shard_dirs[0].to_str().expect("UTF-8"),
            "--out",
            dir.join("twice").to_str().expect("UTF-8"),
        ],
        &[],
    );
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("merge takes disjoint shards"));

    // An index outside the shard count is refused before anything runs.
    let bad = sim(
        &["run", "steady", "--seeds", "1", "--shard", "auto/3"],
        &[("JOB_COMPLETION_INDEX", "3")],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not below 3"));
}

#[test]
fn a_declared_state_never_reached_fails_the_campaign() {
    let dir = scratch("reach");
    let file = dir.join("quiet.toml");
    std::fs::write(
        &file,
        "name = \"quiet\"\nreach = [\"replica-promoted\"]\n[topology]\ndevices = 2\nrepositories = 1\n[workload]\nduration_s = 20\n",
    )
    .expect("write a scenario");
    let xml = dir.join("junit.xml");
    let out = sim(
        &[
            "run",
            "--scenario-file",
            file.to_str().expect("UTF-8"),
            "--seeds",
            "2",
            "--junit",
            xml.to_str().expect("UTF-8"),
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("2 runs, 0 failed"), "{text}");
    assert!(
        text.contains(
            "UNREACHED scenario quiet declares reach = [\"replica-promoted\"], but none of its 2 run(s) reached it"
        ),
        "{text}"
    );
    let (_, cases) = parse_junit(&xml);
    let failed: Vec<_> = cases
        .iter()
        .filter(|((c, _), f)| c == "stormcell-sim.coverage" && f.is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{cases:?}");

    // A misspelt state is bad input naming the file, line and field.
    std::fs::write(
        &file,
        "name = \"quiet\"\nreach = [\"replica-promotd\"]\n[topology]\ndevices = 2\nrepositories = 1\n",
    )
    .expect("write a scenario");
    let bad = sim(
        &["run", "--scenario-file", file.to_str().expect("UTF-8")],
        &[],
    );
    let err = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("quiet.toml:2"), "{err}");
    assert!(err.contains("replica-promotd"), "{err}");
}

#[test]
fn a_time_boxed_campaign_draws_consecutive_seeds_until_the_time_is_up() {
    let dir = scratch("for");
    let out = sim(
        &[
            "run",
            "steady",
            "partition",
            "--for",
            "3s",
            "--jobs",
            "1",
            "--report",
        ]
        .into_iter()
        .chain([dir.to_str().expect("UTF-8")])
        .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let file = SummaryFile::read(&dir).expect("summary");
    assert!(file.runs.len() >= 2, "{}", file.runs.len());
    // Seed-major: steady 0, partition 0, steady 1, ... with nothing skipped.
    let mut steady: Vec<u64> = file
        .runs
        .iter()
        .filter(|r| r.scenario == "steady")
        .map(|r| r.seed)
        .collect();
    steady.sort_unstable();
    assert_eq!(steady, (0..steady.len() as u64).collect::<Vec<_>>());
    let bad = sim(&["run", "steady", "--for", "soon"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    let both = sim(&["run", "steady", "--for", "1s", "--seeds", "3"], &[]);
    assert_eq!(both.status.code(), Some(2));
}
