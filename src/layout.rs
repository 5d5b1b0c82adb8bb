//! The on-disk layout of a store: the only module that knows where anything lives.
//!
//! `store-format.md` is normative; this module implements it. Invariants:
//! - The format's major version is part of the path (`store-v1/`); a store written by a newer
//!   major version is refused, never read or written.
//! - Objects live at `objects/<first two hex digits>/<64 hex digits>`.
//! - Names live at `names/<route>/<id>/<version>` and are symlinks whose target is exactly
//!   `../../../objects/<hh>/<hash>`.
//! - Temporary work happens only under `tmp/`, on the same file system as `objects/` and `names/`.
//! - The store's own names (`_steplib`, `_exe.`, `_git`, `_build`, `_toolkits`, `_toolchains`) and a collection object's inside
//!   (`collection.json`, `groups/<id>.json`, `yml/<id>/<version>.yml`: `CollectionLayout`) are
//!   spelled here too.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::ObjectId;

/// The format's major version as a literal, so that [`STORE_DIR`] is spelled from it.
macro_rules! format_major {
    () => {
        1
    };
}

/// The store format's major version: part of the directory name.
pub const FORMAT_MAJOR: u32 = format_major!();
/// The store format's minor version: compatible additions.
pub const FORMAT_MINOR: u32 = 0;
/// What the store directory's name is, before the major version.
pub const STORE_DIR_PREFIX: &str = "store-v";
/// The store directory's name inside `$STEPMAN_HOME`: [`STORE_DIR_PREFIX`] and
/// [`FORMAT_MAJOR`].
pub const STORE_DIR: &str = concat!("store-v", format_major!());
/// The first line of the `format` file.
pub(crate) const FORMAT_TAG: &str = "stepman-store";

/// The store's own directories, relative to its root, parents first: made when the store is
/// created (`quarantine/` later, by the first repair that needs it).
const SKELETON_DIRS: [&str; 5] = [OBJECTS, NAMES, TMP, LOCKS, NAME_LOCKS];
const OBJECTS: &str = "objects";
const NAMES: &str = "names";
const TMP: &str = "tmp";
const LOCKS: &str = "locks";
const NAME_LOCKS: &str = "locks/names";
const QUARANTINE: &str = "quarantine";
const MIRRORS: &str = "mirrors";
const FORMAT_FILE: &str = "format";
const GC_LOCK: &str = "gc.lock";
const GC_INTENT_LOCK: &str = "gc-intent.lock";

/// The major version of a store directory named `name` (`store-v<N>`), if it is one.
pub(crate) fn store_dir_major(name: &str) -> Option<u32> {
    name.strip_prefix(STORE_DIR_PREFIX)?.parse().ok()
}

