//! `vault drill [SNAPSHOT] (--scratch-dir DIR | --verify-only) [--rto D]`:
//! the restore drill the server's drill jobs run, by hand.
//! Exit status: 0 restored, verified (and within the RTO); 1 not.

use anyhow::Result;
use vault_store::drill::{self, Mode};

use crate::args::DrillArgs;
use crate::context::{Ctx, print_json};

pub fn run(ctx: &Ctx, a: DrillArgs) -> Result<u8> {
    let opening = std::time::Instant::now();
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.filter.host.as_deref(), &a.filter.tags)?;
    let open_secs = opening.elapsed().as_secs_f64();
    let mode = match &a.scratch_dir {
        Some(d) => Mode::Scratch(d.clone()),
        None => Mode::VerifyOnly,
    };
    let mut report = drill::drill(&repo, &id, &snap, &mode)?;
    report.open_secs = open_secs;
    let over = a.rto.filter(|rto| report.rto_secs() > rto.as_secs_f64());
    if ctx.global.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(rto) = a.rto {
            v["rto_secs"] = rto.as_secs_f64().into();
            v["rto_met"] = over.is_none().into();
        }
        print_json(&v)?;
    } else {
        crate::out!("{}", report.summary())?;
        if let Some(rto) = a.rto {
            crate::out!("RTO {}: {}", vault_server::jobs::human(rto), if over.is_some() { "missed" } else { "met" })?;
        }
    }
    Ok(if report.ok && over.is_none() { 0 } else { 1 })
}
