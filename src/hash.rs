//! Object ids and the canonical tree encoding (normative text: `store-format.md`, "Tree hash").
//!
//! A tree's id is BLAKE3 over a canonical encoding of its root directory. Invariants:
//! - Only names, kinds (directory, regular file, executable file, symlink), file contents and
//!   symlink targets enter the hash; timestamps, owners, other mode bits and archive order never do.
//! - A directory's children are encoded sorted by the bytes of their names, so the same tree has
//!   the same id whether it came from a directory, a tar or a zip.
//! - A file's digest is plain BLAKE3 of its contents (what `b3sum` prints).

use std::fmt;

/// Domain tag that starts every directory's encoding.
pub const DIR_TAG: &[u8] = b"stepman-tree-v1\0";

/// A 32-byte BLAKE3 digest naming an object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    /// Wraps raw digest bytes.
    pub fn from_bytes(b: [u8; 32]) -> ObjectId {
        ObjectId(b)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<ObjectId> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| ObjectId(*h.as_bytes()))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

/// The kind of a tree entry, as encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (`d`).
    Dir,
    /// A regular file without execute permission (`f`).
    File,
    /// A regular file with execute permission (`x`).
    Exec,
    /// A symbolic link (`l`).
    Symlink,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Dir => b'd',
            Kind::File => b'f',
            Kind::Exec => b'x',
            Kind::Symlink => b'l',
        }
    }
}

/// Digest of a symlink: BLAKE3 of its target's bytes.
pub fn symlink_digest(target: &str) -> [u8; 32] {
    *blake3::hash(target.as_bytes()).as_bytes()
}

/// Digest of a directory from its children `(name, kind, digest)`; sorts them itself.
pub fn dir_digest(children: &mut [(String, Kind, [u8; 32])]) -> [u8; 32] {
    children.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = blake3::Hasher::new();
    h.update(DIR_TAG);
    for (name, kind, digest) in children.iter() {
        h.update(&[kind.tag()]);
        h.update(&(name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update(digest);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_strictness() {
        let id = ObjectId::from_bytes(*blake3::hash(b"x").as_bytes());
        assert_eq!(ObjectId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ObjectId::from_hex(&id.to_hex().to_uppercase()), None);
        assert_eq!(ObjectId::from_hex("ab"), None);
    }

    #[test]
    fn order_independent() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut x = vec![
            ("a".to_string(), Kind::File, a),
            ("b".to_string(), Kind::Exec, b),
        ];
        let mut y = vec![
            ("b".to_string(), Kind::Exec, b),
            ("a".to_string(), Kind::File, a),
        ];
        assert_eq!(dir_digest(&mut x), dir_digest(&mut y));
        let mut z = vec![
            ("a".to_string(), Kind::Exec, a),
            ("b".to_string(), Kind::Exec, b),
        ];
        assert_ne!(dir_digest(&mut x), dir_digest(&mut z));
    }
}
