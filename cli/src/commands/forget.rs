//! `vault forget`: remove snapshots by policy or by id, then optionally prune.

use anyhow::{Result, bail};
use serde_json::json;
use vault_store::SnapshotId;
use vault_store::backend::FileType;
use vault_store::forget;
use vault_store::retention::Policy;

use crate::args::ForgetArgs;
use crate::context::{Ctx, print_json_seq};
use crate::util::{escape, join_escaped, local_time};

fn policy(a: &ForgetArgs) -> Policy {
    Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
        within_hourly: a.keep_within_hourly,
        within_daily: a.keep_within_daily,
        within_weekly: a.keep_within_weekly,
        within_monthly: a.keep_within_monthly,
        within_yearly: a.keep_within_yearly,
        tags: a
            .keep_tags
            .iter()
            .map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
            .collect(),
    }
}

pub fn run(ctx: &Ctx, a: ForgetArgs) -> Result<u8> {
    let mut repo = if a.prune { ctx.open()? } else { ctx.open_without_index()? };
    let policy = policy(&a);
    let mut removed = 0usize;
    if !a.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give either snapshot ids or a --keep-* policy, not both");
        }
        let lock = forget::retention_lock(&repo)?;
        let stored = forget::stored_times(&repo)?;
        let stored_at = |id: &SnapshotId| stored.get(id).copied();
        let mut ids: Vec<(SnapshotId, jiff::Timestamp)> = Vec::new();
        for spec in &a.snapshots {
            let (id, s) = repo.find_snapshot(spec, None, &[])?;
            let age_from = stored_at(&id).map_or(s.time, |t| t.max(s.time));
            if let Some(l) = lock.filter(|l| l.protects(age_from)) {
                bail!(
                    "refusing to forget snapshot {} of {}: the repository's retention lock keeps every snapshot for {} (until {})",
                    id.short(),
                    local_time(&s.time),
                    l.min,
                    local_time(&add_duration(&age_from, &l.min))
                );
            }
            if !ids.iter().any(|(i, _)| *i == id) {
                ids.push((id, s.time));
            }
        }
        for (id, t) in &ids {
            if a.dry_run {
                crate::out!("would remove snapshot {} of {}", id.short(), local_time(t))?;
            } else {
                repo.backend().remove(FileType::Snapshot, &id.to_hex())?;
                crate::out!("removed snapshot {} of {}", id.short(), local_time(t))?;
                removed += 1;
            }
        }
    } else {
        if policy.is_empty() {
            bail!(
                "no policy given: nothing would be removed (use --keep-last, --keep-daily, --keep-within, ... or name snapshots)"
            );
        }
        let selection = forget::Selection { hosts: a.hosts.clone(), tags: a.tags.clone(), paths: a.paths.clone() };
        let tz = jiff::tz::TimeZone::system();
        let outcome = forget::apply(&repo, &selection, &policy, a.group_by, &tz, a.dry_run)?;
        for e in &outcome.unreadable {
            crate::say!("warning: skipping a snapshot: {e}");
        }
        let groups = &outcome.groups;
        if ctx.global.json {
            print_json_seq(groups.iter().map(|g| {
                json!({
                    "host": g.host, "paths": g.paths, "tags": g.tags,
                    "keep": g.keep.iter().map(|k| json!({"id": k.id.to_hex(), "time": k.time.to_string(), "reasons": k.reasons})).collect::<Vec<_>>(),
                    "remove": g.remove.iter().map(|(id, t)| json!({"id": id.to_hex(), "time": t.to_string()})).collect::<Vec<_>>(),
                })
            }))?;
        }
        for g in groups {
            if !ctx.global.json && !ctx.global.quiet {
                let mut what = Vec::new();
                if let Some(h) = &g.host {
                    what.push(format!("host {}", escape(h)));
                }
                if let Some(p) = &g.paths {
                    what.push(format!("paths [{}]", join_escaped(p, ", ")));
                }
                if let Some(t) = &g.tags {
                    what.push(format!("tags [{}]", join_escaped(t, ", ")));
                }
                crate::out!("snapshots of {}:", if what.is_empty() { "all".into() } else { what.join(", ") })?;
                crate::out!("keep {} snapshots:", g.keep.len())?;
                for k in &g.keep {
                    crate::out!("  {}  {}  {}", k.id.short(), local_time(&k.time), k.reasons.join(", "))?;
                }
                crate::out!("{} {} snapshots:", if a.dry_run { "would remove" } else { "remove" }, g.remove.len())?;
                for (id, t) in &g.remove {
                    crate::out!("  {}  {}", id.short(), local_time(t))?;
                }
            }
        }
        removed = outcome.removed;
        let locked = outcome.locked;
        if locked > 0 {
            crate::say!(
                "note: {locked} snapshots the policy would remove are kept by the repository's retention lock ({})",
                repo.config().min_retention.as_deref().unwrap_or("")
            );
        }
    }
    if !a.dry_run {
        ctx.info(format!("removed {removed} snapshots"));
    }
    if a.prune {
        return super::prune::run_on(ctx, &mut repo, &a.prune_opts, a.dry_run);
    }
    Ok(0)
}

/// `t` plus a calendar duration (for messages).
fn add_duration(t: &jiff::Timestamp, d: &vault_store::retention::Duration) -> jiff::Timestamp {
    let span =
        jiff::Span::new().years(d.years as i64).months(d.months as i64).days(d.days as i64).hours(d.hours as i64);
    t.to_zoned(jiff::tz::TimeZone::UTC).checked_add(span).map(|z| z.timestamp()).unwrap_or(jiff::Timestamp::MAX)
}
