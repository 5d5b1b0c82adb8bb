//! The remote tier on S3-compatible storage, against moto's S3 server on loopback
//! (support/s3.rs; skipped without moto). First what the tier relies on from the server:
//! create-only puts (`If-None-Match: *`) of which exactly one of many racing writers wins, and
//! conditional overwrites (`If-Match`); then the fixture itself.

use std::process::{Child, Command, Stdio};

use crate::support::{self, AUTHORIZATION, MotoServer, Tier};

/// `curl` putting `body` at `url` with `headers`, behind a start gate (see
/// [`support::gated_shell`]); it prints the status code alone.
fn gated_put(url: &str, body: &str, headers: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "read _gate; exec curl \"$@\"", "sh"])
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", AUTHORIZATION])
        // curl's default for --data-binary is a form, whose body moto's server would eat.
        .args(["-H", "Content-Type: application/octet-stream"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.args(["--data-binary", body, url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The status code each child's `curl` printed, in order.
fn statuses(children: Vec<Child>) -> Vec<u16> {
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().expect("wait for curl");
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "curl failed ({}): {out} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            out.parse()
                .unwrap_or_else(|_| panic!("curl printed {out:?}, not a status code"))
        })
        .collect()
}

/// One conditional put, run at once; its status code.
fn put_now(url: &str, body: &str, headers: &[&str]) -> u16 {
    let mut child = gated_put(url, body, headers)
        .spawn()
        .expect("spawn sh to run curl");
    support::release(std::slice::from_mut(&mut child));
    statuses(vec![child])[0]
}

/// The quoted ETag of `bucket/key`, from a HEAD.
fn etag(moto: &MotoServer, bucket: &str, key: &str) -> String {
    let o = Command::new("curl")
        .args(["-sS", "-I", "-H", AUTHORIZATION, &moto.url(bucket, key)])
        .output()
        .expect("run curl -I");
    let head = String::from_utf8_lossy(&o.stdout);
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("etag")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("HEAD {bucket}/{key} has no ETag: {head}"))
}

#[test]
fn s3_server_honours_create_only_puts() {
    let test = "s3_server_honours_create_only_puts";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let _alone = support::alone(); // sixteen processes at once
    let bucket = moto.bucket("race");
    for round in 0..3 {
        let key = format!("race-key-{round}");
        let url = moto.url(&bucket, &key);
        let bodies: Vec<String> = (0..16)
            .map(|i| format!("writer {i} of round {round}"))
            .collect();
        let mut children: Vec<Child> = bodies
            .iter()
            .map(|b| {
                gated_put(&url, b, &["If-None-Match: *"])
                    .spawn()
                    .expect("spawn sh to run curl")
            })
            .collect();
        support::release(&mut children);
        let statuses = statuses(children);
        let winners: Vec<usize> = (0..16).filter(|&i| statuses[i] == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: not exactly one create-only put won: {statuses:?}"
        );
        assert!(
            statuses.iter().filter(|&&s| s == 412).count() == 15,
            "round {round}: the losers did not all get 412: {statuses:?}"
        );
        assert_eq!(
            moto.get(&bucket, &key).map(String::from_utf8),
            Some(Ok(bodies[winners[0]].clone())),
            "round {round}: the stored object is not the winner's ({statuses:?})"
        );
    }
}

#[test]
fn s3_server_refuses_a_create_only_put_over_an_existing_object() {
    let test = "s3_server_refuses_a_create_only_put_over_an_existing_object";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let bucket = moto.bucket("exists");
    moto.put(&bucket, "k", b"first");
    let status = put_now(&moto.url(&bucket, "k"), "second", &["If-None-Match: *"]);
    assert_eq!(status, 412, "a create-only put over an existing object");
    assert_eq!(
        moto.get(&bucket, "k").as_deref(),
        Some(&b"first"[..]),
        "the refused put changed the object"
    );
}

#[test]
fn s3_server_honours_if_match_puts() {
    let test = "s3_server_honours_if_match_puts";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let bucket = moto.bucket("if-match");
    moto.put(&bucket, "lease", b"holder a");
    let current = etag(moto, &bucket, "lease");
    let url = moto.url(&bucket, "lease");

    let wrong = r#"If-Match: "00000000000000000000000000000000""#;
    assert_eq!(
        put_now(&url, "holder b", &[wrong]),
        412,
        "If-Match, wrong ETag"
    );
    assert_eq!(
        moto.get(&bucket, "lease").as_deref(),
        Some(&b"holder a"[..]),
        "a put with the wrong ETag changed the object"
    );

    let right = format!("If-Match: {current}");
    assert_eq!(
        put_now(&url, "holder c", &[&right]),
        200,
        "If-Match, current ETag"
    );
    assert_eq!(
        moto.get(&bucket, "lease").as_deref(),
        Some(&b"holder c"[..]),
        "a put with the current ETag did not replace the object"
    );
    assert_eq!(
        put_now(&url, "holder d", &[&right]),
        412,
        "If-Match with the ETag the object had before the last put"
    );

    let missing = moto.url(&bucket, "no-such-lease");
    assert_eq!(
        put_now(&missing, "holder e", &[wrong]),
        404,
        "If-Match on a missing object"
    );
    assert_eq!(moto.get(&bucket, "no-such-lease"), None);
}

#[test]
fn s3_fixture_lists_every_key_across_pages() {
    let test = "s3_fixture_lists_every_key_across_pages";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let bucket = moto.bucket("list");
    let mut keys: Vec<String> = [
        "names/a & b/x",
        "names/<id>/1.0",
        "names/\"q\" 'a'/+plus",
        "names/é/ü",
        "names/sub/deeper/key",
        "names/~tilde%25",
        "names/z",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    for k in &keys {
        moto.put(&bucket, k, k.as_bytes());
    }
    moto.put(&bucket, "trees/other", b"not listed under names/");
    keys.sort();
    assert_eq!(
        moto.keys_in_pages(&bucket, "names/", 3),
        keys,
        "in pages of 3"
    );
    assert_eq!(moto.keys(&bucket, "names/"), keys, "in one page");
    assert_eq!(moto.keys(&bucket, "names/<"), ["names/<id>/1.0"]);
    assert_eq!(moto.keys(&bucket, "nothing"), Vec::<String>::new());
    for k in &keys {
        assert_eq!(moto.get(&bucket, k).as_deref(), Some(k.as_bytes()), "{k}");
    }
    moto.delete(&bucket, "names/z");
    moto.delete(&bucket, "names/z"); // deleting a missing key is no error
    assert_eq!(moto.get(&bucket, "names/z"), None, "deleted");
    assert_eq!(
        moto.keys(&bucket, "").len(),
        keys.len(),
        "one of eight deleted"
    );
}

#[test]
fn s3_fixture_points_a_command_at_its_server() {
    let test = "s3_fixture_points_a_command_at_its_server";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo \"$AWS_ENDPOINT_URL $AWS_ACCESS_KEY_ID $AWS_SECRET_ACCESS_KEY $AWS_REGION \
         $AWS_ALLOW_HTTP ${AWS_PROFILE-unset} ${AWS_SESSION_TOKEN-unset}\"",
    ])
    .env("AWS_PROFILE", "prod")
    .env("AWS_SESSION_TOKEN", "secret");
    moto.env(&mut cmd);
    let o = cmd.output().expect("run sh");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!(
            "{} testing testing us-east-1 true unset unset",
            moto.endpoint()
        ),
        "the environment the fixture gives a command"
    );
}

