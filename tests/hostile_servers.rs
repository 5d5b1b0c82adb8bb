//! Hostile HTTP servers (PRODUCT §5, "Network"): truncated bodies, lying Content-Length, stalls,
//! drips, 5xx/429 storms, 4xx, redirects to `file://` and to other origins, content that changes
//! between retries, and precompiled executables that do not match their hash.
//!
//! Every case runs the real binary against a loopback server (`support/hostile_server.rs`) with
//! a canary secret in the StepLib URL's userinfo and in a netrc, and ends with the same checks
//! ([`Case::hostile`]): a non-zero exit with one error line naming the step and the (redacted)
//! URL; no new object, nothing in the store changed, nothing left in `store-v1/tmp/`, nothing
//! written anywhere else (the destination's old content intact); `fsck` clean; and the canary in
//! no file and no output.

mod common;
#[path = "support/hostile_server.rs"]
mod hostile_server;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Rng, TestDir, assert_fsck_clean, object_ids, stepman};
use hostile_server::{Answer, HostileServer, Length};

/// Step ids in every test's StepLib: `good` is activated before each case (so the store is not
/// empty), the others are free for the cases.
const IDS: [&str; 6] = ["good", "s1", "s2", "s3", "s4", "s5"];
/// Attempts unless a case says otherwise.
const ATTEMPTS: u32 = 3;

fn canary() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut rng = Rng::new(u64::from(std::process::id()) << 32 | u64::from(nanos));
    format!("CANARY-{:016x}", rng.next_u64())
}

/// A zip of a small step whose content depends on `tag` (about 12 KiB, so truncations cut it
/// in the middle).
fn step_zip(tag: &str) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .system(zip::System::Unix);
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("step.sh", opts.unix_permissions(0o755))
        .unwrap();
    z.write_all(format!("#!/bin/sh\necho {tag}\n").as_bytes())
        .unwrap();
    let mut pad = vec![0u8; 12 * 1024];
    let seed = tag
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    Rng::new(seed).fill(&mut pad);
    z.start_file("data.bin", opts.unix_permissions(0o644))
        .unwrap();
    z.write_all(&pad).unwrap();
    z.finish().unwrap().into_inner()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `http://127.0.0.1:<port>/archives/<id>/1.0.0/step.zip` path part.
fn zip_path(id: &str) -> String {
    format!("/archives/{id}/1.0.0/step.zip")
}

/// Every file, directory and symlink under `root` (except the subtrees in `skip`), with its
/// kind, mode and content or target: two equal snapshots mean nothing was written.
fn snapshot(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if skip.contains(&p) {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let v = if m.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else {
                format!(
                    "file {mode:o} {}",
                    sha256_hex(&fs::read(&p).unwrap_or_default())
                )
            };
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), v);
        }
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One test's world: a temp dir holding the store home, a `$HOME`, a working dir, a netrc and
/// the destinations; a hostile server serving a `spec.json` (reached with the canary in its URL's
/// userinfo) whose zip locations point back at it (authorized by the netrc entry).
struct Case {
    dir: TestDir,
    server: HostileServer,
    canary: String,
    /// The `-c` URL, with the canary as password.
    spec_url: String,
    /// Every output of every command run, for the canary check.
    outputs: Vec<Output>,
}

