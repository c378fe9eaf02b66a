use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

/// The smallest valid file; tests append to it.
const MINIMAL: &str = "name = \"t\"\n[topology]\ndevices = 3\nrepositories = 2\n";

fn error_of(text: &str) -> ScenarioError {
    parse("t.toml", text).expect_err("the scenario should be rejected")
}

/// Asserts the error's line and field, and that its message mentions `words`.
fn assert_error(text: &str, line: usize, field: &str, words: &str) {
    let e = error_of(text);
    assert_eq!(e.file, "t.toml", "{e}");
    assert_eq!(e.line, Some(line), "{e}");
    assert_eq!(e.field.as_deref(), Some(field), "{e}");
    assert!(e.message.contains(words), "{e}");
}

#[test]
fn every_builtin_is_valid_and_named_after_its_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut stems: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    let names: Vec<&str> = BUILTINS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names, stems,
        "BUILTINS must list every file in scenarios/, sorted"
    );

    for (name, text) in BUILTINS {
        let scenario = parse(&builtin_source(name), text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.name, *name);
        assert_eq!(scenario.source, format!("scenarios/{name}.toml"));
        assert!(
            !scenario.description.is_empty(),
            "{name} has no description"
        );
        // The embedded text is the file on disk (include_str! cannot go stale, but a wrong
        // path in BUILTINS could pair a name with another file).
        let on_disk = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
        assert_eq!(*text, on_disk);
        assert_eq!(
            load_file(&dir.join(format!("{name}.toml"))).unwrap().name,
            *name
        );
    }
    let all = builtin();
    assert_eq!(
        all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        names
    );
}

#[test]
fn builtins_say_what_the_issue_asks() {
    let steady = builtin_named("steady").unwrap();
    assert!(steady.faults.kinds().is_empty());
    assert_eq!(steady.topology.devices, Range::exactly(3));
    assert_eq!(steady.topology.repositories, Range::exactly(2));

    let write = builtin_named("write-interruption").unwrap();
    assert_eq!(write.topology.repositories, Range::exactly(1));
    assert_eq!(write.expect.stormcell, FinalExpectation::Converged);
    assert_eq!(write.expect.phabricator, FinalExpectation::WriteFrozen);

    let ambiguous = builtin_named("ambiguous-leader").unwrap();
    assert_eq!(ambiguous.topology.initial_rows, InitialRows::None);
    assert_eq!(ambiguous.expect.stormcell, FinalExpectation::Ambiguous);
    assert_eq!(ambiguous.expect.phabricator, FinalExpectation::Ambiguous);

    let drop = builtin_named("db-link-drop").unwrap();
    assert_eq!(drop.workload.duration_s, 120);
    assert_eq!(drop.workload.settle_s, 60);
    assert_eq!(
        drop.faults.db_link_drops.unwrap().duration_s,
        Range::new(10, 400)
    );

    let swarm = builtin_named("swarm").unwrap();
    assert_eq!(swarm.faults.mix, FaultMix::Seeded);
    // Every device, link, disk and database fault kind, and the operator who demotes a
    // device that alone held the newest push when it lost its disk.
    assert_eq!(
        swarm.faults.kinds(),
        vec![
            "strikes",
            "write_strikes",
            "partitions",
            "db_link_drops",
            "slow_links",
            "db_primary_strikes",
            "db_primary_cuts",
            "db_replica_lag",
            "db_replica_strikes",
            "db_flaps",
            "db_primary_hangs",
            "disk_losses",
            "fsync_failures",
        ]
    );
    assert_eq!(
        swarm.operator.steps[0].when,
        Some(Condition::NotIntact(ANY_REPOSITORY.to_owned()))
    );
}

#[test]
fn defaults_fill_what_a_file_leaves_out() {
    let s = parse("t.toml", MINIMAL).unwrap();
    assert_eq!(s.description, "");
    assert_eq!(s.topology.initial_rows, InitialRows::AllLeaders);
    assert_eq!(s.topology.link_latency_ms, Range::new(1, 5));
    assert_eq!(s.workload, Workload::default());
    assert_eq!(s.faults, Faults::default());
    assert_eq!(s.expect, Expect::default());
    let text = format!("{MINIMAL}[faults.write_strikes]\ncount = 1\npoints = [\"after-ack\"]\ndown_s = 3\n[faults.partitions]\ncount = 1\nduration_s = 2\n[faults.db_link_drops]\ncount = 1\nduration_s = 2\n");
    let s = parse("t.toml", &text).unwrap();
    assert!(s.faults.write_strikes.unwrap().restart);
    assert!(s.faults.partitions.unwrap().include_database);
    assert!(s.faults.db_link_drops.unwrap().during_push);
}

