//! Scheduled jobs, drills and metrics, through the `vault` binary: a real
//! server running a snapshot job and a drill job on a fast schedule,
//! scraped over HTTP and read back with a Prometheus text parser; the
//! history kept across a restart; a drill of a damaged repository; and
//! the CLI's `--metrics-file`.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The samples of a scrape (or textfile), parsed by prometheus-parse.
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The value of `name` with every label of `labels`; panics naming what
/// is there when it is missing.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = s.samples.iter().find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)));
    let Some(sample) = found else {
        let names: Vec<String> = s.samples.iter().map(|x| format!("{}{:?}", x.metric, x.labels)).collect();
        panic!("no {name} with {labels:?} among:\n{}", names.join("\n"));
    };
    match sample.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1", b"");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// A server config: the repository `r` at `repo` with a password file,
/// metrics on a free port, and `jobs` (TOML `[[job]]` tables).
fn config(v: &Vault, jobs: &str) -> String {
    let pw = v.path("password");
    fs::write(&pw, format!("{}\n", v.password)).unwrap();
    format!(
        "metrics-listen = \"127.0.0.1:0\"\n{jobs}\n[[repository]]\nname = \"r\"\nurl = \"{}\"\npassword-file = \"{}\"\n",
        v.repo.display(),
        pw.display()
    )
}

/// `vault server jobs --json`.
fn history(server: &ServerProc) -> Vec<Value> {
    let out = Cmd::vault().args(["server", "jobs", "--json", "--config"]).arg(&server.config).run().ok();
    out.json().as_array().unwrap().clone()
}

