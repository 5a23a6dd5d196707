//! Command-line flags. Every flag can also come from a `REPLSEED_*`
//! environment variable, so cron and CI jobs can be configured by
//! environment alone. These raw flags are turned into validated plans in
//! `commands`; nothing below the CLI sees them.

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Hides the values of every environment fallback from `--help`: they may
/// hold passwords (`REPLSEED_SOURCE=mysql://u:PASSWORD@...`).
pub fn hide_env_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

/// A server URL, checked as the command line is parsed: a malformed one
/// is a bad command line (exit 2). The value is not echoed, since it may
/// hold a password.
#[derive(Clone, Copy)]
pub struct ServerUrl(pub &'static str);

impl TypedValueParser for ServerUrl {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let s = value.to_str().unwrap_or_default();
        replseed_db::Server::parse(self.0, s).map_err(|e| bad_value(cmd, arg, &e.to_string()))?;
        Ok(s.to_string())
    }
}

/// A stage URL, checked as the command line is parsed (exit 2).
#[derive(Clone, Copy)]
pub struct StageUrl;

impl TypedValueParser for StageUrl {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let s = value.to_str().unwrap_or_default();
        replseed_stage::Stage::check_url(s).map_err(|e| bad_value(cmd, arg, &e.to_string()))?;
        Ok(s.to_string())
    }
}

