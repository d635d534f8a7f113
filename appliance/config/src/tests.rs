use super::*;

#[test]
fn the_example_is_the_default_configuration() {
    let parsed = Config::from_toml(EXAMPLE, "config/mldefender.toml").expect("the example is valid");
    assert_eq!(parsed, Config::default());
}

#[test]
fn the_example_sets_every_key_and_comments_each_one() {
    let schema = toml::Table::try_from(raw::RawConfig::default()).expect("serialize");
    let example: toml::Table = EXAMPLE.parse().expect("parse example");
    for (section, keys) in &schema {
        let keys = keys.as_table().expect("sections are tables");
        let example_section = example.get(section).and_then(|value| value.as_table());
        let example_section = example_section.unwrap_or_else(|| panic!("example lacks [{section}]"));
        for key in keys.keys() {
            assert!(example_section.contains_key(key), "example lacks {section}.{key}");
        }
    }
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let previous = lines[index - 1].trim();
        assert!(previous.starts_with('#'), "no comment above `{line}`");
    }
}

#[test]
fn an_empty_file_is_the_default() {
    assert_eq!(Config::from_toml("", "empty").expect("valid"), Config::default());
}

#[test]
fn every_error_is_reported_at_once_with_its_path() {
    let text = "[flow]\nidle-timout-secs = 5\nmax-flows = \"many\"\n[output]\nformat = 3\n[nope]\n";
    let errors = Config::from_toml(text, "bad.toml").expect_err("invalid");
    let paths: Vec<&str> = errors.errors.iter().map(|error| error.path.as_str()).collect();
    assert_eq!(paths, vec!["flow.idle-timout-secs", "flow.max-flows", "nope", "output.format"]);
    assert!(errors.errors[0].message.contains("did you mean `idle-timeout-secs`"), "{}", errors.errors[0]);
    assert!(errors.to_string().starts_with("bad.toml: 4 errors"));
}

#[test]
fn range_and_consistency_errors_are_all_reported() {
    let text = "[flow]\nidle-timeout-secs = 600\nactive-timeout-secs = 60\nmax-flows = 0\n\
                [windows]\nlengths-secs = [10, 10, 0]\n[output]\nformat = \"xml\"\n";
    let errors = Config::from_toml(text, "bad.toml").expect_err("invalid");
    let paths: Vec<&str> = errors.errors.iter().map(|error| error.path.as_str()).collect();
    assert_eq!(paths, vec!["flow.active-timeout-secs", "flow.max-flows", "windows.lengths-secs[1]", "windows.lengths-secs[2]", "output.format"]);
}

#[test]
fn syntax_errors_name_the_line() {
    let errors = Config::from_toml("[flow]\nmax-flows = = 3\n", "broken.toml").expect_err("invalid");
    assert!(errors.errors[0].message.contains("line 2"), "{}", errors.errors[0]);
}

#[test]
fn the_flow_table_gets_the_configured_values() {
    let config = Config::from_toml("[flow]\nidle-timeout-secs = 30\n[windows]\nlengths-secs = []\n", "x").expect("valid");
    let table = config.flow_table();
    assert_eq!(table.idle_timeout_ns, 30_000_000_000);
    assert!(table.windows.windows_ns.is_empty());
}

