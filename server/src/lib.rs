//! `vault server`: serves repositories over HTTP(S) to clients that use
//! `--repo rest:https://host:port/NAME`, with a role per access token.
//!
//! A production host gets an `append` token: it can add packs, index
//! segments and snapshots, and read everything, but never delete, replace,
//! add a key, mark packs or take the maintenance lease. Pruning and
//! forgetting run elsewhere with an `admin` token, or as the server's own
//! scheduled jobs. Serving decrypts nothing; what it can check without a
//! key (a pack's name is the hash of its bytes, names and sizes fit their
//! type) it checks. Only jobs open a repository, with the password file
//! of its `[[repository]]`.
//!
//! Serving keeps no state beyond the config and the token list: several
//! processes may serve one S3 repository behind a load balancer, and the
//! repository's own guarantees (create-only writes, the lease, two-phase
//! prune) hold through them because every request maps to one backend
//! operation. The server also runs scheduled jobs, which keep a history
//! in the state directory.
//!
//! - `config`: `vault-server.toml`.
//! - `tokens`: the token list and its roles.
//! - `routes`: the HTTP API (documented in `docs/server.md`).
//! - `serve`: listening, TLS, limits and graceful shutdown.
//! - `schedule`, `jobs`, `work`, `history`: cron schedules, the scheduler
//!   and its rules, what each kind of job does with the store, and the
//!   history of runs.
//! - `metrics`: `GET /metrics` and the CLI's `--metrics-file`.

pub mod config;
mod files;
pub mod history;
pub mod jobs;
pub mod metrics;
mod routes;
pub mod schedule;
pub mod serve;
pub mod tokens;
pub mod work;

pub use routes::State;
pub use serve::{main, run};
