//! Access tokens: `state-dir/tokens.json` holds, for each token, its name,
//! the repository and role it grants, and the BLAKE3 hash of the token
//! (never the token itself, which is printed once when it is made).
//!
//! Tokens are 32 random bytes, so a fast hash is as good as a slow one: no
//! dictionary reaches them. Checking a presented token hashes it and
//! compares the hash with every entry's in constant time
//! (`blake3::Hash`'s equality), never stopping at the first match, so
//! timing says nothing about which tokens exist.
//!
//! `token add` and `token revoke` rewrite the file whole (a temporary file
//! renamed over it) under an exclusive `flock` on `tokens.lock`, so two
//! edits at once don't lose one. A running server notices the change on
//! its next request (it compares the file's identity and modification
//! time) and uses the new list from then on: a revoked token stops working
//! without a restart. A file it can't read makes every request fail
//! (`503`) rather than keep accepting a token that may have been revoked.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// What a token may do in its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// List and read.
    Read,
    /// Read, and create new packs, index segments and snapshots.
    Append,
    /// Everything: delete, replace, keys, marks, the maintenance lease.
    Admin,
}

impl Role {
    /// The role's name, as configured.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Append => "append",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "append" => Ok(Role::Append),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("{s:?} is no role (read, append or admin)")),
        }
    }
}

/// One token, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Its name, for logs and `token revoke`.
    pub name: String,
    /// The repository it opens.
    pub repo: String,
    /// What it may do there.
    pub role: Role,
    /// BLAKE3 of the token, hex.
    pub hash: String,
    /// When it was made.
    pub created: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    tokens: Vec<Entry>,
}

const VERSION: u32 = 1;
/// What every token starts with, so that one pasted in a config or a log
/// is recognisable (and findable by secret scanners).
pub const PREFIX: &str = "vt1_";

fn tokens_path(state_dir: &Path) -> PathBuf {
    state_dir.join("tokens.json")
}

fn read_file(path: &Path) -> Result<File> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File { version: VERSION, tokens: Vec::new() }),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let f: File = serde_json::from_slice(&text).with_context(|| format!("{} is damaged", path.display()))?;
    if f.version != VERSION {
        bail!("{} has version {}, this vault reads version {VERSION}", path.display(), f.version);
    }
    for e in &f.tokens {
        if hex::decode(&e.hash).map(|h| h.len()) != Ok(32) {
            bail!("{}: token {:?} has no valid hash", path.display(), e.name);
        }
    }
    Ok(f)
}

/// Runs `edit` on the token list under the lock and writes the result.
fn edit<T>(state_dir: &Path, edit: impl FnOnce(&mut Vec<Entry>) -> Result<T>) -> Result<T> {
    fs::create_dir_all(state_dir).with_context(|| format!("creating state-dir {}", state_dir.display()))?;
    let _lock = crate::files::lock(&state_dir.join("tokens.lock"), true)?;
    let path = tokens_path(state_dir);
    let mut f = read_file(&path)?;
    let out = edit(&mut f.tokens)?;
    f.version = VERSION;
    crate::files::write_atomic(&path, &serde_json::to_vec_pretty(&f).expect("token entries serialize"), 0o600)?;
    Ok(out)
}

/// Makes a token for `repo` with `role` named `name`; returns the token,
/// which is stored nowhere.
pub fn add(state_dir: &Path, name: &str, repo: &str, role: Role) -> Result<String> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
    {
        bail!("token name {name:?}: use letters, digits, '.', '_', '-' and '@' (at most 64)");
    }
    let token = format!("{PREFIX}{}", hex::encode(vault_store::crypto::random_bytes::<32>()));
    let hash = blake3::hash(token.as_bytes()).to_hex().to_string();
    edit(state_dir, |tokens| {
        if tokens.iter().any(|t| t.name == name) {
            bail!("a token named {name:?} exists already (revoke it first, or choose another name)");
        }
        tokens.push(Entry {
            name: name.to_string(),
            repo: repo.to_string(),
            role,
            hash,
            created: jiff::Timestamp::now().to_string(),
        });
        Ok(())
    })?;
    Ok(token)
}

/// Removes the token named `name`.
pub fn revoke(state_dir: &Path, name: &str) -> Result<Entry> {
    edit(state_dir, |tokens| {
        let Some(i) = tokens.iter().position(|t| t.name == name) else {
            bail!("no token is named {name:?}");
        };
        Ok(tokens.remove(i))
    })
}

