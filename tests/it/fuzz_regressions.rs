//! Regressions found by (or written for) the fuzz targets in `fuzz/`: each input goes through
//! the same entry point as its target.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use std::time::{Duration, Instant};

use stepman::fuzzing;

/// `title: bomb`, then an anchor of `leaf` scalars, then `levels` sequences of `fanout` aliases
/// of the level below: a few KiB that expand to `leaf * fanout^levels` values, while staying
/// under `serde_yaml_ng`'s own alias-jump limit (100 jumps per event).
fn quadratic_bomb(leaf: usize, fanout: usize, levels: usize) -> String {
    let mut s = format!("title: bomb\nl0: &l0 [{}]\n", vec!["x"; leaf].join(","));
    for i in 1..=levels {
        let alias = format!("*l{}", i - 1);
        s.push_str(&format!(
            "l{i}: &l{i} [{}]\n",
            vec![alias.as_str(); fanout].join(",")
        ));
    }
    s
}

/// Found while writing the `step_yml` target: 2.6 KiB of step.yml expanded to 10^7 values
/// (1 GiB of memory, seconds of CPU) in `setup`, 32 step groups at a time.
#[test]
fn step_yml_alias_bomb_is_refused_fast() {
    let _alone = crate::support::alone();
    for (leaf, fanout, levels) in [(1000, 100, 2), (500, 40, 3), (2000, 1000, 1)] {
        let yml = quadratic_bomb(leaf, fanout, levels);
        assert!(yml.len() < 8 << 10, "{} bytes", yml.len());
        let t = Instant::now();
        let err = fuzzing::parse_step_yml(yml.as_bytes()).expect_err("an alias bomb is refused");
        assert!(err.contains("expands past"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let err = fuzzing::parse_steplib_yml(&yml).expect_err("also in steplib.yml");
        assert!(err.contains("expands past"), "{err}");
        let err = fuzzing::parse_step_info(&yml).expect_err("also in step-info.yml");
        assert!(err.contains("expands past"), "{err}");
    }
}

/// A long scalar aliased many times is bounded by bytes, not only by values.
#[test]
fn step_yml_aliased_long_scalar_is_refused() {
    let mut yml = format!("title: &t {}\nl: [", "y".repeat(64 << 10));
    yml.push_str(&vec!["*t"; 400].join(","));
    yml.push_str("]\n");
    let err = fuzzing::parse_step_yml(yml.as_bytes()).expect_err("26 MB of scalars is refused");
    assert!(err.contains("expands past"), "{err}");
}

/// Anchors, aliases and merge keys as real step.yml files use them still read as before (values
/// are text here: an input's unquoted number is read as its text, not as a YAML number, which
/// the steplib_yaml tests cover).
#[test]
fn step_yml_ordinary_aliases_still_parse() {
    let yml = "title: &t Anchors\nsummary: *t\nd: &d {is_required: true}\n\
               inputs:\n  - a: x\n    opts:\n      <<: *d\n      title: A\n  - b: y\n    opts: *d\n";
    let v = fuzzing::parse_step_yml(yml.as_bytes()).expect("parses");
    assert_eq!(v["summary"], "Anchors");
    assert_eq!(v["inputs"][1]["opts"]["is_required"], true);
    let direct: serde_json::Value = serde_yaml_ng::from_str(yml).expect("parses");
    assert_eq!(
        v, direct,
        "the bounded parse gives what serde_yaml_ng gives"
    );
    // Just under the limits is accepted (100 * 100 * 8 + 100 * 100 + … < 100 000 values).
    let yml = quadratic_bomb(8, 100, 2);
    let v = fuzzing::parse_step_yml(yml.as_bytes()).expect("under the limit");
    assert_eq!(v["l2"][99][99][7], "x");
}

/// A document larger than the YAML limit is refused before it is parsed.
#[test]
fn step_yml_oversized_is_refused() {
    let yml = format!("title: big\nx: \"{}\"\n", "a".repeat(5 << 20));
    let err = fuzzing::parse_step_yml(yml.as_bytes()).expect_err("too big");
    assert!(err.contains("bytes"), "{err}");
}

/// The expansion count runs only for documents with both an anchor (`&`) and an alias (`*`)
/// character; Markdown `*` alone (most real step.yml files) is parsed once, and an alias whose
/// anchor is missing is a plain parse error, not an expansion.
#[test]
fn yaml_with_stars_but_no_anchor_parses_once_and_aliases_need_anchors() {
    let _alone = crate::support::alone();
    let md = "title: Stars\ndescription: |\n  * a *bold* item\n  ** two\nsummary: \"*x\"\n";
    let v = fuzzing::parse_step_yml(md.as_bytes()).expect("Markdown stars are text");
    assert!(
        v["description"]
            .as_str()
            .is_some_and(|d| d.contains("*bold*")),
        "{v}"
    );
    let err = fuzzing::parse_step_yml(b"title: x\nlist: [*nothere, *nothere]\n")
        .expect_err("an alias without an anchor");
    assert!(err.contains("invalid YAML"), "{err}");
    // The bomb without its anchors' `&` is not a bomb: its `*`s are inside plain scalars.
    let defused = quadratic_bomb(1000, 100, 2).replace('&', "");
    let t = Instant::now();
    let v = fuzzing::parse_step_yml(defused.as_bytes()).expect("plain text");
    assert!(
        v["l2"].as_str().is_some_and(|s| s.starts_with("l2 [*l1")),
        "{}",
        v["l2"]
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A large step.yml without aliases can still hold many values (a flow sequence of `0,` is two
/// bytes a value, about a hundred in memory): past 256 KiB it is counted like an alias bomb, so
/// 2 MiB of `0,` (a million values) is refused instead of built; a real-sized one still parses.
#[test]
fn large_yaml_without_aliases_is_counted_too() {
    let many = format!("title: many\nl: [{}0]\n", "0,".repeat(1 << 20));
    let Err(err) = fuzzing::parse_step_yml(many.as_bytes()) else {
        panic!("a million values were built");
    };
    assert!(err.contains("100000 values"), "{err}");
    let fine = format!("title: fine\nl: [{}0]\n", "0,".repeat(50_000));
    assert!(fuzzing::parse_step_yml(fine.as_bytes()).is_ok());
}

/// Found by the step_yml fuzz target: a string field holding digits past JSON's number range
/// (`title: 204222222222222222222`) is its text, although the generic parse refuses the number.
#[test]
fn step_yml_huge_number_in_a_string_field_is_its_text() {
    let yml = "title: 204222222222222222222\ninputs:\n- version: 1.10\n";
    let v = fuzzing::parse_step_yml(yml.as_bytes()).expect("a number-like title is text");
    assert_eq!(v["title"], "204222222222222222222");
    assert_eq!(v["inputs"][0]["version"], "1.10");
}

/// Found by the step_yml fuzz target: a tagged scalar in a string field (`title: ! bit`) is its
/// text, although the generic parse cannot put a tagged value in JSON.
#[test]
fn step_yml_tagged_scalar_in_a_string_field_is_its_text() {
    let v = fuzzing::parse_step_yml(b"title: ! bit\n").expect("a tagged title is text");
    assert!(v["title"].is_string(), "{v}");
}

/// Found by the steplib_yml fuzz target: an unknown `steplib.yml` field holding a number past
/// `u64` (`extra: 188…8`, 66 digits) is kept in `collection.json` as a float, and must read back
/// as the same float (serde_json's default parser rounded its last digit differently).
#[test]
fn steplib_yml_huge_number_in_an_unknown_field_survives_collection_json() {
    let yml = format!(
        "format_version: 1\nsteplib_source: x\nextra: 1{}\nnested: {{a: [1, 2.{}7e300]}}\n",
        "8".repeat(65),
        "3".repeat(40)
    );
    let meta = fuzzing::parse_steplib_yml(&yml).expect("accepted");
    let json = serde_json::to_vec(&meta).expect("serializes");
    let back: stepman::steplib::SteplibMeta =
        serde_json::from_slice(&json).expect("collection.json reads back");
    assert_eq!(
        serde_json::to_value(&back).expect("serializes"),
        serde_json::to_value(&meta).expect("serializes"),
        "{}",
        String::from_utf8_lossy(&json)
    );
}

/// A fuzz input written as hex (split over lines).
fn hex_input(lines: &[&str]) -> Vec<u8> {
    let hex = lines.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// `archive` ingested by the one-pass zip reader and by the central-directory one, each into
/// its own store under `dir`: (one-pass, central directory).
fn ingest_both(
    archive: &[u8],
    dir: &std::path::Path,
) -> (
    stepman::Result<stepman::ObjectId>,
    stepman::Result<stepman::ObjectId>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let limits = stepman::Limits::default();
    let one = |format, sub| fuzzing::ingest_bytes(format, archive, &dir.join(sub), limits);
    (
        one(fuzzing::Format::ZipStream, "s"),
        one(fuzzing::Format::Zip, "w"),
    )
}

/// Found by the ingest_zip_stream fuzz target in CI: a central-directory record made by an
/// unknown system (253) with Unix mode bits in its external attributes. The `zip` crate (the
/// central-directory reader) takes those bits, so the one-pass reader must too, or the two make
/// different trees (an executable bit lost). The fuzz input's first byte picks the raw mode.
#[test]
fn zip_stream_reads_unix_modes_of_an_unknown_system_as_the_zip_crate_does() {
    let input = hex_input(&[
        "00504b03041400000008000000215000000000020000000000000005000000737465702f0300504b0304140000000800",
        "00002150b0958b1516000000140000000c000000737465702f737465702e73685356d44fcaccd34f4a2ccee04a4dcec8",
        "57c8c8e40200504b0304140000000800000021500af57cbe0b000000090000000d000000737465702f737465702e796d",
        "6c2bc92cc949b55228e10200504b0304140000000800000021504f70ab710a0000000800000009000000737465702f6c",
        "696e6b2b2e492dd0abcccd0100504b010214031400000008000000215000000000020000000000000005000000000000",
        "0000000000ed4100000000737465702f504b010214fdf2000000080000002150b0958b1516000000140000000c000000",
        "0000000000000000ed8125000000737465702f737465702e7368504b01021403140000000800000021500af57cbe0b00",
        "0000090000000d0000000000000000000000a48165000000737465702f737465702e796d6c504b010214031400000008",
        "00000021504f70ab710a00000008000000090000000000000000000000ffa19b000000737465702f6c696e6b504b0506",
        "0000000004000400df000000cc0000000000",
    ]);
    let archive = &input[1..];
    let t = tempfile::tempdir().unwrap();
    let (streamed, whole) = ingest_both(archive, t.path());
    assert_eq!(
        streamed.expect("the stream reader accepts it"),
        whole.expect("and the central-directory reader")
    );
}

/// Found by the ingest_zip_stream fuzz target in CI: an end record that declares an 8-byte
/// comment, with the archive ending right after the record. The central-directory reader refuses
/// it ("EOCD comment exceeds file boundary"); the one-pass reader skipped the comment with a copy
/// that stops quietly at the end of the stream, and so accepted a truncated archive. The fuzz
/// input's first byte picks the raw mode.
#[test]
fn zip_stream_refuses_an_end_record_whose_comment_is_cut_off() {
    let input = hex_input(&[
        "00504b03041400000008000000215000000000020000000000000005000000737465702f0300504b0304140000000800",
        "00002150b0958b1516000000140000000c000000737465702f737465702e73685356d44fcaccd34f4a2ccee04a4dcec8",
        "57c8c8e40200504b0304140000000800000021500af57cbe0b000000090000000d000000737465702f737465702e796d",
        "6c2bc92cc949b55228e10200504b0304140000000800000021504f70ab710a0000000800000009000000737465702f6c",
        "696e6b2b2e492dd0abcccd0100504b010214031400000008000000215000000000020000000000000005000000000000",
        "0000000000ed4100000000737465702f504b0102140314000000080000002150b0958b1516000000140000000c000000",
        "0000000000000000ed8125000000737465702f737465702e7368504b01021403140000000800000021500af57cbe0b00",
        "0000090000000d0000000000000000000000a48165000000737465702f737465702e796d6c504b010214031400000008",
        "00000021504f70ab710a00000008000000090000000000000000000000ffa19b000000737465702f6c696e6b504b0506",
        "0000000004000400df000000cc0000000800",
    ]);
    let archive = &input[1..];
    let t = tempfile::tempdir().unwrap();
    let (streamed, whole) = ingest_both(archive, &t.path().join("cut"));
    assert!(whole.is_err(), "the central-directory reader refuses it");
    let err = streamed.expect_err("the stream reader refuses it too");
    assert!(
        err.to_string()
            .contains("the stream ends inside the end record's comment"),
        "{err}"
    );
    // The same archive with its comment present is accepted by both, with one tree.
    let mut whole_comment = archive.to_vec();
    whole_comment.extend_from_slice(b"8 bytes!");
    let (streamed, whole) = ingest_both(&whole_comment, &t.path().join("whole"));
    assert_eq!(
        streamed.expect("the stream reader accepts the whole comment"),
        whole.expect("and the central-directory reader")
    );
}
