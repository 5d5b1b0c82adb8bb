//! The on-disk layout of a store: the only module that knows where anything lives.
//!
//! `store-format.md` is normative; this module implements it. Invariants:
//! - The format's major version is part of the path (`store-v1/`); a store written by a newer
//!   major version is refused, never read or written.
//! - Objects live at `objects/<first two hex digits>/<64 hex digits>`.
//! - Names live at `names/<route>/<id>/<version>` and are symlinks whose target is exactly
//!   `../../../objects/<hh>/<hash>`.
//! - Temporary work happens only under `tmp/`, on the same file system as `objects/` and `names/`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::ObjectId;

/// The store format's major version: part of the directory name.
pub const FORMAT_MAJOR: u32 = 1;
/// The store format's minor version: compatible additions.
pub const FORMAT_MINOR: u32 = 0;
/// The store directory's name inside `$STEPMAN_HOME`.
pub const STORE_DIR: &str = "store-v1";
/// The first line of the `format` file.
pub(crate) const FORMAT_TAG: &str = "stepman-store";

/// Paths of one store.
#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
    root: PathBuf,
}

impl Layout {
    /// The layout of the store under `home` (`$STEPMAN_HOME`).
    pub fn new(home: &Path) -> Layout {
        Layout {
            home: home.to_path_buf(),
            root: home.join(STORE_DIR),
        }
    }

    /// `$STEPMAN_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The versioned store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn format_file(&self) -> PathBuf {
        self.root.join("format")
    }

    pub(crate) fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    pub(crate) fn object_shard(&self, id: &ObjectId) -> PathBuf {
        self.objects().join(&id.to_hex()[..2])
    }

    /// Where the object `id` lives.
    pub fn object_dir(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.objects().join(&hex[..2]).join(&hex)
    }

    pub(crate) fn names(&self) -> PathBuf {
        self.root.join("names")
    }

    pub(crate) fn name_path(&self, name: &Name) -> PathBuf {
        self.names()
            .join(&name.route)
            .join(&name.id)
            .join(&name.version)
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub(crate) fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub(crate) fn gc_lock(&self) -> PathBuf {
        self.locks().join("gc.lock")
    }

    pub(crate) fn gc_intent_lock(&self) -> PathBuf {
        self.locks().join("gc-intent.lock")
    }

    pub(crate) fn name_lock(&self, name: &Name) -> PathBuf {
        let digest = blake3::hash(name.to_string().as_bytes());
        self.locks()
            .join("names")
            .join(format!("{}.lock", &digest.to_hex()[..32]))
    }

    /// The symlink target stored for a name that points at `id`.
    pub(crate) fn name_target(id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        PathBuf::from(format!("../../../objects/{}/{}", &hex[..2], hex))
    }

    /// Parses a name's symlink target back into an object id (None: not our form).
    pub(crate) fn parse_name_target(target: &Path) -> Option<ObjectId> {
        let s = target.to_str()?;
        let rest = s.strip_prefix("../../../objects/")?;
        let (shard, hex) = rest.split_once('/')?;
        let id = ObjectId::from_hex(hex)?;
        (shard.len() == 2 && hex.starts_with(shard)).then_some(id)
    }
}

/// The kinds of temp dir, the `<kind>` of `tmp/<kind>-<random>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TempKind {
    /// An import's tree.
    Ingest,
    /// A name's new symlink, before it replaces the old one.
    Bind,
    /// Objects gc moved out.
    Gc,
    /// A step version's source download.
    Download,
    /// A precompiled executable's download.
    Executable,
    /// A git step-info checkout.
    Git,
    /// A collection object being generated.
    Steplib,
}

impl TempKind {
    /// The `<kind>` of the temp dir's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TempKind::Ingest => "ingest",
            TempKind::Bind => "bind",
            TempKind::Gc => "gc",
            TempKind::Download => "download",
            TempKind::Executable => "exe",
            TempKind::Git => "git",
            TempKind::Steplib => "steplib",
        }
    }
}

/// Inside a producer's temp dir, the tree that is published as the object.
pub(crate) const TEMP_TREE: &str = "tree";
/// Inside a temp dir, a name's new symlink before it replaces the old one.
pub(crate) const TEMP_NAME_LINK: &str = "name";

/// A validated human-readable name: `<route>/<id>/<version>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    route: String,
    id: String,
    version: String,
}

/// The longest component of a name, in bytes.
pub const NAME_COMPONENT_MAX: usize = 128;

fn check_component(whole: &str, part: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: whole.to_string(),
            reason,
        })
    };
    if part.is_empty() {
        return bad("empty component");
    }
    if part.len() > NAME_COMPONENT_MAX {
        return bad("component longer than 128 bytes");
    }
    let first = part.as_bytes()[0];
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return bad("a component must start with a letter, a digit or '_'");
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    {
        return bad("a component may hold only A-Z a-z 0-9 . _ - +");
    }
    Ok(())
}

impl Name {
    /// Builds a name from its three components, validating each.
    pub fn new(route: &str, id: &str, version: &str) -> Result<Name> {
        let whole = format!("{route}/{id}/{version}");
        for part in [route, id, version] {
            check_component(&whole, part)?;
        }
        Ok(Name {
            route: route.into(),
            id: id.into(),
            version: version.into(),
        })
    }

    /// Parses `<route>/<id>/<version>`.
    pub fn parse(s: &str) -> Result<Name> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(r), Some(i), Some(v), None) => Name::new(r, i, v),
            _ => Err(Error::InvalidName {
                name: s.to_string(),
                reason: "expected exactly three components: <route>/<id>/<version>",
            }),
        }
    }

    /// The route (a collection's alias, or a namespace of the store's own).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The id (a step's id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version.
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.route, self.id, self.version)
    }
}

impl std::str::FromStr for Name {
    type Err = Error;
    fn from_str(s: &str) -> Result<Name> {
        Name::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_grammar() {
        assert!(Name::parse("steplib/git-clone/8.5.1").is_ok());
        assert!(Name::parse("a_b/c+d/1.0.0-beta.1").is_ok());
        for bad in [
            "",
            "a/b",
            "a/b/c/d",
            "a//c",
            "../b/c",
            "a/../c",
            "a/b/..",
            "a/b/.hidden",
            "a/b/c\0",
            "a/b\\c/d",
            "a/b/c d",
            "/a/b/c",
            "a/b/c/",
            "-a/b/c",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = "x".repeat(129);
        assert!(Name::new("r", &long, "1").is_err());
    }

    #[test]
    fn name_target_roundtrip() {
        let id = ObjectId::from_bytes([0xab; 32]);
        let t = Layout::name_target(&id);
        assert_eq!(Layout::parse_name_target(&t), Some(id));
        assert_eq!(
            Layout::parse_name_target(Path::new("../../../objects/ac/abab")),
            None
        );
        assert_eq!(Layout::parse_name_target(Path::new("/etc/passwd")), None);
    }
}