#[test]
fn range_is_a_number_or_a_table() {
    let s = parse(
        "t.toml",
        "name = \"t\"\n[topology]\ndevices = { min = 2, max = 4 }\nrepositories = 5\n",
    )
    .unwrap();
    assert_eq!(s.topology.devices, Range::new(2, 4));
    assert_eq!(s.topology.repositories, Range::exactly(5));
    assert_error(
        "name = \"t\"\n[topology]\ndevices = { min = 2 }\nrepositories = 5\n",
        3,
        "topology.devices.max",
        "missing field `max`",
    );
    assert_error(
        "name = \"t\"\n[topology]\ndevices = { min = 2, max = 3, most = 4 }\nrepositories = 5\n",
        3,
        "topology.devices",
        "unknown field `most`",
    );
    assert_error(
        "name = \"t\"\n[topology]\ndevices = -1\nrepositories = 5\n",
        3,
        "topology.devices",
        "integer `-1`",
    );
    assert_error(
        "name = \"t\"\n[topology]\ndevices = { min = 1, max = \"2\" }\nrepositories = 5\n",
        3,
        "topology.devices.max",
        "invalid type",
    );
}

#[test]
fn draw_stays_within_bounds_and_is_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let range = Range::new(3u32, 6);
    let draws: Vec<u32> = (0..1000).map(|_| range.draw(&mut rng)).collect();
    assert!(draws.iter().all(|v| (3..=6).contains(v)));
    for v in 3..=6 {
        assert!(draws.contains(&v), "{v} never drawn");
    }
    let wide = Range::new(0u64, u64::MAX);
    let _ = wide.draw(&mut rng);
    assert_eq!(Range::exactly(9u64).draw(&mut rng), 9);

    let mut again = ChaCha8Rng::seed_from_u64(7);
    let replay: Vec<u32> = (0..1000).map(|_| range.draw(&mut again)).collect();
    assert_eq!(draws, replay);
}

#[test]
fn seeded_mix_keeps_some_kinds_and_all_mix_keeps_every_kind() {
    let swarm = builtin_named("swarm").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let faults = swarm.faults.apply_mix(&mut rng);
        assert_eq!(faults.mix, FaultMix::All);
        seen.insert(faults.kinds());
    }
    // 2^5 subsets; 64 runs see many of them, including none and all.
    assert!(seen.len() > 8, "{seen:?}");
    let partition = builtin_named("partition").unwrap();
    assert_eq!(partition.faults.apply_mix(&mut rng), partition.faults);
}

#[test]
fn unknown_key_is_named_with_its_line() {
    assert_error(
        &format!("{MINIMAL}[faults.strikes]\ncount = 1\ndown_s = 2\nstrength = 3\n"),
        8,
        "faults.strikes.strength",
        "unknown field `strength`",
    );
    assert_error(
        "name = \"t\"\ncolour = \"red\"\n[topology]\ndevices = 3\nrepositories = 2\n",
        2,
        "colour",
        "unknown field `colour`",
    );
}

#[test]
fn wrong_type_is_named_with_its_line() {
    assert_error(
        &format!("{MINIMAL}[workload]\nclients = \"three\"\n"),
        6,
        "workload.clients",
        "invalid type",
    );
    assert_error(
        &format!(
            "{MINIMAL}[faults.write_strikes]\ncount = 1\npoints = \"after-ack\"\ndown_s = 2\n"
        ),
        7,
        "faults.write_strikes.points",
        "invalid type",
    );
}

#[test]
fn bad_enum_value_is_named_with_its_line() {
    assert_error(
        &format!("{MINIMAL}[faults.write_strikes]\ncount = 1\npoints = [\"after-ack\", \"mid-air\"]\ndown_s = 2\n"),
        7,
        "faults.write_strikes.points[1]",
        "unknown variant `mid-air`",
    );
    assert_error(
        &format!("{MINIMAL}[expect]\nphabricator = \"melted\"\n"),
        6,
        "expect.phabricator",
        "unknown variant `melted`",
    );
}