/// The version `(major, minor)` a `format` file's text names (`None`: not a format file).
pub(crate) fn parse_format_line(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text
        .lines()
        .next()?
        .strip_prefix(FORMAT_TAG)?
        .trim()
        .split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The `format` file's text for this version.
pub(crate) fn format_line() -> String {
    format!("{FORMAT_TAG} {FORMAT_MAJOR}.{FORMAT_MINOR}\n")
}

/// A 64-bit token that makes a name unique (temp dirs, staging dirs, temp files): random, and
/// distinct among live processes even when two of them seeded their generators alike. fastrand
/// seeds each thread from the clock and the thread id, and the main threads of processes started
/// at once can get the same seed (seen: two of ten concurrent first activations picked the same
/// store-creation staging dir); the pid in the high half tells them apart.
pub(crate) fn unique_token() -> u64 {
    fastrand::u64(..) ^ u64::from(std::process::id()).rotate_left(32)
}

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

    /// The layout of a store being created at `staging` (a temp dir beside the store, under
    /// `home`), so that its skeleton is spelled as the store's own.
    pub(crate) fn staging(home: &Path) -> Layout {
        let root = home.join(format!(".{STORE_DIR}-init-{:016x}", unique_token()));
        Layout {
            home: home.to_path_buf(),
            root,
        }
    }

    /// The store's own directories, parents first: the ones created with the store.
    pub(crate) fn skeleton_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        SKELETON_DIRS.iter().map(|d| self.root.join(d))
    }

    /// Every directory of the store's own (never a symlink): the skeleton, `quarantine/` and
    /// `mirrors/`.
    pub(crate) fn own_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.skeleton_dirs()
            .chain([self.quarantine(), self.mirrors()])
    }

    /// The store's lock files, created with it.
    pub(crate) fn store_locks(&self) -> [PathBuf; 2] {
        [self.gc_lock(), self.gc_intent_lock()]
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
        self.root.join(FORMAT_FILE)
    }

    pub(crate) fn objects(&self) -> PathBuf {
        self.root.join(OBJECTS)
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
        self.root.join(NAMES)
    }

    pub(crate) fn name_path(&self, name: &Name) -> PathBuf {
        self.names()
            .join(&name.route)
            .join(&name.id)
            .join(&name.version)
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join(TMP)
    }

    pub(crate) fn locks(&self) -> PathBuf {
        self.root.join(LOCKS)
    }

    pub(crate) fn quarantine(&self) -> PathBuf {
        self.root.join(QUARANTINE)
    }

    /// `mirrors/`: the kept bare git mirrors of git StepLibs (made by the first that needs it).
    pub(crate) fn mirrors(&self) -> PathBuf {
        self.root.join(MIRRORS)
    }

    /// The kept bare mirror of the git StepLib whose alias is `alias`.
    pub(crate) fn mirror(&self, alias: &str) -> PathBuf {
        self.mirrors().join(format!("{alias}.git"))
    }

    pub(crate) fn gc_lock(&self) -> PathBuf {
        self.locks().join(GC_LOCK)
    }

    pub(crate) fn gc_intent_lock(&self) -> PathBuf {
        self.locks().join(GC_INTENT_LOCK)
    }

    pub(crate) fn name_lock(&self, name: &Name) -> PathBuf {
        let digest = blake3::hash(name.to_string().as_bytes());
        self.name_locks()
            .join(format!("{}.lock", &digest.to_hex()[..32]))
    }

    /// `locks/names/`, the name locks' directory.
    pub(crate) fn name_locks(&self) -> PathBuf {
        self.root.join(NAME_LOCKS)
    }

    /// The symlink target stored for a name that points at `id`.
    pub(crate) fn name_target(id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        PathBuf::from(format!("../../../{OBJECTS}/{}/{}", &hex[..2], hex))
    }

    /// Parses a name's symlink target back into an object id (None: not our form).
    pub(crate) fn parse_name_target(target: &Path) -> Option<ObjectId> {
        let s = target.to_str()?;
        let rest = s
            .strip_prefix("../../../")?
            .strip_prefix(OBJECTS)?
            .strip_prefix('/')?;
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
    /// A git ref's clone (`git::URL@REF`).
    Git,
    /// A collection object being generated.
    Steplib,
    /// A Go step's build.
    Build,
    /// A toolchain's probed identity.
    Toolchain,
    /// A toolkit's download.
    Toolkit,
    /// A legacy view's record.
    View,
    /// An audit's clone of a step's tag.
    Audit,
    /// A StepLib API document being cached.
    ApiDoc,
    /// A tree's archive spooled for its upload to the remote tier.
    Upload,
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
            TempKind::Build => "build",
            TempKind::Toolchain => "toolchain",
            TempKind::Toolkit => "toolkit",
            TempKind::View => "view",
            TempKind::Audit => "audit",
            TempKind::ApiDoc => "apidoc",
            TempKind::Upload => "upload",
        }
    }

    /// A new temp dir name of this kind: `<kind>-<16 hex random><8 hex pid>`.
    pub(crate) fn fresh_name(self) -> String {
        format!(
            "{}-{:016x}{:08x}",
            self.as_str(),
            unique_token(),
            std::process::id()
        )
    }
}

/// Inside a producer's temp dir, the tree that is published as the object.
pub(crate) const TEMP_TREE: &str = "tree";
/// Inside a temp dir, a name's new symlink before it replaces the old one.
pub(crate) const TEMP_NAME_LINK: &str = "name";

