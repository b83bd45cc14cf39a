//! The operations files in `docs/`: the Prometheus alert rules pass
//! Debian's `promtool` (their syntax and their unit tests), and the
//! systemd units pass `systemd-analyze verify`. `.ci/run` installs both
//! tools; a missing one fails here with how to get it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// Runs `tool args` in `dir`; panics with its output unless it succeeds
/// and writes nothing to stderr when `quiet`.
fn run(tool: &str, package: &str, args: &[&str], dir: &Path, quiet: bool) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}: install Debian's {package} package (.ci/run does)"));
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{tool} {args:?} failed ({}):\n{so}\n{se}", out.status);
    assert!(!quiet || se.trim().is_empty(), "{tool} {args:?} warned:\n{se}");
    so.into_owned()
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let out = run("promtool", "prometheus", &["check", "rules", "alerts.yml"], &docs(), false);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run("promtool", "prometheus", &["test", "rules", "alerts.test.yml"], &docs(), false);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    // The units name /usr/local/bin/vault; verify wants the binary there,
    // so copies name the one under test.
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for e in fs::read_dir(docs().join("deploy")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".service") || name.ends_with(".timer") {
            let text = fs::read_to_string(&p).unwrap().replace("/usr/local/bin/vault", common::BIN);
            fs::write(dir.path().join(&name), text).unwrap();
            units.push(format!("./{name}"));
        }
    }
    units.sort();
    assert_eq!(units, ["./vault-backup.service", "./vault-backup.timer", "./vault-server.service"]);
    let mut args = vec!["verify", "--man=no"];
    args.extend(units.iter().map(String::as_str));
    run("systemd-analyze", "systemd", &args, dir.path(), true);
}