#[test]
fn s3_server_of_its_own_stops_and_frees_its_port() {
    let test = "s3_server_of_its_own_stops_and_frees_its_port";
    let Some(mut own) = MotoServer::start(test) else {
        return;
    };
    let bucket = own.bucket("own");
    own.put(&bucket, "k", b"v");
    assert_eq!(own.get(&bucket, "k").as_deref(), Some(&b"v"[..]));
    let port = own.endpoint().rsplit(':').next().map(str::to_string);
    own.stop();
    own.stop(); // a second stop does nothing
    let port: u16 = port
        .and_then(|p| p.parse().ok())
        .expect("the endpoint ends with the port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "127.0.0.1:{port} still accepts connections after stop"
    );
}

// ---- The fleet: separate homes (hosts) sharing one remote tier ----

/// A StepLib on this machine whose one step `fleet@1.0.0` is a zip of a [`support::make_tree`]
/// of `seed` served by a loopback origin (which counts its downloads).
struct Fleet {
    dir: tempfile::TempDir,
    src: std::path::PathBuf,
    origin: support::Server,
    lib: std::path::PathBuf,
    bucket: String,
    /// The `STEPMAN_REMOTE` URL of the fleet's prefix in `bucket`.
    remote: String,
}

const STEP_ZIP: &str = "/steps/fleet/1.0.0/step.zip";

impl Fleet {
    fn new(tier: &dyn Tier, seed: u64) -> Fleet {
        Fleet::with_tree(tier, |src| {
            support::make_tree(src, seed, 40);
        })
    }

    /// A fleet whose step's tree `make` writes.
    fn with_tree(tier: &dyn Tier, make: impl FnOnce(&std::path::Path)) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make(&src);
        let origin = support::Server::start();
        let lib = dir.path().join("lib");
        support::write_steplib_yml(&lib, &[("zip", &format!("{}/steps/", origin.url()))]);
        let bucket = tier.bucket("fleet");
        let remote = tier.remote(&bucket, "fleet");
        let f = Fleet {
            dir,
            src,
            origin,
            lib,
            bucket,
            remote,
        };
        f.add_version("1.0.0", &f.src);
        f
    }

    /// The origin serves a zip of `src` as version `version`'s archive, after `delay` (a
    /// version served before is replaced).
    fn serve(&self, version: &str, src: &std::path::Path, delay: std::time::Duration) {
        self.origin.serve(
            &format!("/steps/fleet/{version}/step.zip"),
            support::zip_tree(src),
            support::Mode::Full { delay },
        );
    }

    /// Adds `fleet@<version>` to the StepLib, its archive a zip of `src`.
    fn add_version(&self, version: &str, src: &std::path::Path) {
        self.serve(version, src, std::time::Duration::ZERO);
        support::write_step(
            &self.lib,
            "fleet",
            version,
            &support::step_yml("Fleet", None),
        );
    }

    /// A fleet whose step holds `blobs` files of 4 MiB of random bytes (beside a small tree
    /// from `seed`): an archive that does not compress, `4 * blobs` MiB.
    fn incompressible(tier: &dyn Tier, seed: u64, blobs: usize) -> Fleet {
        Fleet::with_tree(tier, |src| {
            support::make_tree(src, seed, 10);
            let mut rng = fastrand::Rng::with_seed(seed);
            for i in 0..blobs {
                let mut data = vec![0u8; 4 << 20];
                rng.fill(&mut data);
                std::fs::write(src.join(format!("blob{i}.bin")), data).unwrap();
            }
        })
    }

    fn home(&self, n: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("host-{n}"))
    }

    /// `stepman activate` of the step into `<home>/step`, with the remote tier set.
    fn activate(&self, tier: &dyn Tier, home: &std::path::Path, gated: bool) -> Command {
        self.activate_version(tier, home, gated, "1.0.0")
    }

    fn activate_version(
        &self,
        tier: &dyn Tier,
        home: &std::path::Path,
        gated: bool,
        version: &str,
    ) -> Command {
        let dest = home.join("step");
        let lib = self.lib.to_str().unwrap();
        let args = ["activate", "-c", lib, "-i", "fleet", "-v", version, "-p"];
        let mut cmd = if gated {
            let mut c = support::gated_stepman(home, args);
            c.arg(&dest);
            c
        } else {
            let mut c = support::stepman(home, args);
            c.arg(&dest);
            c
        };
        tier.env(&mut cmd);
        cmd.env("STEPMAN_REMOTE", &self.remote)
            .env("STEPMAN_REMOTE_LEASE_TTL", "60")
            .env("STEPMAN_REMOTE_WAIT", "60");
        cmd
    }

    /// `stepman remote verify [--json]` of this fleet's remote, from `home`.
    fn verify(&self, tier: &dyn Tier, home: &std::path::Path, json: bool) -> Command {
        let mut cmd = support::stepman(home, ["remote", "verify"]);
        if json {
            cmd.arg("--json");
        }
        tier.env(&mut cmd);
        cmd.env("STEPMAN_REMOTE", &self.remote);
        cmd
    }

    fn keys(&self, tier: &dyn Tier, under: &str) -> Vec<String> {
        tier.keys(&self.bucket, &format!("fleet/stepman-remote-v1/{under}"))
    }
}

/// `n` hosts activating the step at once; every one must succeed with the source's tree.
fn wave(f: &Fleet, tier: &dyn Tier, tag: &str, n: usize) -> Vec<String> {
    let homes: Vec<_> = (0..n).map(|i| f.home(&format!("{tag}{i}"))).collect();
    let mut children: Vec<Child> = homes
        .iter()
        .map(|h| f.activate(tier, h, true).spawn().expect("spawn stepman"))
        .collect();
    support::release(&mut children);
    let mut stderrs = Vec::new();
    for (c, h) in children.into_iter().zip(&homes) {
        let o = c.wait_with_output().expect("wait for stepman");
        assert!(
            o.status.success(),
            "{}: {}",
            h.display(),
            support::describe(&o)
        );
        support::assert_same_tree(&f.src, &h.join("step"));
        support::assert_fsck_clean(h);
        stderrs.push(support::stderr_of(&o));
    }
    stderrs
}

#[test]
fn ten_hosts_download_one_uncached_step_from_the_origin_once() {
    let test = "ten_hosts_download_one_uncached_step_from_the_origin_once";
    if let Some(moto) = support::moto(test) {
        ten_hosts_once(moto, test);
    }
}

pub(crate) fn ten_hosts_once(tier: &dyn Tier, test: &str) {
    let _ = test;
    let _alone = support::alone();
    let f = Fleet::new(tier, 17);
    let stderrs = wave(&f, tier, "a", 10);
    assert_eq!(
        f.origin.count(STEP_ZIP),
        1,
        "ten hosts at once must download from the origin once: {stderrs:#?}"
    );
    let names = f.keys(tier, "names/");
    let trees = f.keys(tier, "trees/");
    assert_eq!(names.len(), 1, "one remote name: {names:?}");
    assert_eq!(trees.len(), 1, "one remote tree: {trees:?}");
    assert!(f.keys(tier, "leases/").is_empty(), "the lease is dropped");
    // The name names the tree.
    let id = String::from_utf8(tier.get(&f.bucket, &names[0]).unwrap()).unwrap();
    assert!(
        trees[0].contains(id.trim()),
        "{names:?} → {id} vs {trees:?}"
    );

    // A second wave of ten fresh hosts: nothing from the origin.
    wave(&f, tier, "b", 10);
    assert_eq!(
        f.origin.count(STEP_ZIP),
        1,
        "the second wave came from the remote"
    );
}

