//! Credentials for private StepLibs and storage: used, never written to disk, never printed.
//! A canary secret goes through the URL's userinfo and through a netrc; afterwards no file in the
//! store and no output of any command contains it.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Output;

const CANARY: &str = "CANARY-7f3a9c1e";

/// A server answering only requests that carry `Basic base64(bot:CANARY)` (401 otherwise).
fn serve() -> support::Server {
    let server = support::Server::start();
    server.require_header(
        "Authorization",
        &format!("Basic {}", b64(&format!("bot:{CANARY}"))),
    );
    server
}

/// Whether a request carried the credential.
fn authorized(r: &support::Request) -> bool {
    r.header("authorization").is_some_and(|v| {
        v.eq_ignore_ascii_case(&format!("Basic {}", b64(&format!("bot:{CANARY}"))))
    })
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let d = s.as_bytes();
    let mut out = String::new();
    for c in d.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn zip_of(name: &str, body: &[u8]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file(name, zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(body).unwrap();
    z.finish().unwrap().into_inner()
}

fn run(home: &Path, netrc: &Path, args: &[&str]) -> Output {
    support::output(
        support::stepman(home, args)
            .env("NETRC", netrc)
            .env("RUST_LOG", "debug"),
    )
}

fn assert_no_canary_in_tree(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if m.is_file() {
            let data = fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&data).contains(CANARY),
                "secret written to {}",
                p.display()
            );
        }
        assert!(
            !p.to_string_lossy().contains(CANARY),
            "secret in a file name: {}",
            p.display()
        );
    }
}

#[test]
fn secrets_from_userinfo_and_netrc_are_used_but_never_stored_or_printed() {
    let t = tempfile::tempdir().unwrap();
    let spec = r#"{"format_version":"1.0.0","generated_at_timestamp":0,"steplib_source":"private",
        "download_locations":[{"type":"zip","src":"http://127.0.0.1:PORT/archives/"}],
        "steps":{"hello":{"info":{},"latest_version_number":"1.0.0",
        "versions":{"1.0.0":{"title":"Hello","source":{"git":"https://example.invalid/x.git","commit":"abc"}}}}}}"#;
    let zip = zip_of("step.sh", b"echo private\n");
    let server = serve();
    let port = server.url().rsplit(':').next().unwrap().to_string();
    server.script(
        "/spec.json",
        vec![support::Answer::ok(spec.replace("PORT", &port).as_bytes())],
    );
    server.script(
        "/archives/hello/1.0.0/step.zip",
        vec![support::Answer::ok(&zip)],
    );
    let spec = format!("http://bot:{CANARY}@127.0.0.1:{port}/spec.json");
    // The step archive's URL has no userinfo: the netrc entry for 127.0.0.1 authorizes it.
    let netrc = t.path().join("netrc");
    fs::write(
        &netrc,
        format!("machine 127.0.0.1 login bot password {CANARY}\n"),
    )
    .unwrap();
    let home = t.path().join("home");

    let mut outputs = Vec::new();
    let o = run(&home, &netrc, &["setup", "-c", &spec]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    outputs.push(o);
    let o = run(&home, &netrc, &["collections", "--format", "json"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("http://127.0.0.1:{port}/spec.json"))
    );
    outputs.push(o);
    outputs.push(run(
        &home,
        &netrc,
        &[
            "step-info",
            "--library",
            &spec,
            "--id",
            "hello",
            "--format",
            "json",
        ],
    ));
    let dest = t.path().join("step");
    let o = run(
        &home,
        &netrc,
        &[
            "activate",
            "-c",
            &spec,
            "-i",
            "hello",
            "-p",
            dest.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(dest.join("step.sh")).unwrap(), b"echo private\n");
    outputs.push(o);
    // A failing call must not print the secret either.
    outputs.push(run(
        &home,
        &netrc,
        &["step-info", "--library", &spec, "--id", "nope"],
    ));
    let bad = format!("http://bot:{CANARY}@127.0.0.1:9/spec.json");
    let o = run(&home, &netrc, &["setup", "-c", &bad]);
    assert!(!o.status.success());
    outputs.push(o);

    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(CANARY),
                "secret printed:\n{}",
                String::from_utf8_lossy(stream)
            );
        }
    }
    let log: Vec<(String, bool)> = server
        .requests()
        .iter()
        .map(|r| (r.path.clone(), authorized(r)))
        .collect();
    assert!(
        log.iter().any(|(p, auth)| p == "/spec.json" && *auth),
        "userinfo credential not sent: {log:?}"
    );
    assert!(
        log.iter().any(|(p, auth)| p.ends_with("step.zip") && *auth),
        "netrc credential not sent: {log:?}"
    );
    assert_no_canary_in_tree(&home);
}

