//! Step versions and version constraints (README "StepLibs and activation").
//!
//! Constraints: `""` is the latest version; `X`, `X.x` and `X.x.x` the highest `X.*.*`; `X.Y` and
//! `X.Y.x` the highest `X.Y.*`; anything else names one version exactly. A constraint that
//! matches nothing is "not found", never an empty step.

use std::cmp::Ordering;

/// A parsed version for ordering: numeric dot-separated release parts, then an optional
/// pre-release (`-…`), which sorts below the release. Build metadata (`+…`) is ignored for order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    raw: &'a str,
    release: Option<Vec<u64>>,
    pre: Option<&'a str>,
}

impl<'a> Version<'a> {
    /// Parses `raw`; versions that are not numeric sort below every numeric one, by text.
    pub fn parse(raw: &'a str) -> Version<'a> {
        let no_build = raw.split_once('+').map_or(raw, |(v, _)| v);
        let (rel, pre) = match no_build.split_once('-') {
            Some((r, p)) => (r, Some(p)),
            None => (no_build, None),
        };
        let release = rel
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>();
        Version { raw, release, pre }
    }

    /// `(major, minor, patch)` of a numeric release version (missing parts are 0); `None` for a
    /// pre-release or a version that is not numeric.
    pub fn triple(&self) -> Option<(u64, u64, u64)> {
        if self.pre.is_some() {
            return None;
        }
        Some((self.part(0)?, self.part(1)?, self.part(2)?))
    }

    /// The `i`-th numeric part (missing parts are 0).
    fn part(&self, i: usize) -> Option<u64> {
        self.release
            .as_ref()
            .map(|r| r.get(i).copied().unwrap_or(0))
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.release, &other.release) {
            (None, None) => self.raw.cmp(other.raw),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => {
                let n = a.len().max(b.len());
                for i in 0..n {
                    let (x, y) = (
                        a.get(i).copied().unwrap_or(0),
                        b.get(i).copied().unwrap_or(0),
                    );
                    if x != y {
                        return x.cmp(&y);
                    }
                }
                match (self.pre, other.pre) {
                    (None, None) => self.raw.cmp(other.raw),
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                    (Some(p), Some(q)) => cmp_pre(p, q).then_with(|| self.raw.cmp(other.raw)),
                }
            }
        }
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn cmp_pre(p: &str, q: &str) -> Ordering {
    let mut a = p.split('.');
    let mut b = q.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// A version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// `""`: the latest version.
    Latest,
    /// `X`, `X.x`, `X.x.x`: the highest version with major `X`.
    Major(u64),
    /// `X.Y`, `X.Y.x`: the highest version with major `X` and minor `Y`.
    Minor(u64, u64),
    /// Anything else: exactly this version.
    Exact(String),
}

impl Constraint {
    /// Parses a constraint as the old tool's users write it.
    pub fn parse(s: &str) -> Constraint {
        let s = s.trim();
        if s.is_empty() {
            return Constraint::Latest;
        }
        let parts: Vec<&str> = s.split('.').collect();
        let num = |p: &str| {
            p.parse::<u64>()
                .ok()
                .filter(|_| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        match parts.as_slice() {
            [x] => num(x).map_or_else(|| Constraint::Exact(s.into()), Constraint::Major),
            [x, "x"] | [x, "x", "x"] => {
                num(x).map_or_else(|| Constraint::Exact(s.into()), Constraint::Major)
            }
            [x, y] | [x, y, "x"] => match (num(x), num(y)) {
                (Some(x), Some(y)) => Constraint::Minor(x, y),
                _ => Constraint::Exact(s.into()),
            },
            _ => Constraint::Exact(s.into()),
        }
    }

    /// The version of `versions` this constraint selects.
    pub fn select<'v>(&self, versions: impl IntoIterator<Item = &'v str>) -> Option<&'v str> {
        if let Constraint::Exact(e) = self {
            // The one version written so: nothing to parse or compare.
            return versions.into_iter().find(|v| v == e);
        }
        let candidates = versions
            .into_iter()
            .map(Version::parse)
            .filter(|v| match self {
                Constraint::Latest => true,
                Constraint::Major(x) => v.part(0) == Some(*x),
                Constraint::Minor(x, y) => v.part(0) == Some(*x) && v.part(1) == Some(*y),
                Constraint::Exact(e) => v.raw == e,
            });
        candidates.max().map(|v| v.raw)
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::Latest => f.write_str("latest"),
            Constraint::Major(x) => write!(f, "{x}.x.x"),
            Constraint::Minor(x, y) => write!(f, "{x}.{y}.x"),
            Constraint::Exact(e) => f.write_str(e),
        }
    }
}

/// The highest of `versions`.
pub fn latest<'v>(versions: impl IntoIterator<Item = &'v str>) -> Option<&'v str> {
    Constraint::Latest.select(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &[&str] = &[
        "1.0.0",
        "1.2.0",
        "1.10.0",
        "2.0.0-beta",
        "2.0.0",
        "2.1.3",
        "2.1.10",
        "8.5.0",
    ];

    #[test]
    fn ordering_is_numeric() {
        assert!(Version::parse("1.10.0") > Version::parse("1.9.9"));
        assert!(Version::parse("2.0.0") > Version::parse("2.0.0-beta"));
        assert!(Version::parse("2.0.0-beta.2") > Version::parse("2.0.0-beta.1"));
        assert!(Version::parse("0.0.1") > Version::parse("weird"));
    }

    #[test]
    fn constraints() {
        let sel = |c: &str| Constraint::parse(c).select(VS.iter().copied());
        assert_eq!(sel(""), Some("8.5.0"));
        assert_eq!(sel("2"), Some("2.1.10"));
        assert_eq!(sel("2.x.x"), Some("2.1.10"));
        assert_eq!(sel("2.x"), Some("2.1.10"));
        assert_eq!(sel("2.1"), Some("2.1.10"));
        assert_eq!(sel("2.1.x"), Some("2.1.10"));
        assert_eq!(sel("1.2"), Some("1.2.0"), "X.Y when only X.Y.0 exists");
        assert_eq!(sel("2.1.3"), Some("2.1.3"));
        assert_eq!(sel("9"), None, "no major 9: not found, never an empty step");
        assert_eq!(sel("2.2"), None);
        assert_eq!(sel("2.1.4"), None);
        assert_eq!(sel("2.0.0-beta"), Some("2.0.0-beta"));
        assert_eq!(Constraint::parse("x"), Constraint::Exact("x".into()));
    }
}