/// Fixtures: every file in tests/config/accept must pass; every file in
/// tests/config/reject must fail with each error named on its `# expect:` lines.
#[test]
fn accept_and_reject_fixtures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("accept")).expect("accept dir") {
        let path = entry.expect("entry").path();
        match Config::from_file(&path) {
            Err(errors) => panic!("{} should be accepted:\n{errors}", path.display()),
            Ok(config) => {
                if let Err(errors) = config.check_environment(&path.display().to_string()) {
                    panic!("{} should be accepted (run scripts/setup to create the task users):\n{errors}", path.display());
                }
            }
        }
        checked += 1;
    }
    for entry in std::fs::read_dir(root.join("reject")).expect("reject dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let expected: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("# expect: ")).collect();
        assert!(!expected.is_empty(), "{} has no `# expect:` line", path.display());
        let errors = match Config::from_file(&path) {
            Err(errors) => errors.to_string(),
            Ok(config) => config.check_environment(&path.display().to_string()).expect_err("reject fixture must fail").to_string(),
        };
        for needle in expected {
            assert!(errors.contains(needle), "{}: expected `{needle}` in:\n{errors}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 6, "fixtures were found");
}

#[test]
fn a_bad_explicit_node_id_is_an_error_but_the_default_always_works() {
    let errors = Config::from_toml("[log]\nnode = \"bad node\"\n", "x").expect_err("invalid node");
    assert_eq!(errors.errors[0].path, "log.node");
    let config = Config::from_toml("", "x").expect("the default node is always valid");
    assert!(!config.log.node.is_empty() && !config.log.node.contains('('));
}

#[test]
fn the_similarity_index_settings_are_checked_and_listed_together() {
    let text = "[ingest]\nindex-factory = \"IDMap,Flat\"\nindex-search-parameters = \"nprobe=8, efSearch\"\nembedder = \"../x\"\nsave-interval-secs = 0\n\
                [detect]\nnearest-past-events = 21\n";
    let errors = Config::from_toml(text, "bad.toml").expect_err("invalid");
    let paths: Vec<&str> = errors.errors.iter().map(|error| error.path.as_str()).collect();
    for path in ["ingest.index-factory", "ingest.index-search-parameters", "ingest.embedder", "ingest.save-interval-secs", "detect.nearest-past-events"] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    let config = Config::from_toml("[ingest]\nindex-factory = \"IVF1024,Flat\"\nindex-search-parameters = \"nprobe=8\"\n", "ok.toml").expect("valid");
    let index = config.ingest.index.expect("on by default");
    assert_eq!((index.factory.as_str(), index.search_parameters), ("IVF1024,Flat", vec![("nprobe".to_string(), 8.0)]));
    assert!(index.dir.ends_with("ingest/index"));
    let off = Config::from_toml("[ingest]\nindex = false\n", "off.toml").expect("valid");
    assert!(off.ingest.index.is_none());
}

#[test]
fn root_aliases_are_refused_by_name_or_number() {
    for alias in ["root", "0", "00", "+0", "000"] {
        assert!(ids::names_root(alias), "{alias}");
    }
    for other in ["", "mld-log", "10", "rooted", "-0x"] {
        assert!(!ids::names_root(other), "{other}");
    }
    let errors = Config::from_toml("[tasks.detect]\nuser = \"00\"\ngroup = \"0\"\n", "x").expect_err("root");
    let paths: Vec<&str> = errors.errors.iter().map(|error| error.path.as_str()).collect();
    assert_eq!(paths, vec!["tasks.detect.user", "tasks.detect.group"]);
}

/// Numbers with no passwd entry stand for themselves, so these need no users on the machine.
#[test]
fn the_environment_check_refuses_uid_0_and_shared_users_and_groups() {
    let mut config = Config::default();
    let set = |config: &mut Config, kind: TaskKind, user: &str, group: Option<&str>| {
        let task = config.tasks.iter_mut().find(|task| task.kind == kind).expect("task");
        task.user = user.to_string();
        task.group = group.map(str::to_string);
    };
    set(&mut config, TaskKind::Capture, "60001", None);
    set(&mut config, TaskKind::Detect, "60002", None);
    set(&mut config, TaskKind::Log, "60003", None);
    set(&mut config, TaskKind::Ingest, "60004", None);
    config.check_environment("x").expect("four users, four groups");

    // Whatever the spelling reaches uid 0 (a name the file check cannot know is found here).
    set(&mut config, TaskKind::Detect, "0", None);
    let errors = config.check_environment("x").expect_err("uid 0").to_string();
    assert!(errors.contains("`tasks.detect.user`: must not be root: user `0` is uid 0"), "{errors}");
    assert!(errors.contains("`tasks.detect.group`: must not be root's group"), "{errors}");

    set(&mut config, TaskKind::Detect, "60002", None);
    set(&mut config, TaskKind::Ingest, "60002", None);
    set(&mut config, TaskKind::Log, "60003", Some("60001"));
    let errors = config.check_environment("x").expect_err("shared");
    let listed: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].starts_with("`tasks.log.group`: group `60001` (gid 60001) is also the group of task capture"), "{listed:?}");
    assert!(listed[1].starts_with("`tasks.ingest.user`: user `60002` (uid 60002) is also the user of task detect"), "{listed:?}");

    // A disabled task shares nothing.
    config.tasks.iter_mut().filter(|task| task.kind == TaskKind::Ingest || task.kind == TaskKind::Log).for_each(|task| task.enabled = false);
    config.check_environment("x").expect("the others are distinct");
}