#[test]
fn a_remote_steplib_may_not_name_local_files() {
    let t = tempfile::tempdir().unwrap();
    let local = t.path().join("archives/hello/1.0.0");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("step.zip"), zip_of("step.sh", b"echo local\n")).unwrap();
    for src in [
        format!("file://{}/archives/", t.path().display()),
        "archives/".to_string(),
    ] {
        let spec = format!(
            r#"{{"format_version":"1.0.0","steplib_source":"remote","download_locations":[{{"type":"zip","src":"{src}"}}],
            "steps":{{"hello":{{"info":{{}},"latest_version_number":"1.0.0","versions":{{"1.0.0":{{"title":"Hello"}}}}}}}}}}"#
        );
        let server = serve();
        server.script("/spec.json", vec![support::Answer::ok(spec.as_bytes())]);
        let port = server.url().rsplit(':').next().unwrap().to_string();
        let url = format!("http://bot:{CANARY}@127.0.0.1:{port}/spec.json");
        let home = t.path().join(format!("home-{}", src.len()));
        let dest = t.path().join(format!("dest-{}", src.len()));
        let o = support::output(
            support::stepman(&home, ["activate", "-c", &url, "-i", "hello", "-p"])
                .arg(&dest)
                .current_dir(t.path()),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{src}: {err}");
        assert!(err.contains("may not name local files"), "{src}: {err}");
        assert!(!dest.exists());
    }
}

/// A private repository as a `git::` step, its credential in the URL's userinfo, over smart
/// and dumb HTTP: the ls-remote and the clone carry it, and it is in no name, file or output.
#[test]
fn a_git_ref_credential_is_used_but_never_stored_or_printed() {
    use crate::git_transports::{Transport, commit_all};
    let t = support::TestDir::new();
    let root = t.path().join("served");
    fs::create_dir_all(&root).unwrap();
    let server = serve();
    server.mount_git_backend("/smart", &root);
    server.mount_static("/dumb", &root);
    let wt = t.path().join("wt");
    fs::create_dir_all(&wt).unwrap();
    fs::write(wt.join("step.sh"), "echo private\n").unwrap();
    commit_all(&wt, "private");
    support::git(
        &root,
        &["clone", "-q", "--bare", wt.to_str().unwrap(), "r.git"],
    );
    support::git(&root.join("r.git"), &["update-server-info"]);
    let netrc = t.path().join("no-netrc");
    for (tr, prefix) in [(Transport::Smart, "smart"), (Transport::Dumb, "dumb")] {
        let home = t.path().join(format!("home-{tr:?}"));
        let dest = t.path().join(format!("dest-{tr:?}"));
        let url = format!("http://bot:{CANARY}@{}/{prefix}/r.git", server.authority());
        let o = run(
            &home,
            &netrc,
            &[
                "activate",
                "-i",
                &format!("git::{url}@main"),
                "-p",
                dest.to_str().unwrap(),
            ],
        );
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "{tr:?}: {err}");
        assert!(
            !out.contains(CANARY) && !err.contains(CANARY),
            "{tr:?}: printed: {err}"
        );
        assert_eq!(
            fs::read_to_string(dest.join("step.sh")).unwrap(),
            "echo private\n"
        );
        assert_no_canary_in_tree(&home);
        assert_no_canary_in_tree(&dest);
    }
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| r.path.contains("/r.git/"))
            .all(authorized),
        "a request to the repository went without the credential"
    );
}

