//! File-system metadata: turning `lstat` results into tree nodes on the way
//! in, and applying a node's metadata to a restored file on the way out.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::format::tree::{Node, NodeKind, Time, Xattr};

/// The kind of a file from its metadata.
pub fn node_kind(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

fn names(file: &str) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(file) {
        for line in text.lines() {
            let mut it = line.split(':');
            if let (Some(name), Some(_), Some(id)) = (it.next(), it.next(), it.next())
                && let Ok(id) = id.parse()
            {
                map.entry(id).or_insert_with(|| name.to_string());
            }
        }
    }
    map
}

/// The user name of a uid (from /etc/passwd).
pub fn user_name(uid: u32) -> Option<String> {
    static USERS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    USERS.get_or_init(|| names("/etc/passwd")).get(&uid).cloned()
}

/// The group name of a gid (from /etc/group).
pub fn group_name(gid: u32) -> Option<String> {
    static GROUPS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    GROUPS.get_or_init(|| names("/etc/group")).get(&gid).cloned()
}

/// A node for `name` from its `lstat` metadata (content, subtree and xattrs
/// are filled in by the caller). Reads the target of a symlink.
pub fn node_from_metadata(name: &OsStr, path: &Path, meta: &Metadata) -> io::Result<Node> {
    let kind = node_kind(meta);
    let mut node = Node::new(name.as_bytes().to_vec(), kind);
    node.mode = meta.mode() & 0o7777;
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.user = user_name(node.uid);
    node.group = group_name(node.gid);
    node.mtime = Time { secs: meta.mtime(), nanos: meta.mtime_nsec() as u32 };
    node.ctime = Time { secs: meta.ctime(), nanos: meta.ctime_nsec() as u32 };
    node.inode = meta.ino();
    node.device = meta.dev();
    node.links = meta.nlink();
    if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        node.rdev = meta.rdev();
    }
    if kind == NodeKind::File {
        node.size = meta.len();
    }
    if kind == NodeKind::Symlink {
        node.target = std::fs::read_link(path)?.as_os_str().as_bytes().to_vec();
    }
    Ok(node)
}

/// Extended attributes of a path (not following symlinks), sorted. File
/// systems without xattr support yield none; other failures are errors.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let unsupported = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA));
    let list = match xattr::list(path) {
        Ok(l) => l,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("listing extended attributes: {e}"))),
    };
    let mut out = Vec::new();
    for name in list {
        match xattr::get(path, &name) {
            Ok(Some(value)) => out.push(Xattr { name: name.as_bytes().to_vec(), value }),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading extended attribute {}: {e}", name.to_string_lossy()),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn timespec(t: Time) -> TimeSpec {
    TimeSpec::new(t.secs, i64::from(t.nanos.min(999_999_999)))
}

/// What metadata is applied to: a path (not followed if it is a symlink),
/// or a file the restore holds open, which saves a path lookup per call.
#[derive(Clone, Copy)]
pub enum MetaTarget<'a> {
    /// A path; a symlink at it is changed itself, not its target.
    Path(&'a Path),
    /// An open regular file.
    File(&'a std::fs::File),
}

/// Applies xattrs, ownership (when `owner`), mode and mtime to a restored
/// path or open file. Returns the first failure as a message; later steps
/// still run.
pub fn apply_metadata(target: MetaTarget<'_>, node: &Node, owner: bool) -> Result<(), String> {
    use xattr::FileExt as _;
    let mut first_err: Option<String> = None;
    let mut note = |what: &str, e: &dyn std::fmt::Display| {
        if first_err.is_none() {
            first_err = Some(format!("{what}: {e}"));
        }
    };
    let is_link = node.kind == NodeKind::Symlink;
    // Ownership first: chown clears security.capability and set-id bits, so
    // xattrs and the mode must come after it.
    if owner {
        let r = match target {
            MetaTarget::Path(p) => std::os::unix::fs::lchown(p, Some(node.uid), Some(node.gid)),
            MetaTarget::File(f) => std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid)),
        };
        if let Err(e) = r {
            note("changing owner", &e);
        }
    }
    for x in &node.xattrs {
        let name = OsStr::from_bytes(&x.name);
        let r = match target {
            MetaTarget::Path(p) => xattr::set(p, name, &x.value),
            MetaTarget::File(f) => f.set_xattr(name, &x.value),
        };
        if let Err(e) = r {
            // Symlinks can't carry user.* xattrs on Linux; other file systems
            // may not support them at all.
            if !is_link && e.raw_os_error() != Some(libc::ENOTSUP) {
                note(&format!("setting xattr {}", name.to_string_lossy()), &e);
            }
        }
    }
    if !is_link {
        let mode = std::fs::Permissions::from_mode(node.mode & 0o7777);
        let r = match target {
            MetaTarget::Path(p) => std::fs::set_permissions(p, mode),
            MetaTarget::File(f) => f.set_permissions(mode),
        };
        if let Err(e) = r {
            note("setting mode", &e);
        }
    }
    let time = timespec(node.mtime);
    let r = match target {
        MetaTarget::Path(p) => utimensat(nix::fcntl::AT_FDCWD, p, &time, &time, UtimensatFlags::NoFollowSymlink),
        MetaTarget::File(f) => nix::sys::stat::futimens(f, &time, &time),
    };
    if let Err(e) = r {
        note("setting times", &e);
    }
    match first_err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// The current user's name.
pub fn user_name_of_process() -> String {
    let uid = nix::unistd::getuid().as_raw();
    user_name(uid).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| uid.to_string())
}
