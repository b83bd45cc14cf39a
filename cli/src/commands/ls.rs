//! `vault ls SNAPSHOT [PATH]`: list a snapshot's files.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::json;
use vault_store::Repository;
use vault_store::format::tree::{Node, NodeKind};
use vault_store::restorer::find_node;

use crate::args::LsArgs;
use crate::context::Ctx;
use crate::util::{escape, local_time};

pub fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

struct Lister<'a> {
    repo: &'a Repository,
    json: bool,
    long: bool,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Lister<'_> {
    /// One line per entry. Text output escapes names ([`escape`]), so a
    /// name holding a newline or a terminal escape can't forge a line;
    /// `--json` keeps them as they are (as UTF-8, lossily), JSON escaping
    /// them itself.
    fn print(&mut self, path: &Path, n: &Node) -> Result<()> {
        if self.json {
            let mtime =
                jiff::Timestamp::new(n.mtime.secs, n.mtime.nanos as i32).map(|t| t.to_string()).unwrap_or_default();
            serde_json::to_writer(
                &mut self.out,
                &json!({"path": path.to_string_lossy(), "type": kind_name(n.kind), "mode": n.mode, "uid": n.uid, "gid": n.gid, "size": n.size, "mtime": mtime}),
            )?;
            writeln!(self.out)?;
        } else if self.long {
            let t =
                jiff::Timestamp::new(n.mtime.secs, n.mtime.nanos as i32).map(|t| local_time(&t)).unwrap_or_default();
            let user = n.user.as_deref().map_or_else(|| n.uid.to_string(), |u| escape(u).into_owned());
            let group = n.group.as_deref().map_or_else(|| n.gid.to_string(), |g| escape(g).into_owned());
            let mut line = format!("{} {user:>8} {group:>8} {:>12} {t} {}", mode_string(n), n.size, escape(path));
            if n.kind == NodeKind::Symlink {
                line.push_str(&format!(" -> {}", escape(&n.target)));
            }
            writeln!(self.out, "{line}")?;
        } else {
            writeln!(self.out, "{}", escape(path))?;
        }
        Ok(())
    }

    fn walk(&mut self, dir: &Path, n: &Node) -> Result<()> {
        let Some(sub) = n.subtree else { return Ok(()) };
        let tree = self.repo.load_tree(&sub)?;
        for child in &tree.nodes {
            let path = dir.join(std::ffi::OsStr::from_encoded_bytes_checked(&child.name));
            self.print(&path, child)?;
            if child.kind == NodeKind::Dir {
                self.walk(&path, child)?;
            }
        }
        Ok(())
    }
}

trait FromBytes {
    fn from_encoded_bytes_checked(b: &[u8]) -> &Self;
}
impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_checked(b: &[u8]) -> &Self {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

pub fn run(ctx: &Ctx, a: LsArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.filter.host.as_deref(), &a.filter.tags)?;
    let path = a.path.clone().unwrap_or_else(|| "/".into());
    let node = find_node(&repo, &snap.tree, &path).with_context(|| format!("snapshot {}", id.short()))?;
    let mut l = Lister {
        repo: &repo,
        json: ctx.global.json,
        long: a.long,
        out: std::io::BufWriter::new(std::io::stdout().lock()),
    };
    let base = PathBuf::from("/").join(path.trim_start_matches('/'));
    if node.kind == NodeKind::Dir {
        if a.path.is_some() {
            l.print(&base, &node)?;
        }
        l.walk(&base, &node)?;
    } else {
        l.print(&base, &node)?;
    }
    l.out.flush()?;
    Ok(0)
}