/// `invalid --flag: why`, with the command's usage hint.
fn bad_value(cmd: &clap::Command, arg: Option<&clap::Arg>, why: &str) -> clap::Error {
    let flag = arg
        .and_then(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .unwrap_or_else(|| "value".into());
    let mut cmd = cmd.clone();
    cmd.error(ErrorKind::ValueValidation, format!("invalid {flag}: {why}"))
}

/// Provision MariaDB replicas from a consistent, staged snapshot.
#[derive(Debug, Parser)]
#[command(name = "replseed", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "REPLSEED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level filter (tracing syntax, e.g. `info`, `debug`, `replseed_load=debug`).
    #[arg(long, global = true, env = "REPLSEED_LOG", default_value = "info")]
    pub log: String,

    /// No progress bars, even on a terminal.
    #[arg(long, global = true, env = "REPLSEED_NO_PROGRESS", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_progress: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a consistent snapshot of a master and publish it to a stage.
    Extract(ExtractArgs),
    /// List, show, verify, delete or prune staged snapshots.
    Snapshots {
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Load a staged snapshot into an empty (or --force) target server.
    Load(LoadArgs),
    /// Make a loaded target replicate from the master at the snapshot's GTID and wait until it caught up.
    Catchup(CatchupArgs),
    /// Extract (or reuse a snapshot), load every target and catch each up: replicas in one command.
    Provision(ProvisionArgs),
    /// Compare a master and a replica: checksums, row counts and DDL of every object.
    Verify(VerifyArgs),
    /// Archive the master's binary log into the stage, from where the
    /// archive ends (or the oldest snapshot), following it for ever or
    /// --until-current.
    Archive(ArchiveArgs),
    /// Serve the stage's binlog archive to MariaDB replicas over the
    /// replication protocol (CHANGE MASTER TO MASTER_HOST=<this>, MASTER_USE_GTID=slave_pos).
    Serve(ServeArgs),
}

/// `--defaults-file`, for commands that talk to servers.
#[derive(Debug, Args)]
pub struct DefaultsFileArg {
    /// Option file with a group per server role, `[replseed-source]`,
    /// `[replseed-target]`, `[replseed-replication]`, `[replseed-replica]`
    /// (`user`, `password`), and `[client]`/`[replseed]` (`user` only), for
    /// servers whose URL has no user or password.
    #[arg(long, env = "REPLSEED_DEFAULTS_FILE")]
    pub defaults_file: Option<std::path::PathBuf>,
}

/// `--source-password-file`, for commands that talk to the master.
#[derive(Debug, Args)]
pub struct SourcePasswordArg {
    /// File holding the --source password (first line). Also:
    /// REPLSEED_SOURCE_PASSWORD.
    #[arg(long, env = "REPLSEED_SOURCE_PASSWORD_FILE")]
    pub source_password_file: Option<std::path::PathBuf>,
}

/// `--target-password-file`, for commands that talk to targets.
#[derive(Debug, Args)]
pub struct TargetPasswordArg {
    /// File holding the --target password. Also: REPLSEED_TARGET_PASSWORD.
    #[arg(long, env = "REPLSEED_TARGET_PASSWORD_FILE")]
    pub target_password_file: Option<std::path::PathBuf>,
}

/// `--replication-password-file`, for commands that set up replication.
#[derive(Debug, Args)]
pub struct ReplicationPasswordArg {
    /// File holding the replication user's password. Also:
    /// REPLSEED_REPLICATION_PASSWORD.
    #[arg(long, env = "REPLSEED_REPLICATION_PASSWORD_FILE")]
    pub replication_password_file: Option<std::path::PathBuf>,
}

/// The credential flags of the command being run (`None` where the
/// command has no such flag), for `commands::credentials`.
#[derive(Debug, Default, Clone)]
pub struct CredentialFlags {
    pub defaults_file: Option<std::path::PathBuf>,
    pub source_password_file: Option<std::path::PathBuf>,
    pub target_password_file: Option<std::path::PathBuf>,
    pub replication_password_file: Option<std::path::PathBuf>,
    pub stage_key_file: Option<std::path::PathBuf>,
    pub allow_unsigned: bool,
}

impl Command {
    /// The credential flags this command was given.
    pub fn credential_flags(&self) -> CredentialFlags {
        let mut flags = self.credential_files();
        flags.allow_unsigned = self.stage_arg().is_some_and(|s| s.allow_unsigned);
        flags
    }

    /// The stage flags of a command that has a stage.
    fn stage_arg(&self) -> Option<&StageArg> {
        match self {
            Command::Extract(a) => Some(&a.stage),
            Command::Snapshots { command } => Some(command.stage()),
            Command::Load(a) => Some(&a.stage),
            Command::Catchup(a) => Some(&a.stage),
            Command::Provision(a) => Some(&a.stage),
            Command::Verify(_) => None,
            Command::Archive(a) => Some(&a.stage),
            Command::Serve(a) => Some(&a.stage),
        }
    }

    fn credential_files(&self) -> CredentialFlags {
        let d = |d: &DefaultsFileArg| d.defaults_file.clone();
        let s = |s: &SourcePasswordArg| s.source_password_file.clone();
        let t = |t: &TargetPasswordArg| t.target_password_file.clone();
        let r = |r: &ReplicationPasswordArg| r.replication_password_file.clone();
        let k = |k: &StageArg| k.stage_key_file.clone();
        match self {
            Command::Extract(a) => CredentialFlags {
                defaults_file: d(&a.defaults),
                source_password_file: s(&a.source_password),
                stage_key_file: k(&a.stage),
                ..Default::default()
            },
            Command::Snapshots { command } => CredentialFlags {
                stage_key_file: k(command.stage()),
                ..Default::default()
            },
            Command::Load(a) => CredentialFlags {
                defaults_file: d(&a.defaults),
                target_password_file: t(&a.target_password),
                stage_key_file: k(&a.stage),
                ..Default::default()
            },
            Command::Catchup(a) => CredentialFlags {
                defaults_file: d(&a.defaults),
                source_password_file: s(&a.source_password),
                target_password_file: t(&a.target_password),
                replication_password_file: r(&a.replication.password_file),
                stage_key_file: k(&a.stage),
                ..Default::default()
            },
            Command::Provision(a) => CredentialFlags {
                defaults_file: d(&a.defaults),
                source_password_file: s(&a.source_password),
                target_password_file: t(&a.target_password),
                replication_password_file: r(&a.replication.password_file),
                stage_key_file: k(&a.stage),
                ..Default::default()
            },
            Command::Verify(a) => CredentialFlags {
                defaults_file: d(&a.defaults),
                source_password_file: s(&a.source_password),
                target_password_file: t(&a.target_password),
                ..Default::default()
            },
            Command::Archive(a) => CredentialFlags {
                defaults_file: d(&a.defaults),
                source_password_file: s(&a.source_password),
                stage_key_file: k(&a.stage),
                ..Default::default()
            },
            Command::Serve(a) => CredentialFlags {
                defaults_file: d(&a.defaults),
                replication_password_file: r(&a.replication_password),
                stage_key_file: k(&a.stage),
                ..Default::default()
            },
        }
    }
}

impl SnapshotsCommand {
    /// The stage flags of a `snapshots` subcommand.
    pub fn stage(&self) -> &StageArg {
        match self {
            SnapshotsCommand::List { stage, .. }
            | SnapshotsCommand::Show { stage, .. }
            | SnapshotsCommand::Verify { stage, .. }
            | SnapshotsCommand::Delete { stage, .. }
            | SnapshotsCommand::Prune { stage, .. } => stage,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub stage: StageArg,

    #[command(flatten)]
    pub defaults: DefaultsFileArg,

    #[command(flatten)]
    pub replication_password: ReplicationPasswordArg,

    /// Address to listen on.
    #[arg(long, env = "REPLSEED_LISTEN", default_value = "127.0.0.1:3307")]
    pub listen: String,

    /// The server_id replicas see: not theirs, not the master's.
    #[arg(
        long,
        env = "REPLSEED_SERVE_SERVER_ID",
        default_value_t = 4_000_000_002
    )]
    pub server_id: u32,

    /// The user replicas log in as (MASTER_USER); its password comes from
    /// --replication-password-file or REPLSEED_REPLICATION_PASSWORD.
    #[arg(long, env = "REPLSEED_REPLICATION_USER", default_value = "repl")]
    pub replication_user: String,

    /// Connections served at once; the excess is refused with error 1040
    /// (Too many connections), as MariaDB does.
    #[arg(long, env = "REPLSEED_SERVE_MAX_CONNECTIONS", default_value_t = 151)]
    pub max_connections: usize,

    /// Seconds a client has from connecting to logging in (MariaDB's connect_timeout).
    #[arg(
        long,
        env = "REPLSEED_SERVE_HANDSHAKE_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub handshake_timeout_secs: u64,

    /// Seconds a logged-in client that is not receiving the binlog may sit
    /// idle before it is disconnected (a replica asks for the binlog at once).
    #[arg(long, env = "REPLSEED_SERVE_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Failed logins from one address within --login-block-secs after
    /// which it is refused (error 1129) without a password check for
    /// --login-block-secs; 0: never.
    #[arg(long, env = "REPLSEED_SERVE_MAX_LOGIN_FAILURES", default_value_t = 5)]
    pub max_login_failures: u32,

    /// The window failed logins are counted in, and how long an address stays blocked.
    #[arg(long, env = "REPLSEED_SERVE_LOGIN_BLOCK_SECS", default_value_t = 60)]
    pub login_block_secs: u64,

    /// Offer TLS with this PEM certificate (chain); replicas connect with
    /// MASTER_SSL=1 (and MASTER_SSL_CA, MASTER_SSL_VERIFY_SERVER_CERT=1 to
    /// verify it).
    #[arg(long, env = "REPLSEED_SERVE_SSL_CERT", requires = "ssl_key")]
    pub ssl_cert: Option<std::path::PathBuf>,

    /// The certificate's PEM private key (unencrypted).
    #[arg(long, env = "REPLSEED_SERVE_SSL_KEY", requires = "ssl_cert")]
    pub ssl_key: Option<std::path::PathBuf>,

    /// Accept only clients with a certificate signed by this CA (PEM; the
    /// replica's MASTER_SSL_CERT/MASTER_SSL_KEY).
    #[arg(long, env = "REPLSEED_SERVE_SSL_CA", requires = "ssl_cert")]
    pub ssl_ca: Option<std::path::PathBuf>,

    /// Refuse logins without TLS (needs --ssl-cert and --ssl-key).
    #[arg(long, env = "REPLSEED_SERVE_REQUIRE_SSL", requires = "ssl_cert")]
    pub require_ssl: bool,

    /// Provision empty replicas from this snapshot (an id, or `latest`): a
    /// replica whose GTID connect state has nothing of the master gets the
    /// snapshot as replication events, then the archive from its position.
    #[arg(long, env = "REPLSEED_SNAPSHOT")]
    pub snapshot: Option<String>,

    /// With --snapshot: drop the snapshot's objects on the replica first
    /// instead of stopping a replica that has any of its databases.
    #[arg(long, requires = "snapshot")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The master: mysql://user:password@host:port (needs REPLICATION SLAVE
    /// and BINLOG MONITOR).
    #[arg(long, env = "REPLSEED_SOURCE", value_parser = ServerUrl("source"))]
    pub source: String,

    #[command(flatten)]
    pub source_password: SourcePasswordArg,

    #[command(flatten)]
    pub stage: StageArg,

    #[command(flatten)]
    pub defaults: DefaultsFileArg,

    /// Stop once the master's binlog position at the start is archived (for
    /// cron); without it, follow the master until stopped (for systemd).
    #[arg(long, env = "REPLSEED_UNTIL_CURRENT", value_parser = clap::builder::FalseyValueParser::new())]
    pub until_current: bool,

    /// The archiver's server_id on the master: unique among its replicas.
    #[arg(
        long,
        env = "REPLSEED_ARCHIVE_SERVER_ID",
        default_value_t = 4_000_000_001
    )]
    pub server_id: u32,

    /// Publish a segment when it holds this many MiB of binlog.
    #[arg(long, env = "REPLSEED_SEGMENT_MB", default_value_t = 64)]
    pub segment_mb: u64,

    /// ... or when its oldest transaction is this many seconds old.
    #[arg(long, env = "REPLSEED_SEGMENT_SECS", default_value_t = 60)]
    pub segment_secs: u64,

    /// Print a one-line JSON summary on stdout.
    #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StageArg {
    /// Stage: file:///path, a plain path, or s3://bucket/prefix (endpoint and
    /// credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ALLOW_HTTP).
    #[arg(long, env = "REPLSEED_STAGE", value_parser = StageUrl)]
    pub stage: String,

    /// File holding the stage key (also: REPLSEED_STAGE_KEY): extract signs
    /// the snapshots it publishes, and load, catchup and provision accept
    /// signed snapshots only.
    #[arg(long, env = "REPLSEED_STAGE_KEY_FILE")]
    pub stage_key_file: Option<std::path::PathBuf>,

    /// Read a signed stage (snapshots, binlog archive) without a stage key:
    /// its signatures are not checked, and a warning says so. Without this
    /// flag a reader given no key refuses a signed manifest.
    #[arg(long, env = "REPLSEED_ALLOW_UNSIGNED", value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct TuningArgs {
    /// Maximum rows per chunk file.
    #[arg(long, env = "REPLSEED_CHUNK_ROWS", default_value_t = 500_000)]
    pub chunk_rows: u64,

    /// Maximum size per chunk file in MiB (compressed, approximate).
    #[arg(long, env = "REPLSEED_CHUNK_MB", default_value_t = 128)]
    pub chunk_mb: u64,

    /// zstd level of the Parquet chunks (1-22).
    #[arg(long, env = "REPLSEED_ZSTD_LEVEL", default_value_t = 1)]
    pub zstd_level: i32,

    /// Tries at opening the workers' snapshots without any lock before
    /// holding FLUSH TABLES WITH READ LOCK while they open (0: always lock).
    #[arg(long, env = "REPLSEED_LOCK_FREE_ATTEMPTS", default_value_t = 5)]
    pub lock_free_attempts: u32,

    /// Read at most this many MiB per second from the master, over all
    /// workers (default: no limit).
    #[arg(long, env = "REPLSEED_MAX_RATE")]
    pub max_rate: Option<f64>,

    /// Pause the extract while the master's Threads_running (replseed's own
    /// sessions not counted) is above this.
    #[arg(long, env = "REPLSEED_MAX_THREADS_RUNNING")]
    pub max_threads_running: Option<u64>,

    /// Pause the extract while a --lag-replica is more than this many
    /// seconds behind, or not replicating.
    #[arg(long, env = "REPLSEED_MAX_REPLICA_LAG", requires = "lag_replicas")]
    pub max_replica_lag: Option<u64>,

    /// A replica of the master whose lag --max-replica-lag watches
    /// (repeat the flag; its password as for other servers, role `replica`:
    /// REPLSEED_REPLICA_PASSWORD or the option file).
    #[arg(
        long = "lag-replica",
        env = "REPLSEED_LAG_REPLICA",
        value_delimiter = ',',
        value_parser = ServerUrl("replica"),
        requires = "max_replica_lag"
    )]
    pub lag_replicas: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The master: mysql://user:password@host:port
    #[arg(long, env = "REPLSEED_SOURCE", value_parser = ServerUrl("source"))]
    pub source: String,

    #[command(flatten)]
    pub source_password: SourcePasswordArg,

    #[command(flatten)]
    pub stage: StageArg,

    #[command(flatten)]
    pub defaults: DefaultsFileArg,

    /// Snapshot id (default: the UTC time, e.g. 20261124T210915Z).
    #[arg(long, env = "REPLSEED_SNAPSHOT")]
    pub snapshot: Option<String>,

    /// Databases to copy, comma-separated (default: all but the system ones).
    #[arg(long, env = "REPLSEED_DATABASES", value_delimiter = ',')]
    pub databases: Option<Vec<String>>,

    /// Parallel connections to the master.
    #[arg(long, env = "REPLSEED_THREADS", default_value_t = 4)]
    pub threads: usize,

    #[command(flatten)]
    pub tuning: TuningArgs,

    /// Do not stage the master's accounts, roles and grants.
    #[arg(long, env = "REPLSEED_NO_ACCOUNTS", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_accounts: bool,

    /// Print a one-line JSON summary on stdout.
    #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List published snapshots, and incomplete prefixes (no manifest).
    List {
        #[command(flatten)]
        stage: StageArg,
        /// JSON on stdout.
        #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
        json: bool,
    },
    /// Show a snapshot's position, tables and chunks.
    Show {
        /// Snapshot id, or `latest`.
        id: String,
        #[command(flatten)]
        stage: StageArg,
        /// JSON on stdout.
        #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
        json: bool,
    },
    /// Re-read every chunk and check sizes, checksums and row counts.
    Verify {
        /// Snapshot id, or `latest`.
        id: String,
        #[command(flatten)]
        stage: StageArg,
        /// JSON on stdout.
        #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
        json: bool,
    },
    /// Delete a snapshot (manifest first, then its chunks).
    Delete {
        /// Snapshot id.
        id: String,
        #[command(flatten)]
        stage: StageArg,
    },
    /// Delete all but the newest N published snapshots (and incomplete prefixes older than them).
    Prune {
        #[command(flatten)]
        stage: StageArg,
        /// How many published snapshots to keep.
        #[arg(long, env = "REPLSEED_KEEP")]
        keep: usize,
        /// JSON on stdout.
        #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct LoadOpts {
    /// Parallel connections to each target.
    #[arg(long, env = "REPLSEED_THREADS", default_value_t = 4)]
    pub threads: usize,

    /// Drop and replace the snapshot's objects that already exist on the target
    /// (nothing outside the snapshot is touched).
    #[arg(long, env = "REPLSEED_FORCE", value_parser = clap::builder::FalseyValueParser::new())]
    pub force: bool,

    /// Send at most this many MiB per second of rows into each target (for
    /// a target that is serving; default: no limit).
    #[arg(long, env = "REPLSEED_MAX_LOAD_RATE")]
    pub max_load_rate: Option<f64>,

    /// Directory for downloaded chunks (S3 stages); default: the system temp dir.
    #[arg(long, env = "REPLSEED_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,

    /// Do not create the snapshot's accounts, roles and grants (with
    /// provision: do not stage them either).
    #[arg(long, env = "REPLSEED_NO_ACCOUNTS", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_accounts: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub stage: StageArg,

    #[command(flatten)]
    pub defaults: DefaultsFileArg,

    /// Snapshot id, or `latest`.
    #[arg(long, env = "REPLSEED_SNAPSHOT", default_value = "latest")]
    pub snapshot: String,

    /// The server to load: mysql://user:password@host:port
    #[arg(long, env = "REPLSEED_TARGET", value_parser = ServerUrl("target"))]
    pub target: String,

    #[command(flatten)]
    pub target_password: TargetPasswordArg,

    #[command(flatten)]
    pub opts: LoadOpts,

    /// Print a one-line JSON summary on stdout.
    #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplicationOpts {
    /// User the replica connects to the master with (default: the --source user).
    #[arg(long, env = "REPLSEED_REPLICATION_USER")]
    pub replication_user: Option<String>,

    /// Password of the replication user (prefer REPLSEED_REPLICATION_PASSWORD
    /// or --replication-password-file: `ps` shows command lines until
    /// replseed masks them). Required when the --source has a password: the
    /// replica keeps it in master.info.
    #[arg(long)]
    pub replication_password: Option<String>,

    #[command(flatten)]
    pub password_file: ReplicationPasswordArg,

    /// Master host as the replica reaches it (default: the --source host).
    #[arg(long, env = "REPLSEED_MASTER_HOST")]
    pub master_host: Option<String>,

    /// Master port as the replica reaches it (default: the --source port).
    #[arg(long, env = "REPLSEED_MASTER_PORT")]
    pub master_port: Option<u16>,

    /// CA file as the replica sees it, for MASTER_SSL_CA (default: the
    /// --source URL's ssl-ca).
    #[arg(long, env = "REPLSEED_MASTER_SSL_CA")]
    pub master_ssl_ca: Option<String>,

    /// Client certificate as the replica sees it, for MASTER_SSL_CERT
    /// (default: the --source URL's ssl-cert).
    #[arg(long, env = "REPLSEED_MASTER_SSL_CERT")]
    pub master_ssl_cert: Option<String>,

    /// Client key as the replica sees it, for MASTER_SSL_KEY (default: the
    /// --source URL's ssl-key).
    #[arg(long, env = "REPLSEED_MASTER_SSL_KEY")]
    pub master_ssl_key: Option<String>,

    /// Where replseed serves the stage's binlog archive to a replica whose
    /// master purged the snapshot's binlogs (port 0: any free port;
    /// default: a free port on the address the target sees replseed's
    /// session come from).
    #[arg(long, env = "REPLSEED_ARCHIVE_LISTEN")]
    pub archive_listen: Option<String>,

    /// The host name or address a replica reaches --archive-listen at
    /// (default: the listen address, or for a wildcard one the address the
    /// target sees replseed's session come from; set it behind NAT).
    #[arg(long, env = "REPLSEED_ARCHIVE_HOST")]
    pub archive_host: Option<String>,

    /// Serve the archive to the replica over TLS with this PEM certificate
    /// (it must name --archive-host); plain logins are refused.
    #[arg(long, env = "REPLSEED_ARCHIVE_SSL_CERT", requires = "archive_ssl_key")]
    pub archive_ssl_cert: Option<std::path::PathBuf>,

    /// The --archive-ssl-cert's PEM private key.
    #[arg(long, env = "REPLSEED_ARCHIVE_SSL_KEY", requires = "archive_ssl_cert")]
    pub archive_ssl_key: Option<std::path::PathBuf>,

    /// The CA of --archive-ssl-cert as the replica reads it (MASTER_SSL_CA):
    /// the replica verifies the certificate (MASTER_SSL_VERIFY_SERVER_CERT=1).
    /// Without it the link is encrypted, not verified.
    #[arg(long, env = "REPLSEED_ARCHIVE_SSL_CA", requires = "archive_ssl_cert")]
    pub archive_ssl_ca: Option<String>,

    /// Give up waiting for the replica to catch up after this many seconds (0 = no limit).
    #[arg(long, env = "REPLSEED_CATCHUP_TIMEOUT", default_value_t = 0)]
    pub catchup_timeout: u64,
}

