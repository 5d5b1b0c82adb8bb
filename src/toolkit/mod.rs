//! Making a step ready to run (`--prepare`): what its `toolkit` asks for, the Go toolchain
//! ([`go`]) and the content-addressed build cache of Go steps ([`build`]).
//!
//! Invariants:
//! - A toolkit that is not supported is refused before anything is activated, never left
//!   half-prepared.
//! - A Go step's binary is a store object named by a key that covers everything that changes the
//!   output (`store-format.md`, "Builds"), so a hit is a resolved name, a killed build leaves
//!   nothing trusted and one build runs per key among concurrent callers (single flight on the
//!   name).
//! - Builds run in a private copy of the source inside the store's temp area, with an explicit
//!   environment for the child only; stepman never changes its own environment.

pub mod build;
pub mod go;
pub mod install;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// What a step's `toolkit` says it runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolkit {
    /// `toolkit.go.package_name`: compiled with `go build`.
    Go {
        /// The Go package (module) name of the step.
        package_name: String,
    },
    /// `toolkit.bash`, or no toolkit at all (the old tool's default): run under bash.
    Bash {
        /// The script, relative to the step's directory (`step.sh` unless `entry_file` says).
        entry_file: String,
    },
}

/// The toolkit's kind, as reported (`"go"`, `"bash"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolkitKind {
    /// Go.
    Go,
    /// Bash.
    Bash,
}

/// The default entry file of a bash step.
pub const BASH_ENTRY: &str = "step.sh";

impl Toolkit {
    /// Reads the toolkit of step definition `step` (`what` names the step in errors). A
    /// `swift` toolkit, or one this version does not know, is [`Error::Unsupported`].
    pub fn of(step: &Value, what: &str) -> Result<Toolkit> {
        let Some(t) = step.get("toolkit").filter(|t| !t.is_null()) else {
            return Ok(Toolkit::bash(None));
        };
        let Some(map) = t.as_object() else {
            return Err(Error::Steplib {
                what: what.into(),
                reason: "toolkit is not a mapping".into(),
            });
        };
        if let Some(go) = map.get("go") {
            let package_name = go
                .get("package_name")
                .and_then(Value::as_str)
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| Error::Steplib {
                    what: what.into(),
                    reason: "toolkit.go.package_name is missing".into(),
                })?;
            return Ok(Toolkit::Go {
                package_name: package_name.to_string(),
            });
        }
        if let Some(bash) = map.get("bash") {
            return Ok(Toolkit::bash(
                bash.get("entry_file").and_then(Value::as_str),
            ));
        }
        match map.keys().next() {
            None => Ok(Toolkit::bash(None)),
            Some(other) => Err(Error::Unsupported {
                what: what.into(),
                toolkit: other.clone(),
            }),
        }
    }

    fn bash(entry: Option<&str>) -> Toolkit {
        Toolkit::Bash {
            entry_file: entry
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .unwrap_or(BASH_ENTRY)
                .to_string(),
        }
    }

    /// The kind reported for this toolkit.
    pub fn kind(&self) -> ToolkitKind {
        match self {
            Toolkit::Go { .. } => ToolkitKind::Go,
            Toolkit::Bash { .. } => ToolkitKind::Bash,
        }
    }
}

/// Whether a step needed a build, and whether it was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// Found in the build cache.
    Cached,
    /// Built now.
    Built,
    /// Taken from the fleet's remote tier: another host built it (`CGO_ENABLED=0` builds only).
    Remote,
    /// Nothing to build (a bash step, or a precompiled executable was used).
    None,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn toolkit_forms() {
        let go = json!({"toolkit": {"go": {"package_name": "github.com/x/y"}}});
        assert_eq!(
            Toolkit::of(&go, "s").unwrap(),
            Toolkit::Go {
                package_name: "github.com/x/y".into()
            }
        );
        let bash = json!({"toolkit": {"bash": {"entry_file": "run.sh"}}});
        assert_eq!(
            Toolkit::of(&bash, "s").unwrap(),
            Toolkit::Bash {
                entry_file: "run.sh".into()
            }
        );
        for none in [json!({}), json!({"toolkit": null}), json!({"toolkit": {}})] {
            assert_eq!(
                Toolkit::of(&none, "s").unwrap(),
                Toolkit::Bash {
                    entry_file: BASH_ENTRY.into()
                }
            );
        }
        let swift = json!({"toolkit": {"swift": {"executable_name": "x"}}});
        assert!(matches!(
            Toolkit::of(&swift, "s"),
            Err(Error::Unsupported { toolkit, .. }) if toolkit == "swift"
        ));
        let no_pkg = json!({"toolkit": {"go": {}}});
        assert!(matches!(
            Toolkit::of(&no_pkg, "s"),
            Err(Error::Steplib { .. })
        ));
    }
}