impl Case {
    /// Sets up the StepLib and activates `good` (which must work), so the store holds objects
    /// and names before the case.
    fn new() -> Case {
        let dir = TestDir::new();
        let server = HostileServer::start();
        let canary = canary();
        for d in ["home", "userhome", "cwd"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(
            dir.path().join("netrc"),
            format!("machine 127.0.0.1 login bot password {canary}\n"),
        )
        .unwrap();
        let case = Case {
            spec_url: format!("http://bot:{canary}@{}/spec.json", server.authority()),
            dir,
            server,
            canary,
            outputs: Vec::new(),
        };
        case.serve_spec(&BTreeMap::new());
        for id in IDS {
            case.server
                .script(&zip_path(id), vec![Answer::ok(&step_zip(id))]);
        }
        let mut case = case;
        let o = case.run(&["setup", "-c", &case.spec_url.clone()], &[]);
        assert!(o.status.success(), "setup: {}", text(&o.stderr));
        let o = case.activate("good", &[]);
        assert!(o.status.success(), "activate good: {}", text(&o.stderr));
        assert_eq!(
            fs::read(case.dest("good").join("step.sh")).unwrap(),
            b"#!/bin/sh\necho good\n"
        );
        assert!(!object_ids(&case.home()).is_empty());
        case
    }

    /// Serves the spec.json; `extra` adds fields to a step version (`id` → JSON members).
    fn serve_spec(&self, extra: &BTreeMap<&str, String>) {
        let mut steps = Vec::new();
        for id in IDS {
            let more = extra.get(id).map_or(String::new(), |e| format!(",{e}"));
            steps.push(format!(
                r#""{id}":{{"info":{{}},"latest_version_number":"1.0.0","versions":{{"1.0.0":{{"title":"{id}"{more}}}}}}}"#
            ));
        }
        let spec = format!(
            r#"{{"format_version":"1.0.0","generated_at_timestamp":0,"steplib_source":"hostile",
            "download_locations":[{{"type":"zip","src":"{}/archives/"}}],"steps":{{{}}}}}"#,
            self.server.url(),
            steps.join(",")
        );
        self.server
            .script("/spec.json", vec![Answer::ok(spec.as_bytes())]);
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    fn dest(&self, id: &str) -> PathBuf {
        self.root().join(format!("dest-{id}"))
    }

    /// The zip URL of `id` as errors may show it (no userinfo).
    fn zip_url(&self, id: &str) -> String {
        format!("{}{}", self.server.url(), zip_path(id))
    }

    /// Runs `stepman <args>` with this case's environment plus `envs`.
    fn run(&mut self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = stepman(&self.home(), args);
        cmd.env("NETRC", self.root().join("netrc"))
            .env("HOME", self.root().join("userhome"))
            .env("STEPMAN_HTTP_TIMEOUT", "1")
            .env("STEPMAN_HTTP_ATTEMPTS", ATTEMPTS.to_string())
            .env_remove("BITRISE_PRECOMPILED_STEPS_STORAGE_URLS")
            .env_remove("BITRISE_EXPERIMENT_PRECOMPILED_STEPS")
            .env_remove("STEPMAN_HTTP_MIN_RATE")
            .current_dir(self.root().join("cwd"));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let o = common::output(&mut cmd);
        self.outputs.push(o.clone());
        o
    }

    /// `stepman activate -c <spec> -i <id> -v 1.0.0 -p <dest>`.
    fn activate(&mut self, id: &str, envs: &[(&str, &str)]) -> Output {
        let dest = self.dest(id);
        let spec = self.spec_url.clone();
        self.run(
            &[
                "activate",
                "-c",
                &spec,
                "-i",
                id,
                "-v",
                "1.0.0",
                "-p",
                dest.to_str().unwrap(),
            ],
            envs,
        )
    }

    /// Activates `id`, which must fail cleanly; returns the error line and the time it took.
    /// The destination holds old content before, which must be intact after.
    fn hostile(&mut self, id: &str, envs: &[(&str, &str)]) -> (String, Duration) {
        let dest = self.dest(id);
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("old.txt"), b"the previous activation\n").unwrap();
        let store = common::store_root(&self.home());
        let skip = [store.join("tmp"), store.join("locks")];
        let before = snapshot(self.root(), &skip);
        let ids = object_ids(&self.home());

