//! What a cache-hit lookup costs, counted rather than timed: the bytes `step-info` reads from the
//! store (strace), for a group of 170 real-sized versions against a group of one. A lookup reads
//! the group's index and the one version's record, never the whole group (`store-format.md` 4a).

use std::fs;
use std::path::Path;

use super::support::*;

/// A step.yml of about 5 KB (the real StepLib's average), different per version.
fn real_sized_step_yml(version: &str) -> String {
    let mut y = step_yml(&format!("Big {version}"), None);
    y.push_str("description: |\n");
    for i in 0..70 {
        y.push_str(&format!(
            "  Line {i} of the description of version {version}, as long as real ones are.\n"
        ));
    }
    y
}

/// Bytes read (`read`/`pread64`/`readv`/`preadv`) from files inside the store's objects by
/// `step-info` of `id@version`, and its output.
fn bytes_read_by_lookup(home: &Path, work: &Path, lib: &Path, id: &str, version: &str) -> u64 {
    let log = work.join(format!("{id}.strace"));
    let lib = lib.to_str().unwrap();
    let out = output(
        &mut Traced::new(home, &log)
            .opt(&["-y", "-s", "0"])
            .trace("read,pread64,readv,preadv")
            .stepman([
                "step-info",
                "--library",
                lib,
                "--id",
                id,
                "--version",
                version,
                "--format",
                "json",
            ]),
    );
    let stdout = ok_stdout(&out, "step-info");
    assert!(
        stdout.contains(&format!("\"version\":\"{version}\"")),
        "step-info answered for another version: {stdout}"
    );
    let objects = home.join("store-v1/objects");
    let objects = objects.to_str().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    let mut total = 0;
    for line in text.lines() {
        // `read(3</…/store-v1/objects/…/index/big.json>, ""..., 8192) = 4100`
        let Some((call, ret)) = line.rsplit_once(") = ") else {
            continue;
        };
        if !call.contains(&format!("<{objects}/")) {
            continue;
        }
        if let Ok(n) = ret.trim().parse::<u64>() {
            total += n;
        }
    }
    total
}

/// A StepLib of real-sized step.ymls (`steps`: each id with its versions) set up in a new
/// store: the work dir, the home and the StepLib's path.
fn set_up(
    steps: &[(&str, Vec<String>)],
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let (home, lib) = (work.path().join("home"), work.path().join("lib"));
    write_steplib_yml(&lib, &[("zip", "https://example.invalid/")]);
    for (id, versions) in steps {
        for v in versions {
            write_step(&lib, id, v, &real_sized_step_yml(v));
        }
    }
    run_ok(&mut stepman(&home, ["setup", "-c", lib.to_str().unwrap()]));
    (work, home, lib)
}

#[test]
fn a_cache_hit_lookup_reads_the_same_few_bytes_for_a_group_of_170_versions_as_for_one() {
    if !strace_usable("lookup_cost") {
        return;
    }
    let big: Vec<String> = (0..170).map(|i| format!("1.{i}.0")).collect();
    let (work, home, lib) = set_up(&[("big", big), ("small", vec!["1.0.0".into()])]);

    let small = bytes_read_by_lookup(&home, work.path(), &lib, "small", "1.0.0");
    let big_mid = bytes_read_by_lookup(&home, work.path(), &lib, "big", "1.85.0");
    let big_latest = bytes_read_by_lookup(&home, work.path(), &lib, "big", "1.169.0");
    let group = fs::metadata(
        fs::read_dir(home.join("store-v1/objects"))
            .unwrap()
            .flat_map(|shard| fs::read_dir(shard.unwrap().path()).unwrap())
            .map(|o| o.unwrap().path().join("groups/big.json"))
            .find(|p| p.exists())
            .expect("the collection object holds groups/big.json"),
    )
    .unwrap()
    .len();
    // The index grows by a few dozen bytes per version; the group by a whole step per version.
    let per_version = 48;
    for (what, n) in [("1.85.0", big_mid), ("1.169.0", big_latest)] {
        assert!(
            n <= small + 170 * per_version,
            "a lookup of big@{what} read {n} bytes from the store, one of small@1.0.0 {small}: \
             it reads more than the index and one record (the group is {group} bytes)"
        );
        assert!(
            n < group / 4,
            "a lookup of big@{what} read {n} bytes, the group file is {group}"
        );
    }
}

