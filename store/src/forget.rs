//! `vault forget`: which snapshots a retention policy keeps, per group, and
//! the retention lock that overrides any policy.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::retention::{self, Candidate, Duration, Policy};

/// Which snapshot fields form a group (restic's `--group-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// By host.
    pub host: bool,
    /// By the list of source paths.
    pub paths: bool,
    /// By the list of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy { host: true, paths: true, tags: false }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut g = GroupBy { host: false, paths: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => return Err(format!("--group-by: unknown field {other:?} (use host, paths, tags)")),
            }
        }
        Ok(g)
    }
}

/// A kept snapshot and why.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time.
    pub time: Timestamp,
    /// Reasons, e.g. "daily snapshot", "within 7y", "retention lock 7y".
    pub reasons: Vec<String>,
}

/// One group's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Host, when grouping by host.
    pub host: Option<String>,
    /// Paths, when grouping by paths.
    pub paths: Option<Vec<String>>,
    /// Tags, when grouping by tags.
    pub tags: Option<Vec<String>>,
    /// Kept snapshots, newest first.
    pub keep: Vec<Kept>,
    /// Snapshots to remove, newest first.
    pub remove: Vec<(SnapshotId, Timestamp)>,
}

/// The retention lock: snapshots newer than `min.before(now)` stay.
#[derive(Debug, Clone, Copy)]
pub struct RetentionLock {
    /// The minimum retention.
    pub min: Duration,
    /// The time it counts from (the earlier of the client's and the
    /// backend's clocks, so a clock set forward can't unlock anything).
    pub now: Timestamp,
}

impl RetentionLock {
    /// True when the lock protects a snapshot taken at `t`.
    pub fn protects(&self, t: Timestamp) -> bool {
        t > self.min.before(self.now, &TimeZone::UTC)
    }
}

/// Applies `policy` to each group of `snapshots`, then the retention lock
/// (see [`Planner::plan`]).
pub fn plan(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &Policy,
    group_by: GroupBy,
    tz: &TimeZone,
    lock: Option<RetentionLock>,
    stored_at: &dyn Fn(&SnapshotId) -> Option<Timestamp>,
    now: Timestamp,
) -> Vec<Group> {
    let mut p = Planner::new(group_by);
    for (id, s) in snapshots {
        p.add(*id, s);
    }
    p.plan(policy, tz, lock, stored_at, now)
}

/// A group's key: host, sorted paths and sorted tags, each when grouped by.
type GroupKey = (Option<String>, Option<Vec<String>>, Option<Vec<String>>);

/// Takes the snapshots a policy is applied to one at a time, holding of
/// each only its id, time, group and tags (groups and tag sets are held
/// once each): ~60 bytes a snapshot, where a decoded snapshot takes ~600,
/// and years of snapshots every few minutes are hundreds of thousands.
pub struct Planner {
    group_by: GroupBy,
    groups: Vec<GroupKey>,
    group_of: HashMap<GroupKey, u32>,
    tag_sets: Vec<Vec<String>>,
    tag_set_of: HashMap<Vec<String>, u32>,
    members: Vec<Member>,
}

struct Member {
    id: SnapshotId,
    time: Timestamp,
    group: u32,
    tags: u32,
}

/// The index of `key` in `all`, adding it when new.
fn intern<K: Clone + Eq + std::hash::Hash>(all: &mut Vec<K>, index: &mut HashMap<K, u32>, key: K) -> u32 {
    *index.entry(key).or_insert_with_key(|k| {
        all.push(k.clone());
        (all.len() - 1) as u32
    })
}

impl Planner {
    /// A planner grouping by `group_by`.
    pub fn new(group_by: GroupBy) -> Self {
        Planner {
            group_by,
            groups: Vec::new(),
            group_of: HashMap::new(),
            tag_sets: Vec::new(),
            tag_set_of: HashMap::new(),
            members: Vec::new(),
        }
    }

    /// Takes one snapshot into the plan.
    pub fn add(&mut self, id: SnapshotId, s: &Snapshot) {
        let g = self.group_by;
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let key = (g.host.then(|| s.host.clone()), g.paths.then(|| sorted(&s.paths)), g.tags.then(|| sorted(&s.tags)));
        let group = intern(&mut self.groups, &mut self.group_of, key);
        let tags = intern(&mut self.tag_sets, &mut self.tag_set_of, s.tags.clone());
        self.members.push(Member { id, time: s.time, group, tags });
    }