#[test]
fn a_corrupted_remote_tree_is_refused_the_origin_used_and_verify_reports_it() {
    let test = "a_corrupted_remote_tree_is_refused_the_origin_used_and_verify_reports_it";
    if let Some(moto) = support::moto(test) {
        corrupted_tree(moto, test);
    }
}

pub(crate) fn corrupted_tree(tier: &dyn Tier, test: &str) {
    let _ = test;
    let f = Fleet::new(tier, 23);
    let first = f.home("first");
    support::ok_stdout(
        &support::output(&mut f.activate(tier, &first, false)),
        "first host",
    );
    let trees = f.keys(tier, "trees/");
    assert_eq!(trees.len(), 1, "{trees:?}");
    // Another tree's archive where this one's should be: well-formed, but not this tree.
    let other = f.dir.path().join("other");
    support::make_tree(&other, 99, 5);
    tier.put(&f.bucket, &trees[0], &support::targz_tree(&other));

    let mut verify = f.verify(tier, &first, true);
    let o = support::output(&mut verify);
    assert_eq!(
        o.status.code(),
        Some(1),
        "verify must report damage: {}",
        support::describe(&o)
    );
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        report.contains("fleet/1.0.0") && report.contains("hashes to"),
        "{report}"
    );

    let second = f.home("second");
    let o = support::output(&mut f.activate(tier, &second, false));
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(&f.src, &second.join("step"));
    support::assert_fsck_clean(&second);
    let err = support::stderr_of(&o);
    assert!(
        err.contains("hashes to") && err.contains("using the origin"),
        "{err}"
    );
    assert_eq!(f.origin.count(STEP_ZIP), 2, "the origin was used again");

    // That host put the right tree back: the remote verifies clean again, and a third host
    // takes it from the remote.
    let o = support::output(&mut verify);
    assert_eq!(
        o.status.code(),
        Some(0),
        "repaired: {}",
        support::describe(&o)
    );
    let third = f.home("third");
    support::ok_stdout(
        &support::output(&mut f.activate(tier, &third, false)),
        "third host",
    );
    support::assert_same_tree(&f.src, &third.join("step"));
    assert_eq!(
        f.origin.count(STEP_ZIP),
        2,
        "the third host used the remote"
    );
}

#[test]
fn a_stopped_remote_never_fails_an_activation() {
    let test = "a_stopped_remote_never_fails_an_activation";
    let Some(mut moto) = MotoServer::start(test) else {
        return;
    };
    let f = Fleet::new(&moto, 31);
    let first = f.home("first");
    support::ok_stdout(
        &support::output(&mut f.activate(&moto, &first, false)),
        "first host",
    );
    moto.stop();
    let homes: Vec<_> = (0..4).map(|i| f.home(&format!("after{i}"))).collect();
    for h in &homes {
        let started = std::time::Instant::now();
        let o = support::output(&mut f.activate(&moto, h, false));
        assert!(o.status.success(), "{}", support::describe(&o));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "a refused connection must not stall the activation"
        );
        let err = support::stderr_of(&o);
        assert!(
            err.contains("remote") && err.contains("using the origin"),
            "{err}"
        );
        support::assert_same_tree(&f.src, &h.join("step"));
        support::assert_fsck_clean(h);
    }
    assert_eq!(f.origin.count(STEP_ZIP), 1 + homes.len());
}

/// The remote killed while ten hosts are in the middle of it (waiting on one host's lease,
/// uploading, or downloading a 12 MiB tree a seeding host put there): every host still
/// activates the right tree, from the origin where the remote failed it.
#[test]
fn a_remote_stopped_mid_run_never_fails_an_activation() {
    let test = "a_remote_stopped_mid_run_never_fails_an_activation";
    let _alone = support::alone();
    for (wave, seeded) in [("miss", false), ("hit", true)] {
        let Some(mut moto) = MotoServer::start(test) else {
            return;
        };
        let f = Fleet::incompressible(&moto, 71, 3);
        if seeded {
            let seed = f.home("seed");
            support::ok_stdout(
                &support::output(&mut f.activate(&moto, &seed, false)),
                "seed",
            );
        } else {
            // A slow origin: the lease holder is still downloading while the others wait.
            f.serve("1.0.0", &f.src, std::time::Duration::from_secs(1));
        }
        let homes: Vec<_> = (0..10).map(|i| f.home(&format!("{wave}{i}"))).collect();
        let mut children: Vec<Child> = homes
            .iter()
            .map(|h| {
                let mut c = f.activate(&moto, h, true);
                c.env("STEPMAN_REMOTE_TIMEOUT", "10");
                c.spawn().expect("spawn stepman")
            })
            .collect();
        support::release(&mut children);
        if seeded {
            // Into their downloads of the remote's tree.
            std::thread::sleep(std::time::Duration::from_millis(150));
        } else {
            // Once one host holds the lease (and the others wait on it).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while moto
                .keys(&f.bucket, "fleet/stepman-remote-v1/leases/")
                .is_empty()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no host took the lease"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let stopped = std::time::Instant::now();
        moto.stop();
        let mut fell_back = 0;
        for (c, h) in children.into_iter().zip(&homes) {
            let o = c.wait_with_output().expect("wait for stepman");
            assert!(o.status.success(), "{wave}: {}", support::describe(&o));
            support::assert_same_tree(&f.src, &h.join("step"));
            support::assert_fsck_clean(h);
            if support::stderr_of(&o).contains("using the origin") {
                fell_back += 1;
            }
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(60),
            "{wave}: the hosts took {:?} after the remote stopped",
            stopped.elapsed()
        );
        // The stop came while the hosts were at the remote, not after they were done.
        assert!(fell_back > 0, "{wave}: no host saw the remote fail");
        eprintln!("{test}: {wave}: {fell_back} of 10 hosts fell back to the origin");
    }
}

#[test]
fn uploaders_killed_at_any_point_leave_the_remote_verifying_clean() {
    let test = "uploaders_killed_at_any_point_leave_the_remote_verifying_clean";
    if let Some(moto) = support::moto(test) {
        uploaders_killed(moto, test);
    }
}

pub(crate) fn uploaders_killed(tier: &dyn Tier, test: &str) {
    let _ = test;
    let _alone = support::alone();
    // A bigger tree, so that the upload takes a while to kill inside.
    let f = Fleet::new(tier, 41);
    support::make_tree(&f.src.join("more"), 42, 400);
    f.serve("1.0.0", &f.src, std::time::Duration::ZERO);
    let mut verify = f.verify(tier, &f.home("v"), true);
    // One host at a time, each killed later than the one before, from before its download to
    // after its upload; the lease of a killed host is taken over at once (TTL 0).
    let mut finished = 0;
    for (i, ms) in [0u64, 20, 60, 120, 200, 300, 450, 700, 1000, 1500]
        .iter()
        .enumerate()
    {
        let h = f.home(&format!("k{i}"));
        let mut c = f.activate(tier, &h, false);
        c.env("STEPMAN_REMOTE_LEASE_TTL", "0");
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(*ms));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.success() {
            finished += 1;
            support::assert_same_tree(&f.src, &h.join("step"));
        }
        let o = support::output(&mut verify);
        assert_eq!(
            o.status.code(),
            Some(0),
            "after a kill at {ms} ms: {}",
            support::describe(&o)
        );
        let names = f.keys(tier, "names/");
        assert!(names.len() <= 1, "{names:?}");
    }
    // Whatever the kills left, a fresh host activates the right tree.
    let last = f.home("last");
    support::ok_stdout(
        &support::output(&mut f.activate(tier, &last, false)),
        "last host",
    );
    support::assert_same_tree(&f.src, &last.join("step"));
    support::assert_fsck_clean(&last);
    eprintln!("{test}: {finished} of 10 killed hosts had finished first");
}

