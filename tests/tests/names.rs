//! Names holding newlines, terminal escapes, backslashes and bytes that
//! aren't UTF-8, in text and JSON output. Text output escapes them (`\n`,
//! `\t`, `\r`, `\\`, `\xNN`), so a name can't forge a line or drive the
//! terminal and no two names print alike; `--json` keeps them raw.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Entry names of the source tree and how text output must show them.
const NAMES: [(&[u8], &str); 9] = [
    (b"new\nline", r"new\nline"),
    (b"new\\nline", r"new\\nline"),
    (b"clear\x1b[2J", r"clear\x1b[2J"),
    (b"tab\there\r", r"tab\there\r"),
    (b"bell\x07del\x7f", r"bell\x07del\x7f"),
    ("c1\u{9b}31m".as_bytes(), r"c1\xc2\x9b31m"),
    (b"latin1-\xe9", r"latin1-\xe9"),
    ("ok-\u{e9}t\u{e9} \u{65e5}".as_bytes(), "ok-\u{e9}t\u{e9} \u{65e5}"),
    (b"dir\nwith", r"dir\nwith"),
];
/// The source directory's own name.
const ROOT: (&[u8], &str) = (b"src\n\x1b[31mred", r"src\n\x1b[31mred");
const TAG: &str = "t\nag";
const HOST: &str = "ho\x1bst";

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Builds the tree; returns each entry's path and how it must print.
fn build(v: &Vault) -> (PathBuf, Vec<(PathBuf, String)>) {
    let parent = v.sources.path().to_path_buf();
    let plain = parent.to_str().expect("temporary paths are ASCII").to_string();
    let src = parent.join(os(ROOT.0));
    let shown_src = format!("{plain}/{}", ROOT.1);
    let mut entries = vec![(src.clone(), shown_src.clone())];
    for (i, (raw, shown)) in NAMES.iter().enumerate() {
        let p = src.join(os(raw));
        if raw.starts_with(b"dir") {
            write(&p.join("inner"), b"inner\n");
            entries.push((p.join("inner"), format!("{shown_src}/{shown}/inner")));
        } else {
            write(&p, format!("file {i}\n").as_bytes());
        }
        entries.push((p, format!("{shown_src}/{shown}")));
    }
    std::os::unix::fs::symlink(os(b"tar\nget\x1b[0m"), src.join("link")).unwrap();
    entries.push((src.join("link"), format!("{shown_src}/link")));
    // The ancestors of the source are listed too (all plain).
    for a in parent.ancestors().filter(|a| *a != Path::new("/")) {
        entries.push((a.to_path_buf(), a.to_str().unwrap().to_string()));
    }
    (src, entries)
}

/// Asserts that text output is UTF-8 with no control character but the
/// line ends, and returns its lines.
#[track_caller]
fn clean_lines(bytes: &[u8], what: &str) -> Vec<String> {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what} is not UTF-8 ({e}): {bytes:?}"));
    let bad: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(bad.is_empty(), "{what} holds control characters {bad:?}:\n{text}");
    text.lines().map(str::to_string).collect()
}

#[test]
fn ls_and_other_text_output_escape_names_and_json_keeps_them_raw() {
    let v = Vault::init();
    let (src, entries) = build(&v);
    v.snapshot(&[&src], &["--tag", TAG, "--host", HOST]);

    // `ls`: exactly one line per entry, each the escaped path.
    let out = v.cmd().args(["ls", "latest"]).run().ok();
    let lines = clean_lines(&out.stdout, "ls output");
    let want: BTreeSet<&str> = entries.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(lines.len(), entries.len(), "one line per entry:\n{}", out.explain());
    assert_eq!(lines.iter().map(String::as_str).collect::<BTreeSet<_>>(), want, "{}", out.explain());

    // `ls -l`: the symlink's target is escaped too.
    let out = v.cmd().args(["ls", "-l", "latest"]).run().ok();
    let long = clean_lines(&out.stdout, "ls -l output");
    assert_eq!(long.len(), entries.len(), "{}", out.explain());
    assert!(long.iter().any(|l| l.ends_with(r"/link -> tar\nget\x1b[0m")), "{}", out.explain());

    // `ls --json`: the raw names (non-UTF-8 bytes as U+FFFD, as before).
    let out = v.cmd().args(["ls", "--json", "latest"]).run().ok();
    let paths: BTreeSet<String> = out
        .stdout_str()
        .lines()
        .map(|l| {
            let o: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}"));
            o["path"].as_str().expect("a path").to_string()
        })
        .collect();
    assert_eq!(paths.len(), entries.len(), "{}", out.explain());
    for (p, _) in &entries {
        assert!(paths.contains(&*p.to_string_lossy()), "--json lacks {p:?}: {paths:#?}");
    }
    assert!(paths.contains(&*src.join("new\nline").to_string_lossy()));
    assert!(paths.contains(&format!("{}/latin1-\u{fffd}", src.to_string_lossy())));

    // `snapshots`: host, tags and paths escaped, one line per snapshot.
    let out = v.cmd().arg("snapshots").run().ok();
    let lines = clean_lines(&out.stdout, "snapshots output");
    assert_eq!(lines.len(), 2, "a header and one snapshot:\n{}", out.explain());
    for shown in [r"ho\x1bst", r"t\nag", &entries[0].1] {
        assert!(lines[1].contains(shown), "the snapshot line lacks {shown:?}:\n{}", out.explain());
    }
    let list = v.snapshots(&[]);
    assert_eq!(list[0]["host"], HOST);
    assert_eq!(list[0]["tags"][0], TAG);
    assert_eq!(list[0]["paths"][0], *src.to_string_lossy());

    // `forget --dry-run` names the group by host and paths.
    let out = v.cmd().args(["forget", "--keep-last", "1", "--dry-run"]).run().ok();
    let lines = clean_lines(&out.stdout, "forget output");
    assert!(lines.iter().any(|l| l.contains(r"host ho\x1bst") && l.contains(&entries[0].1)), "{}", out.explain());

    // A restore error names the path escaped, on one line.
    let target = v.path("target");
    let blocked = restored(&target, &src).join(os(b"clear\x1b[2J"));
    fs::create_dir_all(blocked.join("in the way")).unwrap();
    let out = v.restore("latest", &target, &[]).code_is(3);
    let lines = clean_lines(&out.stderr, "restore's stderr");
    let shown = format!("{}/{}/clear\\x1b[2J", target.display(), entries[0].1.trim_start_matches('/'));
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("error: {shown}: ")) && l.contains("directory is in the way")),
        "no error line for {shown}:\n{}",
        out.explain()
    );
    assert!(lines.iter().all(|l| l.starts_with("error: ") || l.starts_with("restored ")), "{}", out.explain());
    assert_eq!(fs::read(restored(&target, &src).join("new\nline")).unwrap(), b"file 0\n");

    // `check` lists the paths a damaged pack affects, escaped (as lossy
    // UTF-8: the checker keeps paths as strings, in --json too).
    for pack in v.repo_files("data") {
        fs::File::options().write(true).open(&pack).unwrap().set_len(100).unwrap();
    }
    let out = v.cmd().arg("check").run().code_is(1);
    let lines = clean_lines(&out.stdout, "check output");
    for (_, shown) in entries.iter().filter(|(p, _)| p.is_file()) {
        let shown = shown.replace(r"\xe9", "\u{fffd}");
        assert!(lines.iter().any(|l| l.trim() == shown), "check does not list {shown:?}:\n{}", out.explain());
    }
    assert!(lines.iter().any(|l| l.contains(r"host ho\x1bst")), "{}", out.explain());
}
