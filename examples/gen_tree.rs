//! Writes a deterministic Go-step-sized source tree for the benchmarks (PRODUCT §6): about 900
//! files and 13 MB in all, shaped like a Go step with its vendored dependencies: many small `.go`
//! source files, some larger ones, a few binary blobs of a few MB, directories about six deep, a
//! few executables and two relative symlinks.
//!
//! Usage: `cargo run --release --example gen_tree -- <DIR>` (DIR must not exist). The same
//! program also backs `benches/store.rs`, which includes this file as a module.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What [`generate`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    /// Regular files.
    pub(crate) files: usize,
    /// Directories, the root excluded.
    pub(crate) dirs: usize,
    /// Symlinks.
    pub(crate) symlinks: usize,
    /// Bytes of file content.
    pub(crate) bytes: u64,
}

/// splitmix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform in `[lo, hi)`.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> u64 {
        (lo * (hi / lo).powf(self.unit())) as u64
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "config", "client", "server", "request", "response", "handler", "error", "context", "buffer",
    "reader", "writer", "stream", "token", "parse", "format", "value", "index", "count", "length",
    "result", "option", "status", "header", "body", "cache", "store", "entry", "record", "field",
    "schema", "commit", "branch", "remote", "origin", "clone", "fetch", "checkout", "submodule",
    "depth", "retry", "timeout", "logger", "level", "message", "output", "input", "env", "path",
    "file", "dir", "name", "version", "step", "build", "deploy", "artifact", "archive", "upload",
    "download", "signal", "process", "command", "exec", "args", "flags", "opts", "keychain",
    "certificate", "profile", "provision", "xcode", "gradle", "module", "variant", "target",
    "scheme", "simulator", "device", "platform", "arch", "url", "host", "port", "user", "secret",
    "password", "ssh", "key", "agent", "proxy", "tls", "json", "yaml", "plist", "manifest",
    "bundle", "identifier", "team", "export", "method", "report", "test", "coverage", "junit",
];

#[rustfmt::skip]
const IDENTS: &[&str] = &[
    "err", "ctx", "cfg", "buf", "r", "w", "n", "i", "opts", "logger", "cmd", "resp", "req", "s",
];

#[rustfmt::skip]
const TYPES: &[&str] = &[
    "string", "int", "bool", "error", "[]byte", "[]string", "map[string]string", "*Config",
    "io.Reader", "io.Writer", "context.Context", "time.Duration", "uint64", "*os.File",
];

fn camel(rng: &mut Rng, words: usize, exported: bool) -> String {
    let mut s = String::new();
    for k in 0..words {
        let w = rng.pick(WORDS);
        if k == 0 && !exported {
            s.push_str(w);
        } else {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        }
    }
    s
}

/// Go-looking source text of about `size` bytes.
fn go_source(rng: &mut Rng, pkg: &str, size: u64) -> Vec<u8> {
    let mut out = String::with_capacity(size as usize + 256);
    out.push_str("// Code generated for stepman benchmarks. DO NOT EDIT.\n\n");
    out.push_str(&format!("package {pkg}\n\nimport (\n"));
    for imp in ["context", "fmt", "io", "os", "strings", "time"] {
        if rng.below(2) == 0 {
            out.push_str(&format!("\t\"{imp}\"\n"));
        }
    }
    out.push_str(")\n\n");
    while (out.len() as u64) < size {
        match rng.below(6) {
            0 => {
                out.push_str(&format!("// {} ", camel(rng, 2, true)));
                for _ in 0..(4 + rng.below(10)) {
                    out.push_str(rng.pick(WORDS));
                    out.push(' ');
                }
                out.push_str("the given value.\n");
            }
            1 => {
                let t = camel(rng, 2, true);
                out.push_str(&format!("type {t} struct {{\n"));
                for _ in 0..(2 + rng.below(6)) {
                    let words = 1 + rng.below(2) as usize;
                    let f = camel(rng, words, true);
                    let ty = rng.pick(TYPES);
                    let tag = rng.pick(WORDS);
                    out.push_str(&format!("\t{f} {ty} `json:\"{tag},omitempty\"`\n"));
                }
                out.push_str("}\n\n");
            }
            2 => {
                out.push_str(&format!(
                    "const {} = {}\n",
                    camel(rng, 2, true),
                    rng.below(4096)
                ));
            }
            _ => {
                let words = 1 + rng.below(3) as usize;
                let exported = rng.below(2) == 0;
                let f = camel(rng, words, exported);
                let a = rng.pick(IDENTS);
                let ty = rng.pick(TYPES);
                out.push_str(&format!("func {f}({a} {ty}) error {{\n"));
                for _ in 0..(2 + rng.below(8)) {
                    let v = rng.pick(IDENTS);
                    match rng.below(4) {
                        0 => out.push_str(&format!(
                            "\tif {v} != nil {{\n\t\treturn fmt.Errorf(\"{} {}: %w\", {v})\n\t}}\n",
                            rng.pick(WORDS),
                            rng.pick(WORDS)
                        )),
                        1 => out.push_str(&format!(
                            "\t{v} := {}({a}, \"{}\")\n",
                            camel(rng, 2, false),
                            rng.pick(WORDS)
                        )),
                        2 => out.push_str(&format!(
                            "\tfor _, {v} := range {} {{\n\t\t_ = {v}\n\t}}\n",
                            camel(rng, 1, false)
                        )),
                        _ => out.push_str(&format!(
                            "\tlog.Printf(\"{} %s\", {v}.{}())\n",
                            rng.pick(WORDS),
                            camel(rng, 1, true)
                        )),
                    }
                }
                out.push_str("\treturn nil\n}\n\n");
            }
        }
    }
    out.into_bytes()
}