    /// Applies `policy` to each group of the snapshots taken, then the
    /// retention lock. Groups come sorted by key; in each, the snapshots
    /// newest first.
    ///
    /// `stored_at` gives, where known, when each snapshot object was stored
    /// by the backend's clock: the lock protects a snapshot by the later of
    /// its recorded time and that, so a back-dated snapshot can't be
    /// forgotten early.
    pub fn plan(
        self,
        policy: &Policy,
        tz: &TimeZone,
        lock: Option<RetentionLock>,
        stored_at: &dyn Fn(&SnapshotId) -> Option<Timestamp>,
        now: Timestamp,
    ) -> Vec<Group> {
        let Planner { groups, tag_sets, mut members, .. } = self;
        let mut order: Vec<u32> = (0..groups.len() as u32).collect();
        order.sort_by(|a, b| groups[*a as usize].cmp(&groups[*b as usize]));
        let mut rank = vec![0u32; groups.len()];
        for (r, g) in order.iter().enumerate() {
            rank[*g as usize] = r as u32;
        }
        members.sort_by(|a, b| {
            rank[a.group as usize].cmp(&rank[b.group as usize]).then(b.time.cmp(&a.time)).then(b.id.cmp(&a.id))
        });
        let mut out = Vec::with_capacity(groups.len());
        let mut groups: Vec<Option<GroupKey>> = groups.into_iter().map(Some).collect();
        for run in members.chunk_by(|a, b| a.group == b.group) {
            let (host, paths, tags) = groups[run[0].group as usize].take().expect("one run per group");
            let cands: Vec<Candidate> =
                run.iter().map(|m| Candidate { time: m.time, tags: tag_sets[m.tags as usize].clone() }).collect();
            let decisions = retention::apply_at(policy, &cands, tz, Some(now));
            let mut g = Group { host, paths, tags, keep: Vec::new(), remove: Vec::new() };
            for (m, mut d) in run.iter().zip(decisions) {
                let age_from = stored_at(&m.id).map_or(m.time, |t| t.max(m.time));
                if !d.keep
                    && let Some(l) = lock.filter(|l| l.protects(age_from))
                {
                    d.keep = true;
                    d.reasons.push(format!("retention lock {}", l.min));
                }
                if d.keep {
                    g.keep.push(Kept { id: m.id, time: m.time, reasons: d.reasons });
                } else {
                    g.remove.push((m.id, m.time));
                }
            }
            out.push(g);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    fn snap(host: &str, path: &str, time: &str) -> Snapshot {
        Snapshot {
            version: 1,
            time: time.parse().unwrap(),
            host: host.into(),
            user: "u".into(),
            paths: vec![path.into()],
            tags: vec![],
            tree: BlobId([0; 32]),
            parent: None,
            excludes: vec![],
            program_version: "t".into(),
            summary: None,
            original: None,
        }
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    #[test]
    fn groups_by_host_and_paths_and_keeps_per_group() {
        let snaps = vec![
            (id(1), snap("a", "/x", "2026-01-01T10:00:00Z")),
            (id(2), snap("a", "/x", "2026-01-02T10:00:00Z")),
            (id(3), snap("b", "/x", "2026-01-01T10:00:00Z")),
            (id(4), snap("a", "/y", "2026-01-01T10:00:00Z")),
        ];
        let policy = Policy { last: Some(1), ..Default::default() };
        let groups = plan(&snaps, &policy, GroupBy::default(), &TimeZone::UTC, None, &|_| None, Timestamp::now());
        assert_eq!(groups.len(), 3);
        let kept: Vec<SnapshotId> = groups.iter().flat_map(|g| g.keep.iter().map(|k| k.id)).collect();
        let removed: Vec<SnapshotId> = groups.iter().flat_map(|g| g.remove.iter().map(|r| r.0)).collect();
        assert_eq!(removed, vec![id(1)]);
        assert!(kept.contains(&id(2)) && kept.contains(&id(3)) && kept.contains(&id(4)));
        // One group for everything when grouping by nothing.
        let none: GroupBy = "".parse().unwrap();
        let groups = plan(&snaps, &policy, none, &TimeZone::UTC, None, &|_| None, Timestamp::now());
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].keep.len(), 1);
        assert_eq!(groups[0].keep[0].id, id(2));
    }

    #[test]
    fn retention_lock_overrides_the_policy() {
        let snaps = vec![
            (id(1), snap("a", "/x", "2019-01-01T10:00:00Z")),
            (id(2), snap("a", "/x", "2025-06-01T10:00:00Z")),
            (id(3), snap("a", "/x", "2026-01-02T10:00:00Z")),
        ];
        let policy = Policy { last: Some(1), ..Default::default() };
        let lock = RetentionLock { min: "5y".parse().unwrap(), now: "2026-01-03T00:00:00Z".parse().unwrap() };
        let g = &plan(&snaps, &policy, GroupBy::default(), &TimeZone::UTC, Some(lock), &|_| None, Timestamp::now())[0];
        assert_eq!(g.remove.iter().map(|r| r.0).collect::<Vec<_>>(), vec![id(1)]);
        let locked = g.keep.iter().find(|k| k.id == id(2)).unwrap();
        assert_eq!(locked.reasons, vec!["retention lock 5y".to_string()]);
    }

    #[test]
    fn group_by_parses() {
        assert_eq!("host,tags".parse::<GroupBy>().unwrap(), GroupBy { host: true, paths: false, tags: true });
        assert!("hosts".parse::<GroupBy>().is_err());
    }
}

/// Which snapshots a policy is applied to: all when every list is empty.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Snapshots of one of these hosts.
    pub hosts: Vec<String>,
    /// Snapshots carrying every tag of one of these comma-separated lists.
    pub tags: Vec<String>,
    /// Snapshots whose source paths include all of these.
    pub paths: Vec<String>,
}