#[test]
fn remote_push_and_preload_push_warm_the_fleets_tier() {
    let test = "remote_push_and_preload_push_warm_the_fleets_tier";
    if let Some(moto) = support::moto(test) {
        push_and_preload_push(moto, test);
    }
}

pub(crate) fn push_and_preload_push(tier: &dyn Tier, test: &str) {
    let _ = test;
    let f = Fleet::new(tier, 53);
    let remote = f.remote.clone();
    let lib = f.lib.to_str().unwrap();
    // A host without the remote caches the step; `remote push` uploads it.
    let plain = f.home("plain");
    let dest = plain.join("step");
    let mut act = support::stepman(
        &plain,
        ["activate", "-c", lib, "-i", "fleet", "-v", "1.0.0", "-p"],
    );
    act.arg(&dest);
    support::ok_stdout(&support::output(&mut act), "activate without a remote");
    assert!(f.keys(tier, "names/").is_empty());
    let mut push = support::stepman(&plain, ["remote", "push", "-c", lib, "--remote", &remote]);
    tier.env(&mut push);
    let out = support::ok_stdout(&support::output(&mut push), "remote push");
    assert!(
        out.contains("fleet/1.0.0") && out.contains("Uploaded"),
        "{out}"
    );
    assert_eq!(f.keys(tier, "names/").len(), 1);
    assert_eq!(f.keys(tier, "trees/").len(), 1);
    // A second push finds it there.
    let out = support::ok_stdout(&support::output(&mut push), "remote push again");
    assert!(out.contains("AlreadyThere"), "{out}");
    // A fresh host takes it from the remote.
    let fresh = f.home("fresh");
    support::ok_stdout(
        &support::output(&mut f.activate(tier, &fresh, false)),
        "fresh host",
    );
    support::assert_same_tree(&f.src, &fresh.join("step"));
    assert_eq!(
        f.origin.count(STEP_ZIP),
        1,
        "the fresh host used the remote"
    );

    // `preload --push` into another bucket: the preloaded step, already cached, is uploaded.
    let other = tier.bucket("warm");
    let mut pre = support::stepman(
        &plain,
        [
            "preload",
            "-c",
            lib,
            "fleet@1.0.0",
            "--push",
            "--remote",
            &tier.remote(&other, "fleet"),
        ],
    );
    tier.env(&mut pre);
    support::ok_stdout(&support::output(&mut pre), "preload --push");
    let names = tier.keys(&other, "fleet/stepman-remote-v1/names/");
    assert_eq!(names.len(), 1, "{names:?}");
    // Without a remote, --push is bad usage.
    let mut bad = support::stepman(&plain, ["preload", "-c", lib, "fleet@1.0.0", "--push"]);
    bad.env_remove("STEPMAN_REMOTE");
    assert_eq!(support::output(&mut bad).status.code(), Some(2));
}

/// A loopback "object store" that answers every request with `503` (`stall`: accepts the
/// connection and never answers).
fn broken_endpoint(stall: bool) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if stall {
                held.push(s);
                continue;
            }
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            // A proxy's error page, as a load balancer sends it: lines of HTML.
            let body = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n";
            let _ = write!(
                s,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_remote_that_fails_or_stalls_never_fails_an_activation() {
    let test = "a_remote_that_fails_or_stalls_never_fails_an_activation";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let f = Fleet::new(moto, 61);
    for (i, stall) in [false, true].into_iter().enumerate() {
        let h = f.home(&format!("h{i}"));
        let mut c = f.activate(moto, &h, false);
        c.env("AWS_ENDPOINT_URL", broken_endpoint(stall))
            .env("STEPMAN_REMOTE_TIMEOUT", "2")
            .env("STEPMAN_REMOTE_CONNECT_TIMEOUT", "2");
        let started = std::time::Instant::now();
        let o = support::output(&mut c);
        let took = started.elapsed();
        assert!(
            o.status.success(),
            "stall={stall}: {}",
            support::describe(&o)
        );
        let err = support::stderr_of(&o);
        assert!(err.contains("using the origin"), "stall={stall}: {err}");
        assert_one_line_messages(&err);
        // The read is bounded by the timeouts (a few tries of 2 s), and so is the upload.
        assert!(
            took < std::time::Duration::from_secs(25),
            "stall={stall}: took {took:?}"
        );
        support::assert_same_tree(&f.src, &h.join("step"));
        support::assert_fsck_clean(&h);
    }
    assert_eq!(f.origin.count(STEP_ZIP), 2);
}

/// The same faults on a `gs://` and an `az://` remote (a server answering 503, one that never
/// answers): a warning, a bounded wait, the origin used. The GCS client is pointed at the broken
/// server with `GOOGLE_BASE_URL` and a static bearer token, Azure's as its emulator; `remote
/// status` shows each endpoint and names the token's variable, never its value. (No GCS server
/// runs here: this is the GCS client's only test against a live socket.)
#[test]
fn gcs_and_azure_remotes_that_fail_or_stall_never_fail_an_activation() {
    let test = "gcs_and_azure_remotes_that_fail_or_stall_never_fail_an_activation";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let f = Fleet::new(moto, 67);
    let mut n = 0;
    for scheme in ["gs", "az"] {
        for stall in [false, true] {
            let endpoint = broken_endpoint(stall);
            let point = |c: &mut Command| {
                c.env("STEPMAN_REMOTE", format!("{scheme}://fleet-bucket/fleet"))
                    .env("STEPMAN_REMOTE_TIMEOUT", "2")
                    .env("STEPMAN_REMOTE_CONNECT_TIMEOUT", "2");
                if scheme == "gs" {
                    c.env("GOOGLE_BASE_URL", &endpoint)
                        .env("GOOGLE_ALLOW_HTTP", "true")
                        .env("GOOGLE_BEARER_TOKEN", "gcs-token-value");
                } else {
                    c.env("AZURE_STORAGE_USE_EMULATOR", "true")
                        .env("AZURITE_BLOB_STORAGE_URL", &endpoint);
                }
            };
            let h = f.home(&format!("{scheme}{n}"));
            n += 1;
            let mut c = f.activate(moto, &h, false);
            point(&mut c);
            let started = std::time::Instant::now();
            let o = support::output(&mut c);
            let took = started.elapsed();
            assert!(
                o.status.success(),
                "{scheme} stall={stall}: {}",
                support::describe(&o)
            );
            let err = support::stderr_of(&o);
            assert!(
                err.contains("using the origin") && err.contains(&endpoint),
                "{scheme} stall={stall}: the request went to the broken server: {err}"
            );
            assert_one_line_messages(&err);
            assert!(
                took < std::time::Duration::from_secs(25),
                "{scheme} stall={stall}: took {took:?}"
            );
            support::assert_same_tree(&f.src, &h.join("step"));
            support::assert_fsck_clean(&h);

            let mut status = support::stepman(&h, ["remote", "status", "--json"]);
            point(&mut status);
            let o = support::output(&mut status);
            let out = support::ok_stdout(&o, "remote status");
            let s: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(s["endpoint"], endpoint.as_str(), "{s}");
            assert!(!out.contains("gcs-token-value"), "{out}");
        }
    }
    assert_eq!(f.origin.count(STEP_ZIP), 4);
}

/// Every message on `stderr` is one line: a warning (`[WARN ]`) or the activation's note, never
/// a server's error page spilled over several lines.
fn assert_one_line_messages(stderr: &str) {
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("[WARN ]") || line.starts_with("activated "),
            "a message spills over lines: {line:?} in\n{stderr}"
        );
    }
}