/// `--until` / `--until-time` of `provision` and `catchup`: a point-in-time copy.
#[derive(Debug, Args)]
pub struct UntilArgs {
    /// Stop at this GTID position (one or more domains: 0-1-100,1-2-7): the
    /// target becomes a copy of the master at that point, from the newest
    /// snapshot at or before it and the stage's binlog archive, with
    /// replication stopped there and not configured (RESET SLAVE ALL).
    #[arg(long, value_name = "GTID", conflicts_with = "until_time")]
    pub until: Option<String>,

    /// Like --until, at the master's last transaction at or before this time
    /// (UTC 'YYYY-MM-DD HH:MM:SS', or RFC 3339 such as 2026-12-07T16:30:00Z).
    #[arg(long, value_name = "TIMESTAMP")]
    pub until_time: Option<String>,
}

#[derive(Debug, Args)]
pub struct CatchupArgs {
    #[command(flatten)]
    pub stage: StageArg,

    #[command(flatten)]
    pub defaults: DefaultsFileArg,

    /// Snapshot id, or `latest` (the one loaded into the target).
    #[arg(long, env = "REPLSEED_SNAPSHOT", default_value = "latest")]
    pub snapshot: String,

    /// The master: mysql://user:password@host:port
    #[arg(long, env = "REPLSEED_SOURCE", value_parser = ServerUrl("source"))]
    pub source: String,