        let t = Instant::now();
        let o = self.activate(id, envs);
        let took = t.elapsed();
        let err = text(&o.stderr);
        assert!(
            !o.status.success(),
            "activating {id} succeeded against a hostile server\nstderr: {err}"
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "not one error line:\n{err}");
        let line = lines[0].to_string();
        assert!(
            line.contains(&format!("step {id}@1.0.0")),
            "the error does not name the step: {line}"
        );
        assert!(
            line.contains(&self.zip_url(id)),
            "the error does not name the URL {}: {line}",
            self.zip_url(id)
        );
        assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));

        assert_eq!(
            object_ids(&self.home()),
            ids,
            "{id}: an object was published"
        );
        let after = snapshot(self.root(), &skip);
        assert_eq!(
            before, after,
            "{id}: something was written outside the store's temp area"
        );
        self.assert_tmp_empty();
        assert_fsck_clean(&self.home());
        self.assert_no_canary();
        (line, took)
    }

    /// Nothing is left in `store-v1/tmp/`.
    fn assert_tmp_empty(&self) {
        let tmp = common::store_root(&self.home()).join("tmp");
        let left: Vec<_> = fs::read_dir(&tmp)
            .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
    }

    /// The canary is in no file under the test's dir (except the netrc that holds it), no file
    /// name, and no output of any command.
    fn assert_no_canary(&self) {
        let netrc = self.root().join("netrc");
        let mut stack = vec![self.root().to_path_buf()];
        let mut files = 0;
        while let Some(p) = stack.pop() {
            assert!(
                !p.to_string_lossy().contains(&self.canary),
                "secret in a file name: {}",
                p.display()
            );
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                assert!(!t.to_string_lossy().contains(&self.canary));
            } else if p != netrc {
                files += 1;
                let data = fs::read(&p).unwrap_or_default();
                assert!(
                    !text(&data).contains(&self.canary),
                    "secret written to {}",
                    p.display()
                );
            }
        }
        assert!(files > 3, "the canary scan saw only {files} files");
        for o in &self.outputs {
            for s in [&o.stdout, &o.stderr] {
                assert!(
                    !text(s).contains(&self.canary),
                    "secret printed:\n{}",
                    text(s)
                );
            }
        }
    }

    /// The requests for `id`'s zip all carried the netrc credential (so the canary was in play).
    fn assert_authorized(&self, id: &str) {
        let reqs = self.server.requests_for(&zip_path(id));
        assert!(!reqs.is_empty(), "no request for {id}");
        for r in reqs {
            let auth = r.header("authorization").unwrap_or_default();
            assert!(
                auth.starts_with("Basic "),
                "{id}: a request without the credential"
            );
        }
    }

    /// Activates `id`, which must succeed with exactly the tree of `step_zip(tag)`.
    fn activate_ok(&mut self, id: &str, tag: &str, envs: &[(&str, &str)]) {
        let o = self.activate(id, envs);
        assert!(o.status.success(), "activate {id}: {}", text(&o.stderr));
        let dest = self.dest(id);
        let want = self.root().join(format!("want-{id}"));
        fs::create_dir_all(&want).unwrap();
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(step_zip(tag))).unwrap();
        z.extract(&want).unwrap();
        fs::set_permissions(want.join("step.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        common::assert_same_tree(&want, &dest);
        fs::remove_dir_all(&want).unwrap();
        self.assert_tmp_empty();
        assert_fsck_clean(&self.home());
        self.assert_no_canary();
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// 1. Truncated bodies
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_body_is_retried_then_fails() {
    let mut c = Case::new();
    let zip = step_zip("s1");
    c.server.script(
        &zip_path("s1"),
        vec![Answer::truncated(&zip, zip.len() / 2)],
    );
    let (line, _) = c.hostile("s1", &[]);
    assert_eq!(c.server.count(&zip_path("s1")), ATTEMPTS as usize, "{line}");
    assert!(
        line.contains("Content-Length") || line.contains("body"),
        "{line}"
    );
    c.assert_authorized("s1");
}

#[test]
fn truncated_only_on_the_first_attempt_then_the_retry_succeeds() {
    let mut c = Case::new();
    let zip = step_zip("s1");
    c.server.script(
        &zip_path("s1"),
        vec![Answer::truncated(&zip, zip.len() - 100), Answer::ok(&zip)],
    );
    c.activate_ok("s1", "s1", &[]);
    assert_eq!(c.server.count(&zip_path("s1")), 2);
    c.assert_authorized("s1");
}