/// What a [`KillProxy`] does to the first `PUT` that names its marker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnPut {
    /// SIGKILL the process whose pid is in `pid` before the request reaches the server.
    Kill,
    /// Hold the request (nothing of it reaches the server) until [`KillProxy::release`].
    Hold,
}

/// A loopback proxy in front of the S3 server that SIGKILLs one process the moment that process
/// sends a `PUT` whose request line names `marker` (before the request reaches the server): a
/// kill placed at one exact step of the upload, not at a guessed time. With [`OnPut::Hold`] it
/// holds that request instead, so the uploader sits inside that one put for as long as a test
/// needs.
struct KillProxy {
    url: String,
    pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
    released: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl KillProxy {
    fn start(upstream: &str, marker: &'static str) -> KillProxy {
        KillProxy::start_with(upstream, marker, OnPut::Kill)
    }

    /// Lets a held request go on to the server.
    fn release(&self) {
        let (lock, cv) = &*self.released;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    fn start_with(upstream: &str, marker: &'static str, on_put: OnPut) -> KillProxy {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::{Arc, Condvar, Mutex};
        let pid = Arc::new(AtomicU32::new(0));
        let fired = Arc::new(AtomicBool::new(false));
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let (p, f, rel) = (pid.clone(), fired.clone(), released.clone());
        let url = proxy(upstream, move |chunk, _| {
            let hit = chunk.windows(4).enumerate().any(|(i, w)| {
                w == b"PUT "
                    && (i == 0 || chunk[i - 1] == b'\n')
                    && chunk[i..]
                        .split(|b| *b == b'\n')
                        .next()
                        .is_some_and(|line| {
                            line.windows(marker.len()).any(|m| m == marker.as_bytes())
                        })
            });
            if hit && on_put == OnPut::Hold && !f.swap(true, Ordering::SeqCst) {
                let (lock, cv) = &*rel;
                let mut go = lock.lock().unwrap();
                while !*go {
                    go = cv.wait(go).unwrap();
                }
            } else if hit && !f.swap(true, Ordering::SeqCst) {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while p.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
                let _ = Command::new("kill")
                    .args(["-KILL", &p.load(Ordering::SeqCst).to_string()])
                    .status();
                return Pass::Close;
            }
            Pass::Forward
        });
        KillProxy {
            url,
            pid,
            fired,
            released,
        }
    }
}

/// What a [`proxy`] does with a chunk a client sent.
enum Pass {
    /// Send it on to the server.
    Forward,
    /// Send nothing more of this connection (what the hook wrote to the client stays).
    Close,
}

/// A loopback proxy in front of `upstream` (`http://host:port`): the server's answers are
/// copied back as they are, and each chunk a client sends is shown to `on_chunk` (with the
/// client's connection, to answer it itself) before it is passed on. Returns its URL.
fn proxy(
    upstream: &str,
    on_chunk: impl Fn(&[u8], &mut std::net::TcpStream) -> Pass + Send + Sync + 'static,
) -> String {
    let upstream = upstream.trim_start_matches("http://").to_string();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let on_chunk = std::sync::Arc::new(on_chunk);
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let on_chunk = on_chunk.clone();
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            // Server to client: a plain copy.
            let mut to_client = client.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut s_in = server;
                let _ = std::io::copy(&mut s_in, &mut to_client);
            });
            // Client to server: copied chunk by chunk, each looked at before it is passed on.
            let mut c_out = client;
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    match on_chunk(&buf[..n], &mut c_out) {
                        Pass::Forward => {
                            if s_out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Pass::Close => {
                            let _ = c_out.shutdown(std::net::Shutdown::Both);
                            let _ = s_out.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                }
            });
        }
    });
    url
}