/// A netrc entry for an IPv6 host names it as curl matches it, without brackets: `machine ::1`
/// authorizes `http://[::1]:<port>/…`; `machine [::1]` is no entry for it (curl's reading too).
#[test]
fn a_netrc_entry_for_an_ipv6_host_is_used() {
    let Some(server) = support::Server::start_ipv6() else {
        eprintln!("skipping a_netrc_entry_for_an_ipv6_host_is_used: cannot bind [::1]");
        return;
    };
    server.require_header(
        "Authorization",
        &format!("Basic {}", b64(&format!("bot:{CANARY}"))),
    );
    let spec = r#"{"format_version":"1.0.0","generated_at_timestamp":0,"steplib_source":"v6",
        "download_locations":[],"steps":{"hello":{"info":{},"latest_version_number":"1.0.0",
        "versions":{"1.0.0":{"title":"Hello","source":{"git":"https://example.invalid/x.git","commit":"abc"}}}}}}"#;
    server.script("/spec.json", vec![support::Answer::ok(spec.as_bytes())]);
    let url = format!("{}/spec.json", server.url());
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let t = tempfile::tempdir().unwrap();
    for (machine, used) in [("::1", true), ("[::1]", false)] {
        let netrc = t.path().join("netrc");
        fs::write(
            &netrc,
            format!("machine {machine} login bot password {CANARY}\n"),
        )
        .unwrap();
        let home = t.path().join(format!("home-{used}"));
        let o = run(&home, &netrc, &["setup", "-c", &url]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), used, "machine {machine}: {err}");
        if !used {
            assert!(err.contains("HTTP 401"), "machine {machine}: {err}");
        }
        assert!(!err.contains(CANARY), "secret printed: {err}");
    }
    let log: Vec<bool> = server.requests().iter().map(authorized).collect();
    assert_eq!(
        log.first(),
        Some(&true),
        "netrc credential not sent: {log:?}"
    );
    assert!(!log.last().copied().unwrap_or(true), "{log:?}");
}

/// A netrc as curl writes and reads them: comments, a macro whose body names the host, a quoted
/// password with an escaped quote and a space. A netrc with a quote left open is not used, and
/// the warning names the file and the line (never the secret).
#[test]
fn a_netrc_with_quotes_comments_and_macros_is_read_as_curl_reads_it() {
    let secret = format!("{CANARY} \"x");
    let server = support::Server::start();
    server.require_header(
        "Authorization",
        &format!("Basic {}", b64(&format!("bot:{secret}"))),
    );
    let spec = r#"{"format_version":"1.0.0","generated_at_timestamp":0,"steplib_source":"n",
        "download_locations":[],"steps":{"hello":{"info":{},"latest_version_number":"1.0.0",
        "versions":{"1.0.0":{"title":"Hello","source":{"git":"https://example.invalid/x.git","commit":"abc"}}}}}}"#;
    server.script("/spec.json", vec![support::Answer::ok(spec.as_bytes())]);
    let url = format!("{}/spec.json", server.url());
    let t = tempfile::tempdir().unwrap();
    let netrc = t.path().join("netrc");
    let good = format!(
        "# CI credentials\nmacdef init\nmachine 127.0.0.1 login evil password evil\n\n\
         machine 127.0.0.1 # the loopback server\n  login bot\n  password \"{CANARY} \\\"x\"\n"
    );
    fs::write(&netrc, &good).unwrap();
    let o = support::output(
        support::stepman(&t.path().join("h1"), ["setup", "-c", &url]).env("NETRC", &netrc),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains(CANARY), "secret printed: {err}");

    fs::write(
        &netrc,
        format!("machine 127.0.0.1 login bot\npassword \"{CANARY}\n"),
    )
    .unwrap();
    let o = support::output(
        support::stepman(&t.path().join("h2"), ["setup", "-c", &url]).env("NETRC", &netrc),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "netrc {} not used: line 2: a quoted token is not closed",
            netrc.display()
        )),
        "{err}"
    );
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!err.contains(CANARY), "secret printed: {err}");
}