/// Every token's entry.
pub fn list(state_dir: &Path) -> Result<Vec<Entry>> {
    Ok(read_file(&tokens_path(state_dir))?.tokens)
}

/// The server's view of the token file, reloaded when it changes.
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Cached>,
}

struct Cached {
    /// (device, inode, size, mtime in ns) of the file last read; `None`
    /// when it did not exist.
    stamp: Option<(u64, u64, u64, i64)>,
    loaded: bool,
    /// Shared with the requests checking against it: no copy per request.
    entries: std::sync::Arc<Vec<(blake3::Hash, Entry)>>,
}

/// Why a token was not accepted.
#[derive(Debug)]
pub enum Refused {
    /// No token, or one that matches no entry.
    Unknown,
    /// The token file can't be read: nothing is accepted.
    Unavailable(String),
}

impl TokenStore {
    /// The store of `state_dir`, read now so that a damaged file stops the
    /// start.
    pub fn open(state_dir: &Path) -> Result<TokenStore> {
        let store = TokenStore {
            path: tokens_path(state_dir),
            cache: Mutex::new(Cached { stamp: None, loaded: false, entries: Default::default() }),
        };
        store.current().map_err(|e| anyhow::anyhow!(e))?;
        Ok(store)
    }

    /// The entries as the file has them now.
    fn current(&self) -> Result<std::sync::Arc<Vec<(blake3::Hash, Entry)>>, String> {
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino(), m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !c.loaded || c.stamp != stamp {
            let f = read_file(&self.path).map_err(|e| format!("{e:#}"))?;
            c.entries = std::sync::Arc::new(
                f.tokens
                    .into_iter()
                    .map(|e| {
                        let mut h = [0u8; 32];
                        hex::decode_to_slice(&e.hash, &mut h).expect("checked when read");
                        (blake3::Hash::from_bytes(h), e)
                    })
                    .collect(),
            );
            c.stamp = stamp;
            c.loaded = true;
        }
        Ok(c.entries.clone())
    }

    /// The entry of `token`, compared with every entry in constant time.
    pub fn check(&self, token: Option<&str>) -> Result<Entry, Refused> {
        let entries = self.current().map_err(Refused::Unavailable)?;
        let Some(token) = token else {
            return Err(Refused::Unknown);
        };
        let presented = blake3::hash(token.as_bytes());
        let mut found = None;
        for (hash, entry) in entries.iter() {
            // blake3::Hash compares in constant time.
            if *hash == presented {
                found = Some(entry);
            }
        }
        found.cloned().ok_or(Refused::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_added_checked_listed_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        assert!(matches!(store.check(Some("vt1_nothing")), Err(Refused::Unknown)));
        let t = add(dir.path(), "host1", "db1", Role::Append).unwrap();
        assert!(t.starts_with(PREFIX) && t.len() == PREFIX.len() + 64);
        let e = store.check(Some(&t)).unwrap();
        assert_eq!((e.name.as_str(), e.repo.as_str(), e.role), ("host1", "db1", Role::Append));
        // Only the hash is stored.
        let text = fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!text.contains(&t[PREFIX.len()..]), "{text}");
        assert!(add(dir.path(), "host1", "db2", Role::Read).unwrap_err().to_string().contains("exists already"));
        let t2 = add(dir.path(), "ops", "db1", Role::Admin).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        revoke(dir.path(), "host1").unwrap();
        assert!(matches!(store.check(Some(&t)), Err(Refused::Unknown)), "a revoked token stops working at once");
        assert_eq!(store.check(Some(&t2)).unwrap().role, Role::Admin);
        assert!(revoke(dir.path(), "host1").unwrap_err().to_string().contains("no token"));
        assert!(add(dir.path(), "bad name", "db1", Role::Read).is_err());
    }

    #[test]
    fn a_damaged_token_file_refuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let t = add(dir.path(), "a", "db1", Role::Read).unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        assert!(store.check(Some(&t)).is_ok());
        fs::write(dir.path().join("tokens.json"), b"{ not json").unwrap();
        assert!(matches!(store.check(Some(&t)), Err(Refused::Unavailable(_))));
        let Err(e) = TokenStore::open(dir.path()) else { panic!("a damaged token file opened") };
        assert!(e.to_string().contains("damaged"), "{e}");
    }
}