/// A host's upload holds the store lock only while it reads the object: a `gc` on that host
/// (which takes the lock exclusively, and makes every new activation queue behind it) finishes
/// while the tree's put is still on the wire, and the upload then completes.
#[test]
fn a_gc_never_waits_for_an_upload_on_the_wire() {
    let test = "a_gc_never_waits_for_an_upload_on_the_wire";
    let Some(moto) = support::moto(test) else {
        return;
    };
    // 12 MiB that does not compress: a multipart upload. (Before the fix its first part went
    // out while the archive was being encoded under the lock; a small tree's single put came
    // after the encoding even then.)
    let f = Fleet::incompressible(moto, 47, 3);
    let proxy = KillProxy::start_with(&moto.endpoint(), "/stepman-remote-v1/trees/", OnPut::Hold);
    let h = f.home("a");
    let mut c = f.activate(moto, &h, false);
    c.env("AWS_ENDPOINT_URL", &proxy.url)
        .env("STEPMAN_REMOTE_TIMEOUT", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut host = c.spawn().expect("spawn");
    let fired = || proxy.fired.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !fired() && std::time::Instant::now() < deadline {
        assert!(
            host.try_wait().unwrap().is_none(),
            "the host exited before its tree's put"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(fired(), "the host never put its tree");
    // The tree's put is held: the host is inside its upload.
    let mut gc = support::stepman(&h, ["gc"]);
    gc.stdout(Stdio::null()).stderr(Stdio::null());
    let mut gc = gc.spawn().expect("spawn gc");
    // gc itself takes milliseconds here; the bound is far below what the held request would
    // take to time out (the client gives up on it after about 30 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let gc_status = loop {
        if let Some(s) = gc.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let still_uploading = host.try_wait().unwrap().is_none();
    proxy.release();
    if gc_status.is_none() {
        let _ = gc.kill();
        let _ = gc.wait();
    }
    let o = host.wait_with_output().expect("wait");
    assert!(
        gc_status.is_some(),
        "gc waited 15 s for a host's upload on the wire (the store lock held over the network)"
    );
    assert!(
        gc_status.is_some_and(|s| s.success()),
        "gc failed: {gc_status:?}"
    );
    assert!(
        still_uploading,
        "the host had left its upload when gc finished"
    );
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(&f.src, &h.join("step"));
    support::assert_fsck_clean(&h);
    assert_eq!(f.keys(moto, "trees/").len(), 1, "the held tree was put");
    assert_eq!(
        f.keys(moto, "names/").len(),
        1,
        "the name was put after its tree"
    );
    let o = support::output(&mut f.verify(moto, &h, false));
    assert_eq!(o.status.code(), Some(0), "{}", support::describe(&o));
}

#[test]
fn uploaders_killed_inside_their_upload_leave_no_name_without_its_tree() {
    let test = "uploaders_killed_inside_their_upload_leave_no_name_without_its_tree";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let _alone = support::alone();
    let f = Fleet::new(moto, 43);
    let mut verify = f.verify(moto, &f.home("v"), true);
    // Host by host, each killed one step further into the sequence: at its lease, at its tree
    // (the name not yet put), at its name (the tree already there). The lease of a killed host
    // is taken over at once (TTL 0).
    for (n, marker) in [
        "/stepman-remote-v1/leases/",
        "/stepman-remote-v1/trees/",
        "/stepman-remote-v1/names/",
    ]
    .into_iter()
    .enumerate()
    {
        let proxy = KillProxy::start(&moto.endpoint(), marker);
        let h = f.home(&format!("k{n}"));
        let mut c = f.activate(moto, &h, false);
        c.env("AWS_ENDPOINT_URL", &proxy.url)
            .env("STEPMAN_REMOTE_LEASE_TTL", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn");
        proxy
            .pid
            .store(child.id(), std::sync::atomic::Ordering::SeqCst);
        let status = child.wait().expect("wait");
        assert!(
            proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
            "host {n} never put {marker} ({status})"
        );
        assert!(!status.success(), "host {n} was to be killed at {marker}");
        let o = support::output(&mut verify);
        assert_eq!(
            o.status.code(),
            Some(0),
            "after a kill at its {marker} put: {}",
            support::describe(&o)
        );
        assert_eq!(
            f.keys(moto, "names/"),
            Vec::<String>::new(),
            "killed at {marker}"
        );
        let trees = f.keys(moto, "trees/").len();
        assert_eq!(trees, usize::from(n == 2), "trees after a kill at {marker}");
    }
    // The next host finds the tree the last one put, puts the name, and verify is clean.
    let last = f.home("last");
    support::ok_stdout(
        &support::output(&mut f.activate(moto, &last, false)),
        "last host",
    );
    support::assert_same_tree(&f.src, &last.join("step"));
    assert_eq!(f.keys(moto, "names/").len(), 1);
    assert_eq!(f.keys(moto, "trees/").len(), 1);
    let o = support::output(&mut verify);
    assert_eq!(o.status.code(), Some(0), "{}", support::describe(&o));
    // And a fresh host takes the step from the remote, not the origin.
    let before = f.origin.count(STEP_ZIP);
    let fresh = f.home("fresh");
    support::ok_stdout(
        &support::output(&mut f.activate(moto, &fresh, false)),
        "fresh host",
    );
    support::assert_same_tree(&f.src, &fresh.join("step"));
    assert_eq!(
        f.origin.count(STEP_ZIP),
        before,
        "the fresh host used the origin"
    );
}

/// `remote verify` fetches a tree that several names share once, and a damaged one is reported
/// under every name that claims it.
#[test]
fn verify_reports_every_name_of_a_shared_damaged_tree() {
    let test = "verify_reports_every_name_of_a_shared_damaged_tree";
    if let Some(moto) = support::moto(test) {
        verify_every_name(moto, test);
    }
}

pub(crate) fn verify_every_name(tier: &dyn Tier, test: &str) {
    let _ = test;
    let f = Fleet::new(tier, 31);
    // 1.1.0 ships the same archive as 1.0.0: two names, one tree.
    f.add_version("1.1.0", &f.src);
    let host = f.home("one");
    support::ok_stdout(
        &support::output(&mut f.activate(tier, &host, false)),
        "1.0.0",
    );
    let mut second = f.activate_version(tier, &host, false, "1.1.0");
    support::ok_stdout(&support::output(&mut second), "1.1.0");
    assert_eq!(f.keys(tier, "names/").len(), 2);
    let trees = f.keys(tier, "trees/");
    assert_eq!(trees.len(), 1, "{trees:?}");

    let mut verify = f.verify(tier, &host, true);
    let o = support::output(&mut verify);
    assert_eq!(o.status.code(), Some(0), "{}", support::describe(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["names"], 2, "{report}");
    assert_eq!(
        report["trees"], 1,
        "one tree fetched for both names: {report}"
    );

    let other = f.dir.path().join("other");
    support::make_tree(&other, 98, 5);
    tier.put(&f.bucket, &trees[0], &support::targz_tree(&other));
    let o = support::output(&mut verify);
    assert_eq!(o.status.code(), Some(1), "{}", support::describe(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let damaged: Vec<&str> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(damaged.len(), 2, "{report}");
    assert!(
        damaged.iter().any(|n| n.ends_with("fleet/1.0.0"))
            && damaged.iter().any(|n| n.ends_with("fleet/1.1.0")),
        "{report}"
    );
    assert!(
        report["damaged"][1]["problem"]
            .as_str()
            .unwrap()
            .contains("hashes to"),
        "{report}"
    );
}

/// A tree whose archive is larger than one upload part (8 MiB) is spooled and goes up as a
/// multipart upload; the next host takes it from the remote, byte-identical. (Before, an
/// archive past 16 MiB was not uploaded at all.)
#[test]
fn a_tree_larger_than_one_part_is_shared_through_a_multipart_upload() {
    let test = "a_tree_larger_than_one_part_is_shared_through_a_multipart_upload";
    if let Some(moto) = support::moto(test) {
        multipart(moto, test);
    }
}

pub(crate) fn multipart(tier: &dyn Tier, test: &str) {
    let _ = test;
    // 20 MiB that does not compress: three parts.
    let f = Fleet::incompressible(tier, 41, 5);
    let first = f.home("first");
    let mut cmd = f.activate(tier, &first, false);
    let o = support::output(&mut cmd);
    support::ok_stdout(&o, "first host");
    let trees = f.keys(tier, "trees/");
    assert_eq!(trees.len(), 1, "the large tree was uploaded: {trees:?}");
    assert_eq!(f.keys(tier, "names/").len(), 1);

    let second = f.home("second");
    let o = support::output(&mut f.activate(tier, &second, false));
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(&f.src, &second.join("step"));
    support::assert_fsck_clean(&second);
    assert_eq!(
        f.origin.count(STEP_ZIP),
        1,
        "the second host took the tree from the remote"
    );
    let mut verify = f.verify(tier, &second, false);
    let o = support::output(&mut verify);
    assert_eq!(o.status.code(), Some(0), "{}", support::describe(&o));
}

/// A static HTTPS server on 127.0.0.1 (Python's, with a self-signed certificate made by the
/// `openssl` CLI) serving `root`; `None`, with a message, without `openssl` or `python3`.
struct StaticHttps {
    child: Child,
    port: u16,
    /// The CA that signed its certificate, for `SSL_CERT_FILE`.
    cert: std::path::PathBuf,
}

impl StaticHttps {
    fn start(test: &str, root: &std::path::Path, work: &std::path::Path) -> Option<StaticHttps> {
        // A CA, and a leaf for 127.0.0.1 that it signs (a self-signed leaf is refused as a CA
        // used as an end entity).
        let ca = work.join("ca.pem");
        let ca_key = work.join("ca-key.pem");
        let cert = work.join("cert.pem");
        let key = work.join("key.pem");
        let csr = work.join("leaf.csr");
        let ext = work.join("leaf.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let openssl = |args: &[&std::ffi::OsStr]| {
            matches!(
                Command::new("openssl")
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status(),
                Ok(s) if s.success()
            )
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        let made = openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("1"),
            os("-subj"),
            os("/CN=stepman test CA"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]) && openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=127.0.0.1"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]) && openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("1"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        if !made {
            eprintln!("{test}: skipped: no openssl to make a certificate");
            return None;
        }
        let script = "import http.server, ssl, sys, functools\n\
            h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
            s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n\
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            c.load_cert_chain(sys.argv[2], sys.argv[3])\n\
            s.socket = c.wrap_socket(s.socket, server_side=True)\n\
            print(s.server_address[1], flush=True)\n\
            s.serve_forever()\n";
        let mut child = match Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(root)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{test}: skipped: no python3 ({e})");
                return None;
            }
        };
        let mut line = String::new();
        let out = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
        let port = line.trim().parse().expect("the server printed its port");
        Some(StaticHttps {
            child,
            port,
            cert: ca,
        })
    }
}

impl Drop for StaticHttps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A read-only `https://` remote (a static copy of a tier on a plain HTTPS server, trusted
/// through `SSL_CERT_FILE`) serves a host its step: no origin download, the same tree, and no
/// upload or lease attempted.
#[test]
fn a_static_https_copy_of_the_tier_serves_hosts_read_only() {
    let test = "a_static_https_copy_of_the_tier_serves_hosts_read_only";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let f = Fleet::new(moto, 37);
    let first = f.home("first");
    support::ok_stdout(
        &support::output(&mut f.activate(moto, &first, false)),
        "first host",
    );
    // The tier, copied key by key into a directory a static server serves.
    let site = f.dir.path().join("site");
    let base = "fleet/stepman-remote-v1/";
    let keys = moto.keys(&f.bucket, base);
    assert_eq!(keys.len(), 2, "one name and one tree: {keys:?}");
    for key in &keys {
        let path = site
            .join("stepman-remote-v1")
            .join(key.strip_prefix(base).unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, moto.get(&f.bucket, key).unwrap()).unwrap();
    }
    let Some(https) = StaticHttps::start(test, &site, f.dir.path()) else {
        return;
    };
    let second = f.home("second");
    let mut cmd = f.activate(moto, &second, false);
    cmd.env(
        "STEPMAN_REMOTE",
        format!("https://127.0.0.1:{}/", https.port),
    )
    .env("SSL_CERT_FILE", &https.cert);
    let o = support::output(&mut cmd);
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(&f.src, &second.join("step"));
    support::assert_fsck_clean(&second);
    assert_eq!(
        f.origin.count(STEP_ZIP),
        1,
        "the second host read the https remote: {}",
        support::describe(&o)
    );
    let err = support::stderr_of(&o);
    assert!(!err.contains("warn"), "a clean hit: {err}");

    // A step the copy does not have: the origin, and nothing put (read only).
    std::fs::remove_dir_all(site.join("stepman-remote-v1/names")).unwrap();
    let third = f.home("third");
    let mut cmd = f.activate(moto, &third, false);
    cmd.env(
        "STEPMAN_REMOTE",
        format!("https://127.0.0.1:{}/", https.port),
    )
    .env("SSL_CERT_FILE", &https.cert);
    let o = support::output(&mut cmd);
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(&f.src, &third.join("step"));
    assert_eq!(f.origin.count(STEP_ZIP), 2, "a miss goes to the origin");
    let err = support::stderr_of(&o);
    assert!(!err.to_lowercase().contains("upload"), "{err}");
}

/// `remote push` of many steps uploads them several at a time: every name and tree arrives, the
/// report lists the steps in order, and the tier verifies clean.
#[test]
fn remote_push_of_many_steps_uploads_every_one() {
    let test = "remote_push_of_many_steps_uploads_every_one";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let f = Fleet::new(moto, 61);
    let lib = f.lib.to_str().unwrap();
    let versions: Vec<String> = (1..=9).map(|i| format!("1.{i}.0")).collect();
    for (i, v) in versions.iter().enumerate() {
        let src = f.dir.path().join(format!("src-{v}"));
        support::make_tree(&src, 100 + i as u64, 20);
        f.add_version(v, &src);
    }
    let plain = f.home("plain");
    for v in &versions {
        let mut act = support::stepman(
            &plain,
            ["activate", "-c", lib, "-i", "fleet", "-v", v, "-p"],
        );
        act.arg(plain.join(format!("step-{v}")));
        support::ok_stdout(&support::output(&mut act), "activate without a remote");
    }
    let remote = format!("s3://{}/fleet", f.bucket);
    let mut push = support::stepman(&plain, ["remote", "push", "-c", lib, "--remote", &remote]);
    moto.env(&mut push);
    let out = support::ok_stdout(&support::output(&mut push), "remote push");
    let listed: Vec<&str> = out
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "in order: {out}");
    assert_eq!(listed.len(), 9, "{out}");
    assert!(out.lines().all(|l| l.ends_with("Uploaded")), "{out}");
    assert_eq!(f.keys(moto, "names/").len(), 9);
    assert_eq!(f.keys(moto, "trees/").len(), 9);
    let o = support::output(&mut f.verify(moto, &f.home("v"), true));
    assert_eq!(o.status.code(), Some(0), "{}", support::describe(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["names"], 9, "{report}");
    assert_eq!(report["trees"], 9, "{report}");
}

/// A `git::URL@COMMIT` step is shared like a StepLib step: the first host clones it and uploads
/// its tree under `_git/<URL id>/<commit>`; a second host gets the same tree from the remote
/// with the repository gone (nothing to clone), and `remote push --all` finds it there.
#[test]
fn git_steps_are_shared_through_the_remote() {
    let test = "git_steps_are_shared_through_the_remote";
    if let Some(moto) = support::moto(test) {
        git_steps_shared(moto, test);
    }
}

pub(crate) fn git_steps_shared(tier: &dyn Tier, test: &str) {
    let _ = test;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("step.sh"), "#!/bin/sh\necho shared\n").unwrap();
    std::fs::write(src.join("step.yml"), "title: Shared\n").unwrap();
    std::fs::write(src.join("lib/util.sh"), "true\n").unwrap();
    let repo = support::git_repo(dir.path(), &src, "1.0.0");
    let bucket = tier.bucket("git-steps");
    let remote = tier.remote(&bucket, "fleet");
    let step = format!("git::{}@{}", repo.url, repo.tagged);
    let activate = |host: &str| {
        let home = dir.path().join(host);
        let dest = dir.path().join(format!("{host}-step"));
        let mut cmd = support::stepman(&home, ["activate", "-i", &step, "-p"]);
        cmd.arg(&dest).env("STEPMAN_REMOTE", &remote);
        tier.env(&mut cmd);
        let o = support::output(&mut cmd);
        assert!(o.status.success(), "{host}: {}", support::describe(&o));
        support::assert_same_tree(&src, &dest);
        support::assert_fsck_clean(&home);
        home
    };
    activate("a");
    let names = tier.keys(&bucket, "fleet/stepman-remote-v1/names/_git/");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(&repo.tagged), "{names:?}");

    // The repository is gone: only the remote can give the second host the tree.
    let bare = repo.url.strip_prefix("file://").unwrap();
    std::fs::rename(bare, format!("{bare}.gone")).unwrap();
    let b = activate("b");

    // `remote push --all` of the second host finds the name there.
    let mut push = support::stepman(&b, ["remote", "push", "--all", "--remote", &remote]);
    tier.env(&mut push);
    let out = support::ok_stdout(&support::output(&mut push), "remote push --all");
    assert!(
        out.lines()
            .any(|l| l.starts_with("_git/") && l.ends_with("AlreadyThere")),
        "{out}"
    );
}

/// A loopback proxy in front of the S3 server that refuses every write (`PUT`, `POST`,
/// `DELETE`) with S3's `403 AccessDenied` and passes reads on: the server as a host whose
/// credentials allow reading only sees it. Counts the writes it refused.
struct DenyWrites {
    url: String,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DenyWrites {
    fn start(upstream: &str) -> DenyWrites {
        use std::io::Write;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        let url = proxy(upstream, move |chunk, client| {
            // A request starts a chunk (the client sends each head in one write).
            if ![&b"PUT "[..], b"POST ", b"DELETE "]
                .iter()
                .any(|m| chunk.starts_with(m))
            {
                return Pass::Forward;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
            let _ = write!(
                client,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            Pass::Close
        });
        DenyWrites { url, refused }
    }

    fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A host whose credentials allow reading only (the default mode is read-write): it takes what
/// the remote has, and at its first refused write (the lease of a step the remote lacks) warns
/// once and goes on reading through only: the step comes from the origin, and no other write
/// is tried in that process (two missing steps preloaded: one refused write in all).
#[test]
fn a_host_whose_credentials_only_read_reads_through_and_stops_writing() {
    let test = "a_host_whose_credentials_only_read_reads_through_and_stops_writing";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let f = Fleet::new(moto, 83);
    for v in ["1.1.0", "1.2.0"] {
        f.add_version(v, &f.src);
    }
    // A writer puts 1.0.0 there.
    support::ok_stdout(
        &support::output(&mut f.activate(moto, &f.home("writer"), false)),
        "writer",
    );
    let proxy = DenyWrites::start(&moto.endpoint());
    let reader = f.home("reader");
    let through = |cmd: &mut Command| {
        cmd.env("AWS_ENDPOINT_URL", &proxy.url);
    };
    let mut hit = f.activate(moto, &reader, false);
    through(&mut hit);
    let o = support::output(&mut hit);
    assert!(o.status.success(), "{}", support::describe(&o));
    support::assert_same_tree(&f.src, &reader.join("step"));
    assert_eq!(f.origin.count(STEP_ZIP), 1, "the hit came from the remote");
    assert_eq!(proxy.refused(), 0, "a hit writes nothing");
    assert!(
        !support::stderr_of(&o).contains("WARN"),
        "{}",
        support::stderr_of(&o)
    );

    let lib = f.lib.to_str().unwrap();
    let mut pre = support::stepman(
        &reader,
        [
            "preload",
            "-c",
            lib,
            "fleet@1.1.0",
            "fleet@1.2.0",
            "--jobs",
            "1",
        ],
    );
    moto.env(&mut pre);
    pre.env("STEPMAN_REMOTE", &f.remote);
    through(&mut pre);
    let o = support::output(&mut pre);
    assert!(o.status.success(), "{}", support::describe(&o));
    let err = support::stderr_of(&o);
    assert_eq!(
        err.matches("refuses this host's writes").count(),
        1,
        "one warning: {err}"
    );
    assert_eq!(proxy.refused(), 1, "one write tried in all: {err}");
    assert_eq!(f.origin.count("/steps/fleet/1.1.0/step.zip"), 1);
    assert_eq!(f.origin.count("/steps/fleet/1.2.0/step.zip"), 1);
    assert_eq!(f.keys(moto, "names/").len(), 1, "only the writer's name");
    support::assert_fsck_clean(&reader);
}

/// Keys from an AWS profile's shared files, when no variable gives them: hosts whose only
/// credentials are a profile (`AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`, its region in
/// `AWS_CONFIG_FILE`) upload and read the tier; `remote status` names the profile and the file,
/// never the keys.
#[test]
fn s3_keys_and_region_come_from_an_aws_profile_when_no_variable_gives_them() {
    let test = "s3_keys_and_region_come_from_an_aws_profile_when_no_variable_gives_them";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let f = Fleet::new(moto, 89);
    let aws = f.dir.path().join("aws");
    std::fs::create_dir_all(&aws).unwrap();
    let credentials = aws.join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = unused\naws_secret_access_key = unused\n\n\
         [ci]\naws_access_key_id = testing\naws_secret_access_key = profile-secret-value\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile ci]\nregion = us-east-1\ns3 =\n  addressing_style = path\n",
    )
    .unwrap();
    let with_profile = |cmd: &mut Command| {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_PROFILE", "ci")
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_CONFIG_FILE", aws.join("config"));
    };
    for host in ["a", "b"] {
        let home = f.home(host);
        let mut cmd = f.activate(moto, &home, false);
        with_profile(&mut cmd);
        let o = support::output(&mut cmd);
        assert!(o.status.success(), "{host}: {}", support::describe(&o));
        assert!(
            !support::stderr_of(&o).contains("WARN"),
            "{host}: {}",
            support::stderr_of(&o)
        );
        support::assert_same_tree(&f.src, &home.join("step"));
    }
    assert_eq!(f.keys(moto, "names/").len(), 1, "host a uploaded");
    assert_eq!(f.origin.count(STEP_ZIP), 1, "host b read the remote");

    let mut status = support::stepman(&f.home("a"), ["remote", "status", "--json"]);
    moto.env(&mut status);
    status.env("STEPMAN_REMOTE", &f.remote);
    with_profile(&mut status);
    let o = support::output(&mut status);
    let out = support::ok_stdout(&o, "remote status");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["aws_profile"]["name"], "ci", "{s}");
    assert_eq!(
        s["aws_profile"]["file"],
        credentials.display().to_string(),
        "{s}"
    );
    assert!(
        !format!("{out}{}", support::stderr_of(&o)).contains("profile-secret-value"),
        "{out}"
    );
}

/// `preload --json` says where each downloaded step came from (`"from": "remote"` or
/// `"origin"`), and its line says "from the remote": a pre-bake job sees what the tier saved.
#[test]
fn preload_says_which_steps_came_from_the_remote() {
    let test = "preload_says_which_steps_came_from_the_remote";
    let Some(moto) = support::moto(test) else {
        return;
    };
    let f = Fleet::new(moto, 97);
    f.add_version("1.1.0", &f.src);
    support::ok_stdout(
        &support::output(&mut f.activate(moto, &f.home("writer"), false)),
        "writer",
    );
    let reader = f.home("reader");
    let lib = f.lib.to_str().unwrap();
    let mut pre = support::stepman(
        &reader,
        ["preload", "-c", lib, "fleet@1.0.0", "fleet@1.1.0", "--json"],
    );
    moto.env(&mut pre);
    pre.env("STEPMAN_REMOTE", &f.remote);
    let o = support::output(&mut pre);
    let out = support::ok_stdout(&o, "preload");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let from: std::collections::BTreeMap<String, String> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "downloaded", "{report}");
            (
                s["version"].as_str().unwrap().to_string(),
                s["from"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(from["1.0.0"], "remote", "{report}");
    assert_eq!(from["1.1.0"], "origin", "{report}");
    let err = support::stderr_of(&o);
    assert!(
        err.contains("fleet@1.0.0: downloaded from the remote"),
        "{err}"
    );
}