    #[command(flatten)]
    pub source_password: SourcePasswordArg,

    /// The loaded replica: mysql://user:password@host:port
    #[arg(long, env = "REPLSEED_TARGET", value_parser = ServerUrl("target"))]
    pub target: String,

    #[command(flatten)]
    pub target_password: TargetPasswordArg,

    #[command(flatten)]
    pub replication: ReplicationOpts,

    #[command(flatten)]
    pub until: UntilArgs,

    /// Print a one-line JSON summary on stdout.
    #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The master: mysql://user:password@host:port
    #[arg(long, env = "REPLSEED_SOURCE", value_parser = ServerUrl("source"))]
    pub source: String,

    #[command(flatten)]
    pub source_password: SourcePasswordArg,

    /// Servers to turn into replicas (repeat the flag, or comma-separate in REPLSEED_TARGET).
    #[arg(
        long = "target",
        env = "REPLSEED_TARGET",
        value_delimiter = ',',
        value_parser = ServerUrl("target"),
        required = true
    )]
    pub targets: Vec<String>,

    #[command(flatten)]
    pub target_password: TargetPasswordArg,

    #[command(flatten)]
    pub stage: StageArg,

    #[command(flatten)]
    pub defaults: DefaultsFileArg,

    /// Reuse this published snapshot (or `latest`) instead of extracting a new one.
    #[arg(long, env = "REPLSEED_SNAPSHOT")]
    pub snapshot: Option<String>,

    /// Databases to copy, comma-separated (default: all but the system ones).
    #[arg(long, env = "REPLSEED_DATABASES", value_delimiter = ',')]
    pub databases: Option<Vec<String>>,

    #[command(flatten)]
    pub opts: LoadOpts,

    #[command(flatten)]
    pub tuning: TuningArgs,

    #[command(flatten)]
    pub replication: ReplicationOpts,

    #[command(flatten)]
    pub until: UntilArgs,

    /// Print a one-line JSON summary on stdout.
    #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The master: mysql://user:password@host:port
    #[arg(long, env = "REPLSEED_SOURCE", value_parser = ServerUrl("source"))]
    pub source: String,

    #[command(flatten)]
    pub source_password: SourcePasswordArg,

    /// The replica: mysql://user:password@host:port
    #[arg(long, env = "REPLSEED_TARGET", value_parser = ServerUrl("target"))]
    pub target: String,

    #[command(flatten)]
    pub target_password: TargetPasswordArg,

    #[command(flatten)]
    pub defaults: DefaultsFileArg,

    /// Databases to compare, comma-separated (default: all but the system ones on the master).
    #[arg(long, env = "REPLSEED_DATABASES", value_delimiter = ',')]
    pub databases: Option<Vec<String>>,

    /// Seconds to wait for the replica to reach the master's position.
    #[arg(long, env = "REPLSEED_VERIFY_TIMEOUT", default_value_t = 300)]
    pub timeout: u64,

    /// Do not compare accounts, roles and grants.
    #[arg(long, env = "REPLSEED_NO_ACCOUNTS", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_accounts: bool,

    /// Print a one-line JSON summary on stdout.
    #[arg(long, env = "REPLSEED_JSON", value_parser = clap::builder::FalseyValueParser::new())]
    pub json: bool,
}