/// Waits until `want` holds of the history (at most a minute).
fn wait_history(server: &ServerProc, what: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let h = history(server);
        if want(&h) {
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited a minute for {what}; history: {h:#?}\nlog:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count(h: &[Value], job: &str, status: &str) -> usize {
    h.iter().filter(|r| r["job"] == job && r["status"] == status).count()
}

#[test]
fn a_server_runs_snapshot_and_drill_jobs_and_reports_them_in_metrics() {
    let v = Vault::init();
    let src = v.src("etc");
    write(&src.join("a.conf"), &random_bytes(1, 300_000));
    write(&src.join("sub/b.conf"), b"listen 80\n");
    let scratch = v.path("scratch");
    let jobs = format!(
        "[[job]]\nname = \"etc\"\nkind = \"snapshot\"\nrepo = \"r\"\nschedule = \"*/2 * * * * *\"\npaths = [\"{}\"]\nrpo = \"5m\"\ntags = [\"sched\"]\n\
         [[job]]\nname = \"etc-drill\"\nkind = \"drill\"\nrepo = \"r\"\nschedule = \"*/3 * * * * *\"\nscratch-dir = \"{}\"\nrto = \"15m\"\ntags = [\"sched\"]\n\
         [[job]]\nname = \"etc-check\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"*/4 * * * * *\"\nread-data-subset = \"n/7\"\n",
        src.display(),
        scratch.display()
    );
    let mut server = ServerProc::start(&[], &config(&v, &jobs), vec![]);
    let h = wait_history(&server, "two snapshots and a drill", |h| {
        count(h, "etc", "success") >= 2
            && count(h, "etc-drill", "success") >= 1
            && count(h, "etc-check", "success") >= 1
    });
    // What the snapshot job stored is the source.
    let snap = h.iter().find(|r| r["job"] == "etc" && r["status"] == "success").unwrap();
    let id = snap["snapshot"].as_str().unwrap();
    assert!(snap["bytes_read"].as_u64().unwrap() >= 300_000, "{snap:#}");
    let target = v.path("restored");
    v.restore(id, &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    // The drill restored, verified and removed its copy.
    let drill = h.iter().find(|r| r["job"] == "etc-drill" && r["status"] == "success").unwrap();
    assert_eq!(drill["drill"]["ok"], true, "{drill:#}");
    assert_eq!(drill["drill"]["verified"], 2, "{drill:#}");
    assert!(drill["drill"]["bytes"].as_u64().unwrap() >= 300_000);
    // The RTO measured includes opening the repository.
    let (open, restore) =
        (drill["drill"]["open_secs"].as_f64().unwrap(), drill["drill"]["duration_secs"].as_f64().unwrap());
    assert!(open > 0.0 && restore > 0.0, "{drill:#}");
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "the scratch copy is gone");

    // A request through the API, so the request metrics have something.
    let token = server.token("r", "read", "monitor");
    let (status, body) = http(&server.addr, &format!("GET /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {token}"), b"");
    assert_eq!(status, 200, "{body}");
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(listed.iter().any(|r| r["job"] == "etc-drill"));

    let m = scrape(&server.metrics_addr());
    let etc = [("job", "etc"), ("repo", "r")];
    let drill_l = [("job", "etc-drill"), ("repo", "r")];
    let now = jiff::Timestamp::now().as_second() as f64;
    let last = value(&m, "vault_job_last_success_timestamp_seconds", &etc);
    assert!(last > now - 60.0 && last <= now + 1.0, "{last} vs {now}");
    assert!(value(&m, "vault_job_last_run_duration_seconds", &etc) > 0.0);
    assert!(value(&m, "vault_job_runs_total", &[("job", "etc"), ("repo", "r"), ("status", "success")]) >= 1.0);
    value(&m, "vault_job_runs_total", &[("job", "etc"), ("repo", "r"), ("status", "skipped")]);
    value(&m, "vault_job_runs_total", &[("job", "etc"), ("repo", "r"), ("status", "failure")]);
    let rpo = value(&m, "vault_rpo_seconds", &etc);
    assert!((0.0..60.0).contains(&rpo), "rpo {rpo}");
    assert_eq!(value(&m, "vault_rpo_target_seconds", &etc), 300.0);
    assert!(value(&m, "vault_snapshot_last_source_bytes", &etc) >= 300_000.0);
    value(&m, "vault_snapshot_last_added_bytes", &etc);
    assert_eq!(value(&m, "vault_drill_last_success", &drill_l), 1.0);
    assert!(value(&m, "vault_drill_last_duration_seconds", &drill_l) > 0.0);
    assert_eq!(value(&m, "vault_rto_target_seconds", &drill_l), 900.0);
    assert!(value(&m, "vault_http_requests_total", &[("method", "GET"), ("code", "200")]) >= 1.0);
    // The repository's figures come from a listing made after each job.
    assert!(value(&m, "vault_repository_snapshots", &[("repo", "r")]) >= 1.0);
    assert!(value(&m, "vault_repository_size_bytes", &[("repo", "r")]) > 0.0);
    assert_eq!(value(&m, "vault_check_last_errors", &[("job", "etc-check")]), 0.0);
    // Every metric the alert rules use is one the server exports.
    let rules = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/alerts.yml")).unwrap();
    let exported: std::collections::BTreeSet<&str> = m.samples.iter().map(|x| x.metric.as_str()).collect();
    let mut used = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("vault_") {
            used += 1;
            assert!(
                exported.contains(word),
                "docs/alerts.yml uses {word}, which the server does not export: {exported:?}"
            );
        }
    }
    assert!(used >= 8, "{used}");

    // The history survives a restart, and the metrics read it back.
    server.stop(libc::SIGTERM);
    let before = history(&server);
    server.spawn();
    let after = history(&server);
    assert!(after.len() >= before.len() && after[..before.len()] == before[..], "the history is kept");
    let m = scrape(&server.metrics_addr());
    assert!(value(&m, "vault_job_last_success_timestamp_seconds", &etc) >= last);
    assert_eq!(value(&m, "vault_drill_last_success", &drill_l), 1.0);
}

/// A repository with one snapshot whose data pack is then damaged.
fn damaged() -> (Vault, String) {
    let v = Vault::init();
    let src = v.src("data");
    write(&src.join("big.bin"), &random_bytes(7, 2_000_000));
    v.snapshot(&[&src], &[]);
    let packs = v.repo_files("data");
    let pack = packs.iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    flip_bit(pack, 1000);
    (v, file_name(pack))
}

#[test]
fn a_drill_of_a_damaged_repository_fails_names_the_damage_and_the_metrics_say_so() {
    let (v, pack) = damaged();
    let jobs = "[[job]]\nname = \"dr\"\nkind = \"drill\"\nrepo = \"r\"\nschedule = \"0 3 1 * *\"\nverify-only = true\n\
                [[job]]\nname = \"dr-fast\"\nkind = \"drill\"\nrepo = \"r\"\nschedule = \"* * * * * *\"\nscratch-dir = \"/tmp\"\n";
    let server = ServerProc::start(&[], &config(&v, jobs), vec![]);
    // `vault server run` runs it now, in its own process, and records it.
    let out = Cmd::vault().args(["server", "run", "dr", "--config"]).arg(&server.config).run().code_is(1);
    assert!(out.stderr_str().contains(&pack[..16]), "the damaged pack is named: {}", out.explain());
    let h = wait_history(&server, "a failed scheduled drill", |h| count(h, "dr-fast", "failure") >= 1);
    let manual = h.iter().find(|r| r["job"] == "dr").unwrap();
    assert_eq!((manual["status"].as_str(), manual["trigger"].as_str()), (Some("failure"), Some("manual")));
    assert_eq!(manual["drill"]["ok"], false);
    let fast = h.iter().find(|r| r["job"] == "dr-fast").unwrap();
    assert!(fast["error"].as_str().unwrap().contains(&pack[..16]), "{fast:#}");
    // Both show in the metrics: the manual run from the history file.
    let m = scrape(&server.metrics_addr());
    for job in ["dr", "dr-fast"] {
        let l = [("job", job), ("repo", "r")];
        assert_eq!(value(&m, "vault_drill_last_success", &l), 0.0, "{job}");
        assert!(value(&m, "vault_job_runs_total", &[("job", job), ("status", "failure")]) >= 1.0, "{job}");
    }
    // No scratch copy is left behind by the failed drills.
    assert!(!fs::read_dir("/tmp").unwrap().flatten().any(|e| {
        file_name(&e.path()).starts_with("vault-drill-")
            && fs::metadata(e.path())
                .map(|m| m.modified().unwrap().elapsed().unwrap() > Duration::from_secs(5))
                .unwrap_or(false)
    }));
}

#[test]
fn cli_runs_write_the_same_figures_to_a_metrics_file() {
    let v = Vault::init();
    let src = v.src("s");
    write(&src.join("f"), &random_bytes(3, 100_000));
    let file = v.path("textfile/vault.prom");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let f = file.to_str().unwrap();
    v.cmd().args(["snapshot", "--metrics-file", f]).arg(&src).run().ok();
    let m = parse(&fs::read_to_string(&file).unwrap());
    let repo = v.repo.to_str().unwrap();
    let l = [("job", "snapshot"), ("repo", repo)];
    let first = value(&m, "vault_job_last_success_timestamp_seconds", &l);
    assert!(value(&m, "vault_snapshot_last_source_bytes", &l) >= 100_000.0);
    assert_eq!(value(&m, "vault_job_runs_total", &[("job", "snapshot"), ("status", "success")]), 1.0);
    // A failed run is counted and keeps the last success's time.
    v.cmd().args(["snapshot", "--metrics-file", f]).arg(v.src("missing")).run().failed();
    let m = parse(&fs::read_to_string(&file).unwrap());
    assert_eq!(value(&m, "vault_job_last_success_timestamp_seconds", &l), first);
    assert_eq!(value(&m, "vault_job_runs_total", &[("job", "snapshot"), ("status", "failure")]), 1.0);
    assert_eq!(value(&m, "vault_job_last_run_success", &l), 0.0);
    // Check and prune, under job names of their own, in files of their own.
    let checkfile = v.path("textfile/check.prom");
    v.cmd().args(["check", "--metrics-job", "nightly-check", "--metrics-file"]).arg(&checkfile).run().ok();
    let m = parse(&fs::read_to_string(&checkfile).unwrap());
    assert_eq!(value(&m, "vault_check_last_errors", &[("job", "nightly-check")]), 0.0);
    let prunefile = v.path("textfile/prune.prom");
    v.cmd().args(["prune", "--metrics-file"]).arg(&prunefile).run().ok();
    let m = parse(&fs::read_to_string(&prunefile).unwrap());
    assert_eq!(value(&m, "vault_job_last_run_success", &[("job", "prune")]), 1.0);
    // Written atomically: no temporary file is left beside them.
    let names: Vec<String> =
        fs::read_dir(file.parent().unwrap()).unwrap().map(|e| file_name(&e.unwrap().path())).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn a_drill_by_hand_restores_verifies_and_times_a_snapshot() {
    let v = Vault::init();
    let src = v.src("d");
    write(&src.join("x"), &random_bytes(9, 500_000));
    v.snapshot(&[&src], &[]);
    let out = v.cmd().args(["drill", "--json", "--verify-only", "--rto", "1h"]).run().ok();
    let r = out.json();
    assert_eq!(
        (r["ok"].as_bool(), r["rto_met"].as_bool(), r["bytes"].as_u64()),
        (Some(true), Some(true), Some(500_000))
    );
    let scratch = v.path("scratch");
    let out = v.cmd().args(["drill", "latest", "--scratch-dir"]).arg(&scratch).run().ok();
    assert!(out.stdout_str().contains(": ok"), "{}", out.explain());
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    // Damage fails it, naming the pack.
    let packs = v.repo_files("data");
    flip_bit(&packs[0], 500);
    let out = v.cmd().args(["drill", "--verify-only"]).run().code_is(1);
    assert!(
        out.stdout_str().contains("FAILED") && out.stdout_str().contains(&file_name(&packs[0])[..16]),
        "{}",
        out.explain()
    );
}

#[test]
fn job_config_mistakes_are_named_before_the_server_starts() {
    let v = Vault::init();
    for (jobs, needle) in [
        (
            "[[job]]\nname = \"a\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\npaths = [\"/etc\"]\n",
            "paths does not apply to a check job",
        ),
        ("[[job]]\nname = \"a\"\nkind = \"check\"\nrepo = \"nope\"\nschedule = \"0 3 * * *\"\n", "nope"),
        ("[[job]]\nname = \"a\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"0 25 * * *\"\n", "0 25 * * *"),
        (
            "[[job]]\nname = \"a\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\ntime-zone = \"Europe/Lundon\"\n",
            "Europe/Lundon",
        ),
        ("[[job]]\nname = \"a\"\nkind = \"forget\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\n", "needs a policy"),
        ("[[job]]\nname = \"a\"\nkind = \"drill\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\n", "scratch-dir"),
    ] {
        let dir = v.path("cfg");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vault-server.toml");
        fs::write(
            &path,
            format!("listen = \"127.0.0.1:0\"\nstate-dir = \"{}\"\n{}", dir.join("state").display(), config(&v, jobs)),
        )
        .unwrap();
        let out = Cmd::vault().args(["server", "--config"]).arg(&path).run().failed();
        assert!(out.stderr_str().contains(needle), "{needle}: {}", out.explain());
    }
}
