//! Links the `stepman` binary as a position-dependent executable on Linux (glibc).
//!
//! Why: a cache-hit `step-info` or `activate` is a whole process, and its budget is 2 ms. As a PIE,
//! the dynamic loader applies about 22,000 relative relocations at every start (vtables, tables
//! of `&str`), copy-on-writing every page of `.data.rel.ro`: measured with `perf stat -r 500` on
//! `stepman version`, 1.83 ms of CPU as a PIE against 1.01 ms linked with `-no-pie`, 280 page
//! faults against 186. A non-PIE executable has those addresses fixed at link time. The cost is
//! that the executable's own image is not randomised (its shared libraries, heap, stack and
//! mmaps still are), which is what Go's default `-buildmode=exe` on Linux does too, including
//! the tool this one replaces; the crate forbids `unsafe` code.
//!
//! `STEPMAN_PIE=1` at build time keeps the toolchain's default (a PIE), for a distribution whose
//! policy requires one. Only the binaries get the flag: the library, tests, benchmarks and the
//! fuzz targets link as the toolchain decides.

fn main() {
    println!("cargo::rerun-if-env-changed=STEPMAN_PIE");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    let keep_pie = std::env::var("STEPMAN_PIE").is_ok_and(|v| v == "1");
    if linux_gnu && !keep_pie {
        println!("cargo::rustc-link-arg-bins=-no-pie");
    }
}
