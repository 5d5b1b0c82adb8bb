//! Criterion benchmarks of the store engine through the library API, on a Go-step-sized tree
//! (`examples/gen_tree.rs`: ~900 files, ~13 MB) and its tar.gz:
//! - `import/tar.gz/{no-fsync,durable}`: `Store::import` of the tar.gz into a fresh store;
//! - `fsck/1-object`: `fsck::fsck` of a store holding the tree;
//! - `export/go-step`: `Store::export` into a fresh directory.
//!
//! The ratios against `tar`, `b3sum` and `cp -a` (README "Performance") are printed by `benches/ratios.sh`.
//! Nothing is deleted and re-created on the measured path: every iteration gets a destination of
//! its own, and the outputs are kept until the benchmark ends (README "Performance": a tree re-created right
//! after an `rm -rf` is much slower to write). Each iteration's setup (not measured) ends with a
//! `sync(2)`, so no iteration runs against the background writeback of the ones before it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use stepman::{Durability, Name, Store};

#[allow(dead_code)]
#[path = "../examples/gen_tree.rs"]
mod gen_tree;

struct Fixture {
    _dir: tempfile::TempDir,
    work: PathBuf,
    tgz: PathBuf,
    tiny: PathBuf,
}

/// Where the benchmark writes: `$BENCH_DIR`, else `/var/tmp`. Test suites churn `/tmp`, and on
/// ext4 creating files near where many were just deleted is several times slower (README "Performance").
fn bench_dir() -> PathBuf {
    match std::env::var_os("BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None if Path::new("/var/tmp").is_dir() => PathBuf::from("/var/tmp"),
        None => std::env::temp_dir(),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("stepman-bench-")
        .tempdir_in(bench_dir())
        .expect("temp dir");
    let tree = dir.path().join("tree");
    let stats = gen_tree::generate(&tree).expect("generate tree");
    let tgz = dir.path().join("tree.tar.gz");
    let ok = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
        ])
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(&tgz)
        .arg(".")
        .status()
        .expect("run tar")
        .success();
    assert!(ok, "tar -czf failed");
    eprintln!(
        "bench tree: {} files, {} dirs, {} symlinks, {} bytes; tar.gz {} bytes",
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.bytes,
        std::fs::metadata(&tgz).map(|m| m.len()).unwrap_or(0)
    );
    let tiny = dir.path().join("tiny");
    std::fs::create_dir(&tiny).expect("mkdir");
    std::fs::write(tiny.join("f"), b"tiny\n").expect("write");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    Fixture {
        _dir: dir,
        work,
        tgz,
        tiny,
    }
}

/// Makes every directory under `path` writable again so the temp dir can be removed.
fn make_removable(path: &Path) {
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(path)
        .status();
}

fn benches(c: &mut Criterion) {
    let fx = fixture();
    let mut n = 0u64;
    let mut fresh = |what: &str| {
        n += 1;
        fx.work.join(format!("{what}-{n}"))
    };

    // Import into a fresh store each time; the store exists beforehand (a real cache does).
    let mut g = c.benchmark_group("import");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for (label, durability) in [
        ("tar.gz/no-fsync", Durability::NoSync),
        ("tar.gz/durable", Durability::Sync),
    ] {
        g.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let s = Store::open(&fresh("import"))
                        .expect("open store")
                        .with_durability(durability);
                    s.import(&fx.tiny, None).expect("import tiny");
                    rustix::fs::sync();
                    s
                },
                // The store is dropped after timing; its files stay until the benchmark ends.
                |s| {
                    s.import(&fx.tgz, None).expect("import");
                    s
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();

    let home = fresh("store");
    let store = Store::open(&home).expect("open store");
    let name = Name::parse("bench/go-step/1.0.0").expect("name");
    store.import(&fx.tgz, Some(&name)).expect("import");

    let mut g = c.benchmark_group("fsck");
    g.sample_size(20);
    g.bench_function("1-object", |b| {
        b.iter(|| {
            let r = stepman::fsck::fsck(&store, stepman::fsck::Repair::No).expect("fsck");
            assert!(r.is_clean(), "{:?}", r.problems);
            r
        })
    });
    g.finish();

    let mut g = c.benchmark_group("export");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.bench_function("go-step", |b| {
        b.iter_batched(
            || {
                rustix::fs::sync();
                fresh("export")
            },
            |dest| store.export(&name, &dest).expect("export"),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    make_removable(&fx.work);
    drop(fx);
    rustix::fs::sync();
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
