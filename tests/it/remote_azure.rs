//! The remote tier on Azure Blob Storage (`az://container/prefix`), against Azurite on loopback
//! (support/azurite.rs; skipped without it). First what the tier relies on from the server, as
//! for S3: create-only puts of which exactly one of many racing writers wins, and conditional
//! overwrites (`If-Match`); then the fleet's tests of remote.rs, run unchanged against it.

use std::sync::{Arc, Barrier};

use crate::remote;
use crate::support::{self, Tier};

/// `n` threads putting different bodies at one key at once, each with `conditions`: their
/// statuses, sorted.
fn racing_puts(
    az: &'static support::Azurite,
    container: &str,
    key: &str,
    n: usize,
    conditions: &[(&'static str, String)],
) -> Vec<u16> {
    let gate = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let gate = Arc::clone(&gate);
            let (container, key) = (container.to_string(), key.to_string());
            let conditions = conditions.to_vec();
            std::thread::spawn(move || {
                let conditions: Vec<(&str, &str)> =
                    conditions.iter().map(|(k, v)| (*k, v.as_str())).collect();
                gate.wait();
                az.put_if(
                    &container,
                    &key,
                    format!("writer {i}").as_bytes(),
                    &conditions,
                )
                .0
            })
        })
        .collect();
    let mut statuses: Vec<u16> = threads
        .into_iter()
        .map(|t| t.join().expect("a racing put panicked"))
        .collect();
    statuses.sort_unstable();
    statuses
}

#[test]
fn azure_server_honours_create_only_puts() {
    let test = "azure_server_honours_create_only_puts";
    let Some(az) = support::azurite(test) else {
        return;
    };
    let container = az.container("race");
    // Azure answers a create-only put over an existing blob 409 (BlobAlreadyExists), where S3
    // answers 412; `object_store` reads either as "already exists".
    for round in 0..10 {
        let key = format!("names/k{round}");
        let statuses = racing_puts(az, &container, &key, 16, &[("If-None-Match", "*".into())]);
        let won = statuses.iter().filter(|s| **s == 201).count();
        let lost = statuses.iter().filter(|s| matches!(s, 409 | 412)).count();
        assert_eq!(
            (won, lost),
            (1, 15),
            "round {round}: one create must win: {statuses:?}"
        );
        let body = az.get(&container, &key).expect("the winner's blob");
        assert!(body.starts_with(b"writer "), "{body:?}");
    }
    // Over an existing blob: refused, and the blob unchanged.
    az.put(&container, "k", b"first");
    let (status, _) = az.put_if(&container, "k", b"second", &[("If-None-Match", "*")]);
    assert!(matches!(status, 409 | 412), "{status}");
    assert_eq!(az.get(&container, "k").as_deref(), Some(&b"first"[..]));
    assert_eq!(
        az.keys(&container, "names/").len(),
        10,
        "the fixture lists what was put"
    );
    assert_eq!(az.get(&container, "no-such-key"), None);
}

#[test]
fn azure_server_honours_if_match_puts() {
    let test = "azure_server_honours_if_match_puts";
    let Some(az) = support::azurite(test) else {
        return;
    };
    let container = az.container("if-match");
    let (status, etag) = az.put_if(&container, "lease", b"holder a", &[]);
    assert_eq!(status, 201);
    let etag = etag.expect("a put answers its ETag");
    // Eight writers replacing the version they read: one wins.
    let statuses = racing_puts(az, &container, "lease", 8, &[("If-Match", etag.clone())]);
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        7,
        "{statuses:?}"
    );
    // The version read before is stale now.
    let (status, _) = az.put_if(&container, "lease", b"late", &[("If-Match", etag.as_str())]);
    assert_eq!(status, 412);
    assert!(
        az.get(&container, "lease")
            .is_some_and(|b| b.starts_with(b"writer ")),
        "the winner's body stays"
    );
}

/// Runs one of remote.rs's fleet tests against Azurite.
fn on_azure(test: &str, body: fn(&dyn Tier, &str)) {
    if let Some(az) = support::azurite(test) {
        body(az, test);
    }
}

#[test]
fn azure_ten_hosts_download_one_uncached_step_from_the_origin_once() {
    on_azure(
        "azure_ten_hosts_download_one_uncached_step_from_the_origin_once",
        remote::ten_hosts_once,
    );
}

#[test]
fn azure_a_corrupted_remote_tree_is_refused_the_origin_used_and_verify_reports_it() {
    on_azure(
        "azure_a_corrupted_remote_tree_is_refused_the_origin_used_and_verify_reports_it",
        remote::corrupted_tree,
    );
}

#[test]
fn azure_uploaders_killed_at_any_point_leave_the_remote_verifying_clean() {
    on_azure(
        "azure_uploaders_killed_at_any_point_leave_the_remote_verifying_clean",
        remote::uploaders_killed,
    );
}

#[test]
fn azure_remote_push_and_preload_push_warm_the_fleets_tier() {
    on_azure(
        "azure_remote_push_and_preload_push_warm_the_fleets_tier",
        remote::push_and_preload_push,
    );
}

#[test]
fn azure_verify_reports_every_name_of_a_shared_damaged_tree() {
    on_azure(
        "azure_verify_reports_every_name_of_a_shared_damaged_tree",
        remote::verify_every_name,
    );
}

#[test]
fn azure_a_tree_larger_than_one_part_is_shared_through_a_multipart_upload() {
    on_azure(
        "azure_a_tree_larger_than_one_part_is_shared_through_a_multipart_upload",
        remote::multipart,
    );
}

/// `remote status` names the emulator's endpoint the fixture points a host at, and the
/// settings present by name only: an account key in the environment is never shown.
#[test]
fn azure_remote_status_shows_the_endpoint_and_no_secret() {
    let test = "azure_remote_status_shows_the_endpoint_and_no_secret";
    let Some(az) = support::azurite(test) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let mut cmd = support::stepman(home.path(), ["remote", "status", "--json"]);
    az.env(&mut cmd);
    cmd.env("STEPMAN_REMOTE", "az://some-container/fleet")
        .env("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0LWtleS12YWx1ZQ==");
    let o = support::output(&mut cmd);
    let out = support::ok_stdout(&o, "remote status");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["remote"], "az://some-container/fleet", "{status}");
    assert_eq!(status["endpoint"], az.endpoint(), "{status}");
    let present: Vec<&str> = status["settings_present"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        present.contains(&"AZURE_STORAGE_USE_EMULATOR")
            && present.contains(&"AZURITE_BLOB_STORAGE_URL")
            && present.contains(&"AZURE_STORAGE_ACCOUNT_KEY"),
        "{status}"
    );
    let all = format!("{out}{}", support::stderr_of(&o));
    assert!(
        !all.contains("c2VjcmV0LWtleS12YWx1ZQ=="),
        "a secret shown: {all}"
    );
}

#[test]
fn azure_git_steps_are_shared_through_the_remote() {
    on_azure(
        "azure_git_steps_are_shared_through_the_remote",
        remote::git_steps_shared,
    );
}