/// Binary-looking bytes: incompressible runs, tables and zero padding, roughly 2:1 with gzip.
fn blob(rng: &mut Rng, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
    while (out.len() as u64) < size {
        let n = 512 + rng.below(8192) as usize;
        match rng.below(10) {
            0..=4 => (0..n / 8).for_each(|_| out.extend_from_slice(&rng.next().to_le_bytes())),
            5..=7 => {
                let base = rng.next() as u32;
                (0..n / 4)
                    .for_each(|k| out.extend_from_slice(&(base + k as u32 * 16).to_le_bytes()))
            }
            _ => out.resize(out.len() + n, 0),
        }
    }
    out.truncate(size as usize);
    out
}

fn write_file(path: &Path, data: &[u8], exec: bool, stats: &mut Stats) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }))?;
    stats.files += 1;
    stats.bytes += data.len() as u64;
    Ok(())
}

/// Writes the tree under `root`, which must not exist.
pub(crate) fn generate(root: &Path) -> io::Result<Stats> {
    let mut rng = Rng(0x57e9_3a11_0000_0001);
    let mut stats = Stats::default();
    fs::create_dir(root)?;

    // The step's own files.
    let top: [(&str, u64); 7] = [
        ("main.go", 9_000),
        ("step.yml", 4_000),
        ("README.md", 6_000),
        ("go.mod", 900),
        ("go.sum", 14_000),
        ("bitrise.yml", 3_000),
        ("LICENSE", 1_100),
    ];
    for (name, size) in top {
        let data = go_source(&mut rng, "main", size);
        write_file(&root.join(name), &data, false, &mut stats)?;
    }

    // Directories: vendor/github.com/<org>/<repo>/<pkg>/<sub> (six deep) and a few step packages.
    let mut dirs: Vec<String> = Vec::new();
    for d in [
        "e2e",
        "e2e/testdata",
        "cmd",
        "cmd/tool",
        "internal",
        "internal/config",
    ] {
        dirs.push(d.to_string());
    }
    for o in 0..14 {
        let org = format!("vendor/github.com/{}{o}", rng.pick(WORDS));
        for r in 0..(1 + rng.below(3)) {
            let repo = format!("{org}/go-{}{r}", rng.pick(WORDS));
            dirs.push(repo.clone());
            for p in 0..(1 + rng.below(4)) {
                let pkg = format!("{repo}/{}{p}", rng.pick(WORDS));
                dirs.push(pkg.clone());
                if rng.below(2) == 0 {
                    dirs.push(format!("{pkg}/{}", rng.pick(WORDS)));
                }
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        fs::create_dir_all(root.join(d))?;
    }
    let mut all_dirs: Vec<&str> = Vec::new();
    for d in &dirs {
        let mut p = d.as_str();
        loop {
            all_dirs.push(p);
            match p.rsplit_once('/') {
                Some((parent, _)) => p = parent,
                None => break,
            }
        }
    }
    all_dirs.sort_unstable();
    all_dirs.dedup();
    stats.dirs = all_dirs.len();

    // Source files: many small, some larger; names unique per directory.
    let mut n = 0;
    let mut emit = |rng: &mut Rng, count: usize, lo: f64, hi: f64, stats: &mut Stats| {
        for _ in 0..count {
            let d = &dirs[rng.below(dirs.len() as u64) as usize];
            let pkg = d.rsplit('/').next().unwrap_or("main").replace('-', "");
            let ext = match rng.below(20) {
                0 => ".md",
                1 => ".s",
                2 => ".txt",
                3..=6 => "_test.go",
                _ => ".go",
            };
            let name = format!("{}_{n}{ext}", rng.pick(WORDS));
            n += 1;
            let size = rng.log_uniform(lo, hi);
            let data = go_source(rng, &pkg, size);
            write_file(&root.join(d).join(name), &data, false, stats)?;
        }
        Ok::<(), io::Error>(())
    };
    emit(&mut rng, 830, 300.0, 20_000.0, &mut stats)?;
    emit(&mut rng, 50, 30_000.0, 200_000.0, &mut stats)?;

    // Scripts and prebuilt binaries: the executables.
    for (i, name) in ["e2e/run.sh", "cmd/tool/build.sh", "internal/gen.sh"]
        .iter()
        .enumerate()
    {
        let mut data = b"#!/bin/bash\nset -euo pipefail\n".to_vec();
        data.extend(go_source(&mut rng, "script", 800 + 300 * i as u64));
        write_file(&root.join(name), &data, true, &mut stats)?;
    }
    for (name, size, exec) in [
        ("cmd/tool/step-linux-amd64", 2_000_000, true),
        ("cmd/tool/step-darwin-arm64", 1_600_000, true),
        ("e2e/testdata/fixture.ipa", 900_000, false),
    ] {
        let data = blob(&mut rng, size);
        write_file(&root.join(name), &data, exec, &mut stats)?;
    }

    // Two relative symlinks that stay inside the tree.
    std::os::unix::fs::symlink("../bitrise.yml", root.join("e2e/bitrise.yml"))?;
    std::os::unix::fs::symlink("step-linux-amd64", root.join("cmd/tool/step"))?;
    stats.symlinks = 2;
    Ok(stats)
}

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: gen_tree <DIR>");
        std::process::exit(2);
    };
    let s = generate(Path::new(&dir))?;
    println!(
        "{} files, {} dirs, {} symlinks, {} bytes",
        s.files, s.dirs, s.symlinks, s.bytes
    );
    Ok(())
}
