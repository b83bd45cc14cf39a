//! Exclude patterns (restic's rules), shared by the snapshot walk, its
//! prescan and restore's `--exclude`: a module of their own, so that
//! neither of the walk's two halves imports the other.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Builds the exclude matcher (restic's rules): a pattern starting with `/`
/// matches the absolute path; a relative pattern with a `/` matches at any
/// depth; a pattern without `/` matches any single name. `*` stops at `/`,
/// `**` doesn't.
pub fn exclude_matcher(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let anchored =
            if p.starts_with('/') || !p.contains('/') || p.starts_with("**") { p.clone() } else { format!("**/{p}") };
        let g = GlobBuilder::new(&anchored)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::Invalid(format!("exclude pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build().map_err(|e| Error::Invalid(format!("exclude patterns: {e}")))
}

/// True when the exclude set matches `path` or its last component.
pub(crate) fn is_excluded(set: &GlobSet, path: &Path) -> bool {
    if set.is_empty() {
        return false;
    }
    set.is_match(path) || path.file_name().is_some_and(|n| set.is_match(Path::new(n)))
}
