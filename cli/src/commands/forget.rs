//! `vault forget`: remove snapshots by policy or by id, then optionally prune.

use anyhow::{Result, bail};
use serde_json::json;
use vault_store::backend::FileType;
use vault_store::forget::{self, RetentionLock};
use vault_store::retention::Policy;
use vault_store::{Repository, SnapshotId};

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

/// The retention lock, measured from the earlier of this machine's clock
/// and the backend's, so a clock set forward can't unlock anything.
fn retention_lock(repo: &Repository) -> Result<Option<RetentionLock>> {
    let Some(min) = &repo.config().min_retention else { return Ok(None) };
    let min = min.parse().map_err(|e: String| anyhow::anyhow!("repository config: minimum retention: {e}"))?;
    let backend = vault_store::gc::backend_now(repo.backend())?;
    let backend = jiff::Timestamp::try_from(backend).unwrap_or(jiff::Timestamp::MAX);
    Ok(Some(RetentionLock { min, now: backend.min(jiff::Timestamp::now()) }))
}

pub fn run(ctx: &Ctx, a: ForgetArgs) -> Result<u8> {
    let mut repo = if a.prune { ctx.open()? } else { ctx.open_without_index()? };
    let policy = policy(&a);
    let lock = retention_lock(&repo)?;
    // When each snapshot object was stored, by the backend's clock.
    let stored: std::collections::HashMap<SnapshotId, jiff::Timestamp> = repo
        .backend()
        .list_times(FileType::Snapshot)?
        .into_iter()
        .filter_map(|(n, _, t)| Some((SnapshotId::from_hex(&n).ok()?, jiff::Timestamp::try_from(t).ok()?)))
        .collect();
    let stored_at = |id: &SnapshotId| stored.get(id).copied();
    let mut removed = 0usize;
    if !a.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give either snapshot ids or a --keep-* policy, not both");
        }
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
        // Each snapshot is taken into the plan as it is read: only its id,
        // time, group and tags are held.
        let mut planner = forget::Planner::new(a.group_by);
        let bad = repo.each_snapshot(|id, s| {
            let chosen = (a.hosts.is_empty() || a.hosts.contains(&s.host))
                && (a.tags.is_empty()
                    || a.tags
                        .iter()
                        .any(|t| t.split(',').filter(|x| !x.is_empty()).all(|x| s.tags.iter().any(|y| y == x))))
                && a.paths.iter().all(|p| s.paths.contains(p));
            if chosen {
                planner.add(id, &s);
            }
        })?;
        for e in &bad {
            crate::say!("warning: skipping a snapshot: {e}");
        }
        let tz = jiff::tz::TimeZone::system();
        let groups = planner.plan(&policy, &tz, lock, &stored_at, jiff::Timestamp::now());
        if ctx.global.json {
            print_json_seq(groups.iter().map(|g| {
                json!({
                    "host": g.host, "paths": g.paths, "tags": g.tags,
                    "keep": g.keep.iter().map(|k| json!({"id": k.id.to_hex(), "time": k.time.to_string(), "reasons": k.reasons})).collect::<Vec<_>>(),
                    "remove": g.remove.iter().map(|(id, t)| json!({"id": id.to_hex(), "time": t.to_string()})).collect::<Vec<_>>(),
                })
            }))?;
        }
        for g in &groups {
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
            if !a.dry_run {
                for (id, _) in &g.remove {
                    repo.backend().remove(FileType::Snapshot, &id.to_hex())?;
                    removed += 1;
                }
            }
        }
        let locked: usize = groups
            .iter()
            .flat_map(|g| &g.keep)
            .filter(|k| k.reasons.iter().any(|r| r.starts_with("retention lock")))
            .count();
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