/// The name id under which a collection's own object is bound: `<alias>/_steplib/current`.
pub const COLLECTION_ID: &str = "_steplib";
/// The name version of a collection's current object.
pub const COLLECTION_VERSION: &str = "current";
/// The name id under which the record of a collection's legacy view is bound:
/// `<alias>/_legacy_view/current` (`store-format.md` §4d).
pub const LEGACY_VIEW_ID: &str = "_legacy_view";
/// The prefix of the name id of a step's executables: `<alias>/_exe.<id>/…`.
pub const EXE_ID_PREFIX: &str = "_exe.";
/// The route of git refs' trees (`git::URL@REF`): `_git/<URL id>/<commit>` ([`git_url_id`]).
pub(crate) const GIT_ROUTE: &str = "_git";
/// The route of Go step builds: `_build/<source object id>/go-<key>` (`crate::toolkit::build`).
pub const BUILD_ROUTE: &str = "_build";
/// The route of toolkits: `_toolkits/<toolkit>/<version>`.
pub const TOOLKIT_ROUTE: &str = "_toolkits";
/// The route of probed toolchain identities: `_toolchains/go/<key>`.
pub(crate) const TOOLCHAIN_ROUTE: &str = "_toolchains";
/// The name id of the Go toolkit: `_toolkits/go/<version>`.
pub const GO_TOOLKIT_ID: &str = "go";

/// The readable part of a name id made from a URL or a URI: `s` without its scheme, each run of
/// characters outside `A-Z a-z 0-9 . _` turned into one `-`, at most `max` bytes, without a
/// leading character that is not a letter or a digit, nor a trailing `-` or `.` (may be empty).
pub(crate) fn name_slug(s: &str, max: usize) -> String {
    let without_scheme = s.split_once("://").map_or(s, |(_, r)| r);
    let mut slug = String::new();
    for c in without_scheme.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            c
        } else {
            '-'
        };
        if c == '-' && (slug.is_empty() || slug.ends_with('-')) {
            continue;
        }
        if slug.len() >= max {
            break;
        }
        slug.push(c);
    }
    slug.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// Most bytes of the readable part of a [`git_url_id`].
const GIT_URL_SLUG_MAX: usize = 64;

/// The name id of a git repository's trees, `<slug>-<32 hex>`: the slug is the URL without
/// its scheme, each run of characters outside `A-Z a-z 0-9 . _` turned into one `-`, at most
/// 64 bytes, for people; the 32 hex digits (128 bits) are BLAKE3 of `stepman-git-url 1\n`
/// followed by the URL, and tell URLs apart. `url` is the URL without its userinfo, a local
/// repository as `file://<absolute canonical path>`.
pub(crate) fn git_url_id(url: &str) -> String {
    let slug = name_slug(url, GIT_URL_SLUG_MAX);
    let mut h = blake3::Hasher::new();
    h.update(b"stepman-git-url 1\n");
    h.update(url.as_bytes());
    let hex = h.finalize().to_hex();
    if slug.is_empty() {
        format!("git-{}", &hex[..32])
    } else {
        format!("{slug}-{}", &hex[..32])
    }
}

/// The layout inside a collection object (`store-format.md`, section 4a), relative to the
/// object's root: where the StepLib's generator writes and its readers look.
pub(crate) struct CollectionLayout;

impl CollectionLayout {
    /// The collection's metadata.
    pub(crate) const META: &'static str = "collection.json";
    /// The directory of the step groups.
    pub(crate) const GROUPS: &'static str = "groups";

    /// The group file of step `id`: `groups/<id>.json`.
    pub(crate) fn group(id: &str) -> String {
        format!("{}/{id}.json", Self::GROUPS)
    }

    /// The step id of a file name in [`CollectionLayout::GROUPS`] (`None`: not a group file).
    pub(crate) fn group_id(file_name: &str) -> Option<&str> {
        file_name.strip_suffix(".json")
    }

    /// The lookup index of step `id` (collection layout 2): `index/<id>.json`.
    pub(crate) fn index(id: &str) -> String {
        format!("index/{id}.json")
    }

    /// The original step.yml of a step version in a layout-1 or -2 object:
    /// `yml/<id>/<version>.yml`.
    pub(crate) fn step_yml(id: &str, version: &str) -> String {
        format!("yml/{id}/{version}.yml")
    }

    /// (Layout 3) the original step.yml files of step `id`, one after the other, lowest version
    /// first: `definitions/<id>.yml` (the index gives each one's span).
    pub(crate) fn definitions(id: &str) -> String {
        format!("definitions/{id}.yml")
    }
}

/// The name of a collection's step.yml kept as a file of its own (collection layout 3,
/// `store-format.md` 4a): `<alias>/_def/<hex>`, `<hex>` the first 32 hex digits of the bytes'
/// BLAKE3. The id starts with `_`: no StepLib step can have it.
pub(crate) fn definition_name(alias: &str, bytes: &[u8]) -> Result<Name> {
    let hex = blake3::hash(bytes).to_hex();
    Name::new(alias, "_def", &hex[..32])
}

