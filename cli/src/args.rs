//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// vault: fast, deduplicating, encrypted backups.
#[derive(Debug, Parser)]
#[command(name = "vault", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Repository location: a directory path, file:///path, s3:BUCKET/PREFIX, s3://BUCKET/PREFIX,
    /// or a vault server's rest:https://HOST:PORT/NAME
    #[arg(short = 'r', long = "repo", env = "VAULT_REPOSITORY", global = true, value_name = "REPO")]
    pub repo: Option<String>,
    /// Backend option (repeatable): s3.endpoint=URL, s3.region=R, s3.path-style=true|false,
    /// s3.storage-class=CLASS (data packs), s3.connections=N, s3.retries=N, s3.timeout=SECONDS;
    /// rest.connections=N, rest.retries=N, rest.timeout=SECONDS
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Read the password from this file (first line)
    #[arg(long, env = "VAULT_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its first line of output as the password
    #[arg(long, env = "VAULT_PASSWORD_COMMAND", global = true, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Read the access token for a vault server (rest: repositories) from this file [default: $VAULT_TOKEN]
    #[arg(long, env = "VAULT_TOKEN_FILE", global = true, value_name = "FILE", conflicts_with = "token_command")]
    pub token_file: Option<PathBuf>,
    /// Run this shell command and use its first line of output as the access token
    #[arg(long, env = "VAULT_TOKEN_COMMAND", global = true, value_name = "CMD")]
    pub token_command: Option<String>,
    /// Trust the CA certificates in this PEM file (instead of the system's) for a vault server over HTTPS
    #[arg(long, env = "VAULT_CACERT", global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Directory of the local index cache [default: $XDG_CACHE_HOME/vault]
    #[arg(long, env = "VAULT_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use a temporary index cache instead of the shared one
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more about what happens (also each retried request to a remote repository)
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Machine-readable JSON output where a command prints results
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up files, directories or a stream
    #[command(alias = "backup")]
    Snapshot(SnapshotArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List files in a snapshot
    Ls(LsArgs),
    /// Write one file from a snapshot to standard output
    Dump(DumpArgs),
    /// Restore a snapshot into a directory
    Restore(RestoreArgs),
    /// A restore drill: restore a snapshot into a scratch directory (or read it all, --verify-only), verify every byte, time it, remove the copy
    Drill(DrillArgs),
    /// Manage the passwords (keys) that open the repository
    #[command(subcommand)]
    Key(KeyCommand),
    /// Remove snapshots by a retention policy or by id
    Forget(ForgetArgs),
    /// Remove data no snapshot uses (two-phase, safe with concurrent snapshots)
    Prune(PruneArgs),
    /// Show the repository settings, or raise the retention lock
    Config(ConfigArgs),
    /// Verify the repository: structure, and with --read-data all data
    Check(CheckArgs),
    /// Rebuild the index from the packs, or rewrite snapshots that lost data
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Print a shell completion script
    Completion(CompletionArgs),
    /// Serve repositories over HTTP(S) with per-token roles (read, append, admin)
    Server(ServerArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct ServerArgs {
    /// The server's configuration (vault-server.toml)
    #[arg(long, global = true, value_name = "FILE", env = "VAULT_SERVER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Manage the access tokens of the server
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the scheduled jobs and their runs on record (--json: every run, as an array)
    Jobs,
    /// Run a job now, in this process, and wait for it (it is recorded as the server's runs are)
    Run {
        /// The job's name
        job: String,
    },
}

/// `--metrics-file`: the run's figures for node_exporter's textfile collector.
#[derive(Debug, Args, Clone)]
pub struct MetricsArgs {
    /// Write this run's figures to FILE (Prometheus text, for node_exporter's textfile collector), atomically
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<std::path::PathBuf>,
    /// The `job` label in --metrics-file [default: the command's name]
    #[arg(long, value_name = "NAME", requires = "metrics_file")]
    pub metrics_job: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new token; it is printed once, alone on the last line, and only its hash is kept
    Add {
        /// The repository (a [[repository]] name of the config) the token opens
        #[arg(long, value_name = "NAME")]
        repo: String,
        /// What the token may do: read (list and read), append (also add backups), admin (everything)
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// A name for the token (for logs and revoking), e.g. the host that uses it
        name: String,
    },
    /// List the tokens (names, repositories, roles; never the tokens)
    List,
    /// Revoke a token: it stops working at once, also on a running server
    Revoke {
        /// The token's name
        name: String,
    },
}

/// `init --kdf-memory`: what a reader accepts of a key file with one lane.
fn kdf_memory() -> clap::builder::RangedI64ValueParser<u32> {
    use vault_store::crypto::KdfParams;
    clap::value_parser!(u32).range(i64::from(KdfParams::MIN_MEMORY_KIB_PER_LANE)..=i64::from(KdfParams::MAX_MEMORY_KIB))
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Average chunk size (min is a quarter, max four times it), e.g. 1M, 256K
    #[arg(long, value_name = "SIZE", value_parser = crate::util::parse_size)]
    pub chunk_size: Option<u64>,
    /// Default compression of file data: auto (zstd 1), off, fastest (zstd -3), default (zstd 3), max (zstd 19), or a zstd level -7..22
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub compression: vault_store::pack::CompressionMode,
    /// Target pack file size, e.g. 16M
    #[arg(long, value_name = "SIZE", value_parser = crate::util::parse_size)]
    pub pack_size: Option<u64>,
    /// Argon2id memory cost in KiB for the key (default 65536; 8 to 1048576,
    /// what a reader accepts: docs/format.md section 5.3)
    #[arg(long, value_name = "KIB", hide = true, value_parser = kdf_memory())]
    pub kdf_memory: Option<u32>,
    /// Retention lock: no snapshot younger than this (e.g. 7y) can be forgotten
    #[arg(long, value_name = "DURATION", value_parser = clap::value_parser!(vault_store::retention::Duration))]
    pub min_retention: Option<vault_store::retention::Duration>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Files and directories to back up
    #[arg(value_name = "PATH", required_unless_present_any = ["stdin", "stdin_from_command"])]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable, or comma-separated)
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Exclude paths matching this glob (repeatable)
    #[arg(long = "exclude", short = 'e', value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude globs from a file, one per line
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Don't cross file system boundaries
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Compare against this snapshot instead of the latest matching one
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Read every file, ignoring the parent snapshot
    #[arg(long, conflicts_with = "parent")]
    pub force: bool,
    /// Back up standard input as one file
    #[arg(long, conflicts_with_all = ["paths", "stdin_from_command"])]
    pub stdin: bool,
    /// Back up the output of COMMAND (after --); fails if it exits non-zero
    #[arg(long, conflicts_with = "paths")]
    pub stdin_from_command: bool,
    /// File name for --stdin / --stdin-from-command
    #[arg(long, alias = "stdin-filename", value_name = "NAME", default_value = "stdin")]
    pub stdin_name: String,
    /// Compression for this run: auto, off, fastest, default, max or a zstd level [default: the repository's]
    #[arg(long, value_name = "MODE")]
    pub compression: Option<vault_store::pack::CompressionMode>,
    /// Record this time instead of now: RFC 3339 (2026-01-31T23:00:00Z) or local "2026-01-31 23:00:00"
    #[arg(long, value_name = "TIME", value_parser = crate::util::parse_time)]
    pub time: Option<jiff::Timestamp>,
    /// The command for --stdin-from-command
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct SnapshotFilter {
    /// Only snapshots of this host
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Snapshot id, unique prefix, or `latest`
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Restore into a new directory made in DIR, removed afterwards
    #[arg(long, value_name = "DIR", required_unless_present = "verify_only")]
    pub scratch_dir: Option<PathBuf>,
    /// Write nothing: read, authenticate and hash every chunk of every file
    #[arg(long, conflicts_with = "scratch_dir")]
    pub verify_only: bool,
    /// The recovery time objective: the drill fails when it takes longer (e.g. 15m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = vault_server::config::parse_long_duration)]
    pub rto: Option<std::time::Duration>,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id, unique prefix, or `latest`
    pub snapshot: String,
    /// Directory or file inside the snapshot
    pub path: Option<String>,
    /// Long listing (mode, owner, size, time)
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id, unique prefix, or `latest`
    pub snapshot: String,
    /// Absolute path of the file inside the snapshot
    pub path: String,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:SUBPATH
    pub snapshot: String,
    /// Directory to restore into
    #[arg(short, long, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only paths matching this glob (repeatable)
    #[arg(long = "include", short = 'i', value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip paths matching this glob (repeatable)
    #[arg(long = "exclude", short = 'e', value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Re-read every restored file and check it against the snapshot
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub filter: SnapshotFilter,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List keys
    List,
    /// Add a key for another password
    Add(NewPassword),
    /// Remove a key (not the last one)
    Remove {
        /// Key id or unique prefix
        id: String,
    },
    /// Change the password: add a key for the new one, remove the current one
    Passwd(NewPassword),
}

#[derive(Debug, Args)]
pub struct NewPassword {
    /// Read the new password from this file (else prompt)
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also read every pack and verify every blob in it
    #[arg(long)]
    pub read_data: bool,
    /// Read only a subset of the packs: a share (10%), a slice (3/7: the 3rd
    /// of 7 fixed slices) or an amount (5G)
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data", value_parser = clap::value_parser!(vault_store::checker::DataSubset))]
    pub read_data_subset: Option<vault_store::checker::DataSubset>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index segments from the headers of the packs present
    Index,
    /// Write new snapshots that leave out files whose data is lost
    Snapshots {
        /// Remove each damaged snapshot once its replacement is saved
        #[arg(long)]
        forget: bool,
        /// Only report what would be dropped
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Snapshots to repair (default: all)
        snapshots: Vec<String>,
    },
}

type RDuration = vault_store::retention::Duration;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots (-1: all)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours (-1: all hours)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N days
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the last N weeks
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the last N months
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the last N years
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within DURATION (e.g. 7y, 2y5m7d3h) of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<RDuration>,
    /// Keep hourly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<RDuration>,
    /// Keep daily snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<RDuration>,
    /// Keep weekly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<RDuration>,
    /// Keep monthly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<RDuration>,
    /// Keep yearly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<RDuration>,
    /// Keep snapshots with all these tags (comma-separated; repeat for alternatives)
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with these tags (comma-separated: all; repeat for alternatives)
    #[arg(long = "tag", value_name = "TAGS")]
    pub tags: Vec<String>,
    /// Only snapshots of this source path (repeatable: all must be among its paths)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Group snapshots by these fields before applying the policy
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    pub group_by: vault_store::forget::GroupBy,
    /// Show what would be removed; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneOpts,
    /// Snapshots to remove (ids or unique prefixes) instead of a policy
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct PruneOpts {
    /// Unused space allowed in partly used packs before they are repacked: 5%, 100M or unlimited
    #[arg(long, value_name = "LIMIT", default_value = "5%")]
    pub max_unused: vault_store::prune::MaxUnused,
    /// Repack at most this many bytes of packs in one run (e.g. 10G)
    #[arg(long, value_name = "SIZE", value_parser = crate::util::parse_size)]
    pub max_repack_size: Option<u64>,
    /// Wait this long between marking unused packs and deleting them (e.g. 24h, 30m, 0 for a repository with a single writer)
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = crate::util::parse_wait)]
    pub grace: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show the plan; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub opts: PruneOpts,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Raise the retention lock to DURATION (e.g. 7y); it can never be lowered
    #[arg(long, value_name = "DURATION")]
    pub min_retention: Option<RDuration>,
}