/// Raw `step-info` prints the step.yml's own text: it reads the group's index and that text,
/// and not the version's parsed record in `groups/<id>.json` (which only JSON output and
/// activation need).
#[test]
fn a_raw_lookup_reads_the_step_yml_text_and_not_the_parsed_record() {
    if !strace_usable("lookup_cost_raw") {
        return;
    }
    let (work, home, lib) = set_up(&[("big", vec!["1.0.0".into(), "1.1.0".into()])]);
    let libs = lib.to_str().unwrap();
    let log = work.path().join("raw.strace");
    let out = output(
        &mut Traced::new(&home, &log)
            .opt(&["-y", "-s", "0"])
            .trace("openat,read,pread64,readv,preadv")
            .stepman([
                "step-info",
                "--library",
                libs,
                "--id",
                "big",
                "--version",
                "1.1.0",
            ]),
    );
    let stdout = ok_stdout(&out, "step-info");
    assert!(stdout.contains("Version: 1.1.0"), "{stdout}");
    assert!(
        stdout.contains("Line 69 of the description of version 1.1.0"),
        "the step.yml's text is not printed: {stdout}"
    );
    let text = fs::read_to_string(&log).unwrap();
    let record: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/groups/big.json"))
        .collect();
    assert!(
        record.is_empty(),
        "raw step-info read the parsed record: {record:?}"
    );
    assert!(
        text.lines().any(|l| l.contains("/index/big.json")),
        "the trace shows no read of the index (is it tracing the lookup?):\n{text}"
    );
}

/// Every version of `lib` (set up in `home`): `step-info --format json` (which prints the step
/// from its stored text, `Read::Text`) prints the bytes the library gives for the parsed
/// definition (`Read::Definition`, `in_old_shape`, serde_json). The count of versions compared.
fn json_matches_the_parsed_definition(home: &Path, lib: &Path) -> usize {
    use stepman::activate::{self, Lookup, Read, Refresh, StepInfo};
    let uri = lib.to_str().unwrap();
    let store = stepman::Store::open(home).unwrap();
    let c = stepman::steplib::Collection::parse(uri).unwrap();
    let net = stepman::fetch::NetConfig::default();
    let lookup = Lookup {
        read: Read::Definition,
        refresh: Refresh::Never,
        ..Lookup::default()
    };
    let mut n = 0;
    for group in fs::read_dir(lib.join("steps")).unwrap() {
        let group = group.unwrap().path();
        let id = group.file_name().unwrap().to_str().unwrap().to_string();
        for v in fs::read_dir(&group).unwrap() {
            let v = v.unwrap().path();
            if !v.join("step.yml").is_file() {
                continue;
            }
            let version = v.file_name().unwrap().to_str().unwrap().to_string();
            let r = activate::resolve(&store, &c, &id, &version, lookup, &net).unwrap();
            let info = StepInfo::of(&store, r).unwrap();
            let expected = serde_json::to_string(&info.in_old_shape()).unwrap();
            let out = output(&mut stepman(
                home,
                [
                    "step-info",
                    "--library",
                    uri,
                    "--id",
                    &id,
                    "--version",
                    &version,
                    "--format",
                    "json",
                ],
            ));
            let printed = ok_stdout(&out, "step-info");
            assert_eq!(printed.trim_end(), expected, "{id}@{version}");
            n += 1;
        }
    }
    n
}

