//! `vault check [--read-data | --read-data-subset S]`: verify integrity.
//! Exit status: 0 clean, 1 damage found, 2 the check could not run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use vault_store::checker::{self, CheckOptions, CheckProgress, DataSubset, Report, Severity};

use crate::args::CheckArgs;
use crate::context::{Ctx, Exit, print_json};
use crate::progress::{Display, wanted};
use crate::util::{escape, human_bytes};

/// Paths shown per snapshot per finding in the text report.
const SHOWN_PATHS: usize = 20;

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<u8> {
    super::with_metrics(ctx, &a.metrics, vault_server::config::JobKind::Check, || run_check(ctx, &a))
}

fn run_check(ctx: &Ctx, a: &CheckArgs) -> Result<(u8, vault_server::jobs::Details)> {
    let report = match check(ctx, a) {
        Ok(r) => r,
        Err(e) => {
            crate::say!("error: the check could not run: {e:#}");
            return Err(Exit(2).into());
        }
    };
    if ctx.global.json {
        print_json(&report)?;
    } else {
        print_report(ctx, &report)?;
    }
    let errors = report.errors() as u64;
    let details = vault_server::jobs::Details { check_errors: Some(errors), ..Default::default() };
    Ok((if errors > 0 { 1 } else { 0 }, details))
}

fn check(ctx: &Ctx, a: &CheckArgs) -> Result<Report> {
    let mut repo = ctx.open_direct()?;
    let read_data = if a.read_data { Some(DataSubset::All) } else { a.read_data_subset.clone() };
    let progress = Arc::new(CheckProgress::default());
    let p2 = progress.clone();
    let display = Display::start(read_data.is_some() && wanted(ctx.global.quiet, ctx.global.json), move || {
        let total = p2.bytes_total.load(Ordering::Relaxed);
        (p2.packs_done.load(Ordering::Relaxed), p2.bytes_done.load(Ordering::Relaxed), 0, total, total > 0)
    });
    let report = checker::check(&mut repo, &CheckOptions { read_data }, &progress)?;
    drop(display);
    Ok(report)
}

fn print_report(ctx: &Ctx, r: &Report) -> Result<()> {
    for f in &r.findings {
        let label = match f.severity {
            Severity::Error => "error",
            Severity::Notice => "notice",
        };
        let line = format!("{label}: {}: {}", escape(&f.object), f.message);
        match f.severity {
            Severity::Error => crate::out!("{line}")?,
            Severity::Notice => {
                if !ctx.global.quiet {
                    crate::out!("{line}")?
                }
            }
        }
        for a in &f.affected {
            let short = a.snapshot.get(..8).unwrap_or(&a.snapshot);
            crate::out!("  affects snapshot {short} ({}, host {}):", escape(&a.time), escape(&a.host))?;
            for p in a.paths.iter().take(SHOWN_PATHS) {
                crate::out!("    {}", escape(p))?;
            }
            let more = a.paths.len().saturating_sub(SHOWN_PATHS) as u64 + a.paths_omitted;
            if more > 0 {
                crate::out!("    … and {more} more paths (--json lists them)")?;
            }
        }
    }
    let s = &r.stats;
    let mut what = format!(
        "checked {} keys, {} index segments, {} packs, {} snapshots, {} trees, {} data references",
        s.keys, s.index_segments, s.packs, s.snapshots, s.trees, s.data_refs
    );
    if s.packs_read > 0 {
        what.push_str(&format!(
            "; read {} packs ({}) and verified {} blobs",
            s.packs_read,
            human_bytes(s.bytes_read),
            s.blobs_verified
        ));
    }
    ctx.info(format!("{what} in {:.2}s", s.duration_secs));
    let errors = r.errors();
    let notices = r.findings.len() - errors;
    if errors == 0 {
        ctx.info(format!(
            "no errors found{}",
            if notices > 0 { format!(" ({notices} notices)") } else { String::new() }
        ));
    } else {
        crate::out!("{errors} errors found ({notices} notices)")?;
    }
    Ok(())
}
