//! Tree blobs: one directory listing each, serialized with postcard
//! (a compact, deterministic, documented serde format). Entries are sorted by
//! their raw name bytes and unique, so the same directory always yields the
//! same bytes and the same blob id. Names are raw bytes: Unix names need not
//! be UTF-8.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

/// Version of the tree encoding.
pub const TREE_VERSION: u8 = 1;

/// What kind of file a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file with content.
    File,
    /// A directory with a subtree.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket (metadata only).
    Socket,
}

/// A point in time, seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Time {
    /// Seconds since 1970-01-01 UTC.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Its name, e.g. `user.comment`.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Its value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Name within its directory (raw bytes).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// File type.
    pub kind: NodeKind,
    /// Permission bits and set-id/sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Owner's name, when it could be resolved.
    pub user: Option<String>,
    /// Group's name, when it could be resolved.
    pub group: Option<String>,
    /// Modification time.
    pub mtime: Time,
    /// Status change time (not restorable; used to detect changes).
    pub ctime: Time,
    /// Size in bytes (the bytes actually stored for a file).
    pub size: u64,
    /// Inode number (change detection, hard links).
    pub inode: u64,
    /// Device of the file system holding it.
    pub device: u64,
    /// Hard link count when it was read.
    pub links: u64,
    /// Device number for block and character devices.
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Target of a symlink.
    #[serde(with = "serde_bytes")]
    pub target: Vec<u8>,
    /// Content of a file, in order.
    pub content: Vec<BlobId>,
    /// Listing of a directory.
    pub subtree: Option<BlobId>,
}

impl Node {
    /// An empty node of the given kind; the caller fills in the rest.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: Time::default(),
            ctime: Time::default(),
            size: 0,
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            xattrs: Vec::new(),
            target: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }

    /// The name for messages (lossy UTF-8).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Encoding version ([`TREE_VERSION`]).
    pub version: u8,
    /// Entries sorted by name.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// A tree of `nodes`, sorted by name.
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        Tree { version: TREE_VERSION, nodes }
    }

    /// Deterministic bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a tree always serializes")
    }

    /// Decodes and checks ordering; `what` names the tree in errors.
    pub fn decode(buf: &[u8], what: &str) -> Result<Self> {
        if let Some(&v) = buf.first()
            && v != TREE_VERSION
        {
            return Err(Error::UnsupportedVersion {
                what: what.to_string(),
                found: u32::from(v),
                supported: u32::from(TREE_VERSION),
            });
        }
        let (tree, rest): (Tree, &[u8]) =
            postcard::take_from_bytes(buf).map_err(|e| Error::corrupt(what, format!("tree does not decode: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::corrupt(what, format!("{} unexpected trailing bytes after the tree", rest.len())));
        }
        for w in tree.nodes.windows(2) {
            if w[0].name >= w[1].name {
                return Err(Error::corrupt(what, format!("entries not strictly sorted at {:?}", w[1].display_name())));
            }
        }
        Ok(tree)
    }

    /// Finds an entry by name.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

/// Why a name from a repository is unsafe to create on disk, if it is.
pub fn unsafe_name_reason(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name == b"." || name == b".." {
        Some("name is . or ..")
    } else if name.contains(&b'/') {
        Some("name contains '/'")
    } else if name.contains(&0) {
        Some("name contains a NUL byte")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(any::<u8>(), 1..20),
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(|(name, mode, size, secs, content, sub)| {
                let mut n = Node::new(name, if sub.is_some() { NodeKind::Dir } else { NodeKind::File });
                n.mode = mode;
                n.size = size;
                n.mtime = Time { secs, nanos: 5 };
                n.content = content.into_iter().map(BlobId).collect();
                n.subtree = sub.map(BlobId);
                n.xattrs = vec![Xattr { name: b"user.x".to_vec(), value: vec![0, 1, 2] }];
                n
            })
    }

    proptest! {
        #[test]
        fn tree_serialization_is_deterministic_and_round_trips(nodes in proptest::collection::vec(arb_node(), 0..20)) {
            // A directory never has two entries of one name.
            let mut nodes = nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let mut shuffled = nodes.clone();
            shuffled.reverse();
            let a = Tree::new(nodes);
            let b = Tree::new(shuffled);
            prop_assert_eq!(a.encode(), b.encode());
            prop_assert_eq!(Tree::decode(&a.encode(), "t").unwrap(), a);
        }

        #[test]
        fn tree_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Tree::decode(&bytes, "t");
        }
    }

    #[test]
    fn unsorted_tree_is_refused() {
        let mut t = Tree::new(vec![Node::new(b"a".to_vec(), NodeKind::File), Node::new(b"b".to_vec(), NodeKind::File)]);
        t.nodes.swap(0, 1);
        assert!(Tree::decode(&t.encode(), "t").is_err());
        t.nodes[0].name = b"a".to_vec();
        assert!(Tree::decode(&t.encode(), "t").is_err(), "duplicates are refused");
    }

    #[test]
    fn trailing_bytes_after_a_tree_are_refused() {
        let mut bytes = Tree::new(vec![Node::new(b"a".to_vec(), NodeKind::File)]).encode();
        assert!(Tree::decode(&bytes, "t").is_ok());
        bytes.push(0);
        let err = Tree::decode(&bytes, "tree x").unwrap_err().to_string();
        assert!(err.contains("tree x") && err.contains("trailing"), "{err}");
    }

    #[test]
    fn unsafe_names() {
        assert!(unsafe_name_reason(b"..").is_some());
        assert!(unsafe_name_reason(b"a/b").is_some());
        assert!(unsafe_name_reason(b"a\0").is_some());
        assert!(unsafe_name_reason(b"\xff\xfe").is_none());
    }
}