#[test]
fn missing_field_is_named() {
    let e = error_of(&format!("{MINIMAL}[faults.strikes]\ncount = 1\n"));
    assert_eq!(e.field.as_deref(), Some("faults.strikes.down_s"), "{e}");
    assert_eq!(e.line, Some(5), "the line of the table header: {e}");
    assert!(e.message.contains("missing field"), "{e}");
    // Missing at the top level: the top-level table has no line of its own.
    let e = error_of("# only a name\nname = \"t\"\n");
    assert_eq!(
        (e.line, e.field.as_deref()),
        (None, Some("topology")),
        "{e}"
    );
    let e = error_of("[topology]\ndevices = 3\nrepositories = 2\n");
    assert_eq!((e.line, e.field.as_deref()), (None, Some("name")), "{e}");
}

#[test]
fn min_above_max_is_named_with_its_line() {
    let text = format!("{MINIMAL}\n[faults.strikes]\ncount = {{ min = 5, max = 2 }}\ndown_s = 2\n");
    let e = error_of(&text);
    assert_eq!(
        e.to_string(),
        "t.toml:7: field `faults.strikes.count`: min (5) is greater than max (2)"
    );
}

#[test]
fn out_of_bounds_values_are_named_with_their_line() {
    assert_error(
        "name = \"t\"\n[topology]\ndevices = 12\nrepositories = 2\n",
        3,
        "topology.devices",
        "outside the allowed 1..=9",
    );
    assert_error(
        "name = \"t\"\n[topology]\ndevices = 3\nrepositories = { min = 0, max = 2 }\n",
        4,
        "topology.repositories",
        "outside the allowed 1..=16",
    );
    assert_error(
        &format!("{MINIMAL}[workload]\nclients = 33\n"),
        6,
        "workload.clients",
        "outside the allowed 1..=32",
    );
    assert_error(
        &format!("{MINIMAL}[workload]\nbranches = 2\nrefs_per_push = {{ min = 1, max = 3 }}\n"),
        7,
        "workload.refs_per_push",
        "greater than workload.branches (2)",
    );
    assert_error(
        &format!("{MINIMAL}[workload]\nrefs_per_push = {{ min = 0, max = 1 }}\n"),
        6,
        "workload.refs_per_push",
        "at least 1",
    );
    assert_error(
        &format!("{MINIMAL}[workload]\npush_weight = 0\nread_weight = 0\n"),
        6,
        "workload.push_weight",
        "both 0",
    );
}

#[test]
fn empty_or_repeated_points_are_rejected() {
    assert_error(
        &format!("{MINIMAL}[faults.write_strikes]\ncount = 1\npoints = []\ndown_s = 2\n"),
        7,
        "faults.write_strikes.points",
        "at least one point",
    );
    assert_error(
        &format!("{MINIMAL}[faults.write_strikes]\ncount = 1\npoints = [\"after-ack\", \"after-ack\"]\ndown_s = 2\n"),
        7,
        "faults.write_strikes.points",
        "`after-ack` is listed twice",
    );
}

#[test]
fn fault_window_must_end_before_the_workload() {
    assert_error(
        &format!("{MINIMAL}[workload]\nduration_s = 30\n[faults]\nwindow_s = {{ min = 5, max = 30 }}\n[faults.slow_links]\ncount = 1\nhold_ms = 10\n"),
        8,
        "faults.window_s",
        "must be less than workload.duration_s (30)",
    );
    // The default window (5..=40) against a short workload: no line of its own, so the
    // error points at the nearest table the file spells out.
    let e = error_of(&format!(
        "{MINIMAL}[workload]\nduration_s = 30\n[faults.slow_links]\ncount = 1\nhold_ms = 10\n"
    ));
    assert_eq!(e.field.as_deref(), Some("faults.window_s"), "{e}");
    assert_eq!(e.line, Some(7), "{e}");
    // Without faults the window is never used.
    parse("t.toml", &format!("{MINIMAL}[workload]\nduration_s = 10\n")).unwrap();
}