/// JSON `step-info` shapes the stored text of the step (the defaults the old tool fills in, the
/// group's asset URLs) without parsing it into a tree, and prints the same bytes as the parsed
/// way: on definitions that leave out, null or empty what the defaults cover, and on the real
/// StepLib slice (skipped without `../shared/steplib-sample`).
#[test]
fn json_step_info_from_the_stored_text_is_what_the_parsed_definition_prints() {
    let t = TestDir::new();
    let lib = t.path().join("lib");
    write_steplib_yml(&lib, &[("zip", "https://example.invalid/archives/")]);
    let odd = [
        ("1.0.0", "title: Plain\n".to_string()),
        ("1.1.0", real_sized_step_yml("1.1.0")),
        (
            "1.2.0",
            "title: Odd\nwebsite: ~\nsummary: \"é \\\" \\\\ \\u0001 \\t tab\"\ntimeout: 30\nis_skippable: true\n\
             run_if: '{{.IsCI}}'\ninputs:\n  - plain: x\n  - empty:\n    opts: ~\n  - odd: 1\n    \
             opts:\n      title: ~\n      value_options: []\n      meta: {}\n      is_required: true\n  \
             - kept: y\n    opts:\n      value_options: [a, b]\n      meta: {k: v}\n      unknown: [1, 2.5]\n  \
             - a scalar\noutputs:\n  - OUT:\n    opts:\n      title: Out\nunknown_field: {nested: [true, null]}\n"
                .to_string(),
        ),
        ("1.3.0", "title: No lists\ninputs: ~\noutputs: {}\n".to_string()),
    ];
    for (v, yml) in &odd {
        let d = lib.join("steps/odd").join(v);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("step.yml"), yml).unwrap();
    }
    let assets = lib.join("steps/odd/assets");
    fs::create_dir_all(&assets).unwrap();
    fs::write(assets.join("icon.svg"), "<svg/>").unwrap();
    let home = t.path().join("home");
    run_ok(&mut stepman(&home, ["setup", "-c", lib.to_str().unwrap()]));
    assert_eq!(json_matches_the_parsed_definition(&home, &lib), odd.len());

    let Some(sample) =
        steplib_sample("json_step_info_from_the_stored_text_is_what_the_parsed_definition_prints")
    else {
        return;
    };
    let home = t.path().join("sample-home");
    run_ok(&mut stepman(
        &home,
        ["setup", "-c", sample.to_str().unwrap()],
    ));
    let n = json_matches_the_parsed_definition(&home, &sample);
    assert!(n >= 200, "only {n} versions in the sample");
}

/// A version's span of the group file that is not JSON (a store tampered with) is a format
/// error of JSON `step-info` naming the group file and the version, never another step or half
/// a document; the group's other versions still answer.
#[test]
fn json_step_info_of_a_span_that_is_not_json_fails_naming_the_file() {
    let (_work, home, lib) = set_up(&[("a", vec!["1.0.0".into(), "1.1.0".into()])]);
    let lib = lib.to_str().unwrap();
    let object = fs::read_dir(home.join("store-v1/objects"))
        .unwrap()
        .flat_map(|shard| fs::read_dir(shard.unwrap().path()).unwrap())
        .map(|o| o.unwrap().path())
        .find(|o| o.join("groups/a.json").is_file())
        .expect("the collection object");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(object.join("index/a.json")).unwrap()).unwrap();
    let span = &index["versions"][0];
    assert_eq!(span[0], "1.0.0");
    let (at, len) = (span[1].as_u64().unwrap(), span[2].as_u64().unwrap());
    let group = object.join("groups/a.json");
    let mut bytes = fs::read(&group).unwrap();
    let last = (at + len - 1) as usize;
    assert_eq!(bytes[last], b'}');
    bytes[last] = b'x';
    fs::set_permissions(&group, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&group, &bytes).unwrap();

    let info = |v: &str| {
        output(&mut stepman(
            &home,
            [
                "step-info",
                "--library",
                lib,
                "--id",
                "a",
                "--version",
                v,
                "--format",
                "json",
            ],
        ))
    };
    let bad = info("1.0.0");
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert!(bad.stdout.is_empty(), "{}", describe(&bad));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("groups/a.json") && err.contains("a@1.0.0") && err.contains("not valid JSON"),
        "{err}"
    );
    let good = info("1.1.0");
    assert!(ok_stdout(&good, "step-info").contains("\"version\":\"1.1.0\""));
}
