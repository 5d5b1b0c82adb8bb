//! Version constraints and version ordering. The input is lines: the first is a constraint, the
//! rest are versions. Checks: nothing panics; `Version` ordering is a total order on the given
//! versions (antisymmetric, transitive, consistent with equality); `select` returns one of the
//! given versions (the highest match) or None; an exact constraint selects only that version;
//! `latest` is the maximum.

#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use stepman::steplib::Constraint;
use stepman::steplib::version::{Version, latest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Some(first) = lines.next() else { return };
    let versions: Vec<&str> = lines.take(16).collect();
    let c = Constraint::parse(first);
    let _ = c.to_string();
    if let Constraint::Exact(e) = &c {
        assert_eq!(e, first.trim());
    }

    let parsed: Vec<Version> = versions.iter().map(|v| Version::parse(v)).collect();
    for a in &parsed {
        assert_eq!(a.cmp(a), Ordering::Equal);
        let _ = a.triple();
        for b in &parsed {
            let ab = a.cmp(b);
            assert_eq!(ab, b.cmp(a).reverse(), "antisymmetric: {a:?} {b:?}");
            assert_eq!(
                ab == Ordering::Equal,
                a == b,
                "Equal iff equal: {a:?} {b:?}"
            );
            for x in &parsed {
                if ab != Ordering::Greater && b.cmp(x) != Ordering::Greater {
                    assert_ne!(a.cmp(x), Ordering::Greater, "transitive: {a:?} {b:?} {x:?}");
                }
            }
        }
    }

    let sel = c.select(versions.iter().copied());
    if let Some(s) = sel {
        assert!(
            versions.contains(&s),
            "selected {s:?}, not one of the given versions"
        );
        let vs = Version::parse(s);
        for v in &versions {
            // Nothing that the constraint also selects on its own is higher.
            if c.select([*v]).is_some() {
                assert_ne!(
                    Version::parse(v).cmp(&vs),
                    Ordering::Greater,
                    "{v:?} > {s:?}"
                );
            }
        }
    } else {
        assert!(
            versions.iter().all(|v| c.select([*v]).is_none()),
            "None, but a single version matches"
        );
    }
    match &c {
        Constraint::Exact(e) => assert!(sel.is_none_or(|s| s == e)),
        Constraint::Latest => {
            assert_eq!(sel, latest(versions.iter().copied()));
            assert_eq!(sel.is_some(), !versions.is_empty());
        }
        Constraint::Major(x) => {
            if let Some((major, _, _)) = sel.and_then(|s| Version::parse(s).triple()) {
                assert_eq!(major, *x);
            }
        }
        Constraint::Minor(x, y) => {
            if let Some((major, minor, _)) = sel.and_then(|s| Version::parse(s).triple()) {
                assert_eq!((major, minor), (*x, *y));
            }
        }
    }
});