impl Selection {
    /// True when `s` is selected.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.tags.is_empty()
                || self
                    .tags
                    .iter()
                    .any(|t| t.split(',').filter(|x| !x.is_empty()).all(|x| s.tags.iter().any(|y| y == x))))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each group's plan.
    pub groups: Vec<Group>,
    /// Snapshots removed (0 on a dry run).
    pub removed: usize,
    /// Snapshots the policy would remove that the retention lock kept.
    pub locked: usize,
    /// Snapshots that could not be read, and were left alone.
    pub unreadable: Vec<crate::Error>,
}

/// The repository's retention lock, measured from the earlier of this
/// machine's clock and the backend's, so a clock set forward can't unlock
/// anything. `None` when the repository has none.
pub fn retention_lock(repo: &crate::Repository) -> crate::Result<Option<RetentionLock>> {
    let Some(min) = &repo.config().min_retention else { return Ok(None) };
    let min =
        min.parse().map_err(|e: String| crate::Error::Invalid(format!("repository config: minimum retention: {e}")))?;
    let backend = crate::gc::backend_now(repo.backend())?;
    let backend = Timestamp::try_from(backend).unwrap_or(Timestamp::MAX);
    Ok(Some(RetentionLock { min, now: backend.min(Timestamp::now()) }))
}

/// When each snapshot object was stored, by the backend's clock.
pub fn stored_times(repo: &crate::Repository) -> crate::Result<HashMap<SnapshotId, Timestamp>> {
    Ok(repo
        .backend()
        .list_times(crate::backend::FileType::Snapshot)?
        .into_iter()
        .filter_map(|(n, _, t)| Some((SnapshotId::from_hex(&n).ok()?, Timestamp::try_from(t).ok()?)))
        .collect())
}

/// Applies `policy` to the snapshots `selection` picks, grouped by
/// `group_by` in time zone `tz`, under the retention lock, and removes
/// what it doesn't keep (unless `dry_run`). Each snapshot is taken into
/// the plan as it is read: only its id, time, group and tags are held.
pub fn apply(
    repo: &crate::Repository,
    selection: &Selection,
    policy: &Policy,
    group_by: GroupBy,
    tz: &TimeZone,
    dry_run: bool,
) -> crate::Result<Outcome> {
    if policy.is_empty() {
        return Err(crate::Error::Invalid(
            "no policy given: nothing would be removed (keep-last, keep-daily, keep-within, ...)".into(),
        ));
    }
    let lock = retention_lock(repo)?;
    let stored = stored_times(repo)?;
    let mut planner = Planner::new(group_by);
    let unreadable = repo.each_snapshot(|id, s| {
        if selection.matches(&s) {
            planner.add(id, &s);
        }
    })?;
    let groups = planner.plan(policy, tz, lock, &|id| stored.get(id).copied(), Timestamp::now());
    let mut removed = 0;
    if !dry_run {
        for (id, _) in groups.iter().flat_map(|g| &g.remove) {
            repo.backend().remove(crate::backend::FileType::Snapshot, &id.to_hex())?;
            removed += 1;
        }
    }
    let locked = groups
        .iter()
        .flat_map(|g| &g.keep)
        .filter(|k| k.reasons.iter().any(|r| r.starts_with("retention lock")))
        .count();
    Ok(Outcome { groups, removed, locked, unreadable })
}