/// The names under which an API collection's documents are cached (`store-format.md`, section
/// 4f), each bound to an object holding the one document under its own file name. The ids start
/// with `_`: no StepLib step can have them.
pub(crate) struct ApiDocNames;

impl ApiDocNames {
    /// `<alias>/_api/step_ids`: `index/step_ids.json`.
    pub(crate) fn step_ids(alias: &str) -> Result<Name> {
        Name::new(alias, "_api", "step_ids")
    }

    /// `<alias>/_api.versions/<id>`: `index/steps/<id>/versions.json`.
    pub(crate) fn versions(alias: &str, id: &str) -> Result<Name> {
        Name::new(alias, "_api.versions", id)
    }

    /// `<alias>/_api.info/<id>`: `steps/<id>/step-info.json`.
    pub(crate) fn step_info(alias: &str, id: &str) -> Result<Name> {
        Name::new(alias, "_api.info", id)
    }

    /// `<alias>/_api.step.<id>/<version>`: `steps/<id>/<version>/step.json` (an id longer than
    /// 118 bytes has no such name).
    pub(crate) fn step(alias: &str, id: &str, version: &str) -> Result<Name> {
        Name::new(alias, &format!("_api.step.{id}"), version)
    }
}

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
    match component_fault(part) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            name: whole.to_string(),
            reason,
        }),
    }
}

/// Whether `part` can be a component of a [`Name`] (what [`Name::new`] checks, without building
/// one).
pub(crate) fn valid_component(part: &str) -> bool {
    component_fault(part).is_none()
}

/// What is wrong with `part` as a name's component (`None`: nothing).
fn component_fault(part: &str) -> Option<&'static str> {
    let Some(&first) = part.as_bytes().first() else {
        return Some("empty component");
    };
    if part.len() > NAME_COMPONENT_MAX {
        return Some("component longer than 128 bytes");
    }
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Some("a component must start with a letter, a digit or '_'");
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    {
        return Some("a component may hold only A-Z a-z 0-9 . _ - +");
    }
    None
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
    fn git_url_ids_are_names_and_tell_urls_apart() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let long = format!("https://h/{}.git", "a/".repeat(200));
        let urls = [
            "https://github.com/bitrise-steplib/steps-script.git",
            "https://github.com/bitrise-steplib/steps-script",
            "http://github.com/bitrise-steplib/steps-script.git",
            "git@github.com:bitrise-steplib/steps-script.git",
            "file:///srv/r.git",
            "file:///srv/r-git",
            "https://h/-/../x",
            "::",
            &long,
        ];
        let ids: Vec<String> = urls.iter().map(|u| git_url_id(u)).collect();
        for (u, id) in urls.iter().zip(&ids) {
            assert!(Name::new(GIT_ROUTE, id, commit).is_ok(), "{u} -> {id}");
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert!(
            ids[0].starts_with("github.com-bitrise-steplib-steps-script.git-"),
            "{}",
            ids[0]
        );
        assert!(ids[7].starts_with("git-"), "{}", ids[7]);
    }

    #[test]
    fn store_dir_is_spelled_from_the_major_version() {
        assert_eq!(STORE_DIR, format!("{STORE_DIR_PREFIX}{FORMAT_MAJOR}"));
        assert_eq!(store_dir_major(STORE_DIR), Some(FORMAT_MAJOR));
        assert_eq!(store_dir_major("store-vx"), None);
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
#[cfg(test)]
mod git_url_vectors {
    /// The `| Gn | URL | URL id |` rows of `store-format.md` §4c hold for [`super::git_url_id`].
    #[test]
    fn store_format_git_url_vectors_match_the_code() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("store-format.md"),
        )
        .expect("store-format.md is part of the repository");
        let rows: Vec<(String, String)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() == 5
                    && cells[1].starts_with('G')
                    && cells[1][1..].parse::<u32>().is_ok())
                .then(|| {
                    (
                        cells[2].trim_matches('`').to_string(),
                        cells[3].trim_matches('`').to_string(),
                    )
                })
            })
            .collect();
        assert_eq!(rows.len(), 3, "the vectors of store-format.md §4c");
        for (url, id) in rows {
            assert_eq!(super::git_url_id(&url), id, "{url}");
        }
    }
}