#[test]
fn names_must_be_lowercase_words() {
    assert_error(
        "name = \"Big One\"\n[topology]\ndevices = 3\nrepositories = 2\n",
        1,
        "name",
        "lowercase",
    );
    assert_error(
        "name = \"\"\n[topology]\ndevices = 3\nrepositories = 2\n",
        1,
        "name",
        "empty",
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let e = error_of(&format!("{MINIMAL}[faults\n"));
    assert_eq!(e.line, Some(5), "{e}");
    assert_eq!(e.field, None);
    assert!(!e.message.contains('\n'), "{e}");
    let e = error_of("name = \"t\"\nname = \"u\"\n");
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn unknown_builtin_lists_the_known_ones() {
    let e = builtin_named("thunder").unwrap_err();
    let shown = e.to_string();
    assert!(shown.starts_with("thunder: "), "{shown}");
    for (name, _) in BUILTINS {
        assert!(shown.contains(name), "{shown}");
    }
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let e = load_file(Path::new("/nonexistent/x.toml")).unwrap_err();
    assert_eq!(e.file, "/nonexistent/x.toml");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/x.toml: cannot read the file"),
        "{e}"
    );
}

#[test]
fn error_without_line_omits_it() {
    let e = ScenarioError {
        file: "x.toml".into(),
        line: None,
        field: Some("faults.window_s".into()),
        message: "too late".into(),
    };
    assert_eq!(e.to_string(), "x.toml: field `faults.window_s`: too late");
}

#[test]
fn a_scenario_serializes_to_toml_that_parses_back() {
    for scenario in builtin() {
        let mut table = toml::Table::try_from(&scenario).unwrap();
        table.remove("source");
        let text = toml::to_string(&table).unwrap();
        let again = parse(&scenario.source, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, scenario);
    }
}

#[test]
fn summary_is_one_line() {
    for scenario in builtin() {
        let summary = scenario.summary();
        assert!(summary.starts_with(&scenario.name));
        assert!(!summary.contains('\n'));
    }
    assert!(builtin_named("swarm")
        .unwrap()
        .summary()
        .contains("seeded mix of strikes"));
}

#[test]
fn operator_steps_are_validated_with_their_field() {
    let text = format!(
        "{MINIMAL}\n[[operator.steps]]\nat_s = 5\naction = {{ thaw = {{ demote = \"repo009\", repos = [\"R1\"] }} }}\n"
    );
    let e = error_of(&text);
    assert_eq!(e.field.as_deref(), Some("operator.steps[0].action"), "{e}");
    assert!(e.message.contains("no device `repo009`"), "{e}");
    assert!(e.line.is_some(), "{e}");

    let text = format!("{MINIMAL}\n[[operator.steps]]\naction = \"confirm\"\n");
    let e = error_of(&text);
    assert_eq!(e.field.as_deref(), Some("operator.steps[0].action"), "{e}");
    assert!(e.message.contains("needs a `lock` step"), "{e}");

    let text = format!("{MINIMAL}\n[[operator.steps]]\naction = {{ dance = {{}} }}\n");
    let e = error_of(&text);
    assert!(e.message.contains("dance"), "{e}");
}

#[test]
fn any_repository_is_a_not_intact_condition_only() {
    let step = |when: &str| {
        format!(
            "{MINIMAL}\n[[operator.steps]]\nwhen = {{ {when} = \"@any\" }}\naction = {{ thaw = {{ demote = \"@not-intact\", repos = [\"@not-intact\"] }} }}\n"
        )
    };
    let s = parse("t.toml", &step("not_intact")).expect("`@any` names every repository");
    assert_eq!(
        s.operator.steps[0].when,
        Some(Condition::NotIntact(ANY_REPOSITORY.to_owned()))
    );
    let e = error_of(&step("frozen"));
    assert_eq!(e.field.as_deref(), Some("operator.steps[0].when"), "{e}");
    assert!(e.message.contains("no repository `@any`"), "{e}");
}

#[test]
fn an_explicit_schedule_parses_and_round_trips() {
    let text = format!(
        "{MINIMAL}[[schedule]]\nat_ms = 5200\naction = \"strike\"\ndevice = \"repo002\"\ndown_ms = 3000\n\
         [[schedule]]\nat_ms = 7000\naction = \"arm-strike\"\npoints = [\"after-ack\"]\n\
         [[schedule]]\nat_ms = 9000\naction = \"partition\"\na = [\"repo001\"]\nb = [\"db\"]\nduration_ms = 1500\nlabel = \"cut\"\n"
    );
    let s = parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let schedule = s.schedule.clone().unwrap();
    assert_eq!(schedule.len(), 3);
    assert_eq!(
        schedule[0].fault,
        Fault::Strike {
            device: "repo002".into(),
            down_ms: 3000
        }
    );
    assert_eq!(
        schedule[1].fault,
        Fault::ArmStrike {
            points: vec![WritePoint::AfterAck],
            down_ms: None
        }
    );
    assert_eq!(schedule[2].label.as_deref(), Some("cut"));
    // Written out and read back: the same scenario.
    let again = parse("t.toml", &to_toml(&s).unwrap()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, s);
    // Made-up labels name the action and its hosts.
    assert_eq!(planned(&schedule)[0].label, "strike repo002 for 3.0s");
}

#[test]
fn a_bad_schedule_entry_names_its_field() {
    let entry = |body: &str| format!("{MINIMAL}[[schedule]]\nat_ms = 1000\n{body}\n");
    assert_error(
        &entry("action = \"strike\"\ndevice = \"repo004\"\ndown_ms = 1"),
        5,
        "schedule[0]",
        "`repo004` is not a host",
    );
    assert_error(
        &entry("action = \"promote\""),
        5,
        "schedule[0]",
        "needs at least one replica",
    );
    let e = error_of(&entry(
        "action = \"strike\"\ndevice = \"repo001\"\ndown_ms = 1\nspeed = 3",
    ));
    assert!(e.message.contains("unknown field `speed`"), "{e}");
    let e = error_of(&entry("action = \"meteor\""));
    assert!(e.message.contains("meteor"), "{e}");
}

#[test]
fn replicas_behind_needs_a_replica_and_a_timed_strike() {
    let strike = "[faults.db_primary_strikes]\ncount = 1\ndown_s = 1\nrestart = false\n";
    assert_error(
        &format!("{MINIMAL}{strike}replicas_behind_s = 5\n"),
        9,
        "faults.db_primary_strikes.replicas_behind_s",
        "replica",
    );
    assert_error(
        &format!(
            "{MINIMAL}[database]\nreplicas = 1\n{strike}replicas_behind_s = 5\n\
             at_write_point = \"after-ack\"\n"
        ),
        11,
        "faults.db_primary_strikes.replicas_behind_s",
        "write point",
    );
}

#[test]
fn cold_restart_stops_the_replica_first_and_restarts_every_device_after_the_promotion() {
    let s = builtin_named("db-promote-cold-restart").unwrap();
    let devices: Vec<String> = ["repo001", "repo002", "repo003"].map(String::from).to_vec();
    let replicas = vec!["db-r1".to_owned()];
    for seed in 0..20 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let plan = crate::nemesis::plan(&s.faults, &devices, &replicas, &mut rng);
        let at = |what: &dyn Fn(&crate::nemesis::Action) -> bool| {
            plan.iter()
                .filter(|p| what(&p.action))
                .map(|p| p.at_ms)
                .collect::<Vec<_>>()
        };
        use crate::nemesis::Action;
        let lost = at(&|a| matches!(a, Action::Lose { .. }));
        let promoted = at(&|a| matches!(a, Action::Promote));
        let replica = at(&|a| matches!(a, Action::Strike { device, .. } if device == "db-r1"));
        assert_eq!((lost.len(), promoted.len(), replica.len()), (1, 1, 1));
        assert!(replica[0] + 3000 <= lost[0], "seed {seed}: {plan:?}");
        let mut restarted = std::collections::BTreeSet::new();
        for p in &plan {
            if let Action::Strike { device, down_ms } = &p.action {
                if device.starts_with("repo") {
                    assert!(p.at_ms + down_ms > promoted[0], "seed {seed}: {p:?}");
                    restarted.insert(device.clone());
                }
            }
        }
        assert_eq!(restarted.len(), devices.len(), "seed {seed}: {plan:?}");
    }
}

#[test]
fn every_builtin_states_its_availability_expectations() {
    for s in builtin() {
        assert!(
            s.expect.availability.recovery_s <= crate::history::DEFAULT_RECOVERY_S
                && s.expect.availability.recovery_s > 0,
            "{}: recovery_s {}",
            s.name,
            s.expect.availability.recovery_s
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    for s in builtin() {
        let path = dir.join(format!("{}.toml", s.name));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[expect.availability]"),
            "{} states no availability expectations",
            path.display()
        );
    }
}
