//! `replseed`: the command-line front end. It parses flags into validated
//! plans, runs the stages, and reports. Exit codes:
//!
//! * 0: success
//! * 1: failure (the message says what and what to do)
//! * 2: bad command line
//! * 3: the master no longer has the binlogs the snapshot needs (take a new snapshot)
//! * 4: `verify` found differences, or `snapshots verify` found bad chunks

mod argv;
mod cli;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, LogFormat};

fn init_logging(cli: &Cli) {
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::Stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.compact().init(),
    }
}

/// Keeps the process's memory near what it uses. glibc's malloc raises its
/// mmap threshold each time a large block is freed, after which large
/// buffers (row groups, upload parts, Parquet pages) come from the heap and
/// stay resident there: a `provision` at 2 threads peaked at 150-180 MiB of
/// RSS for 88 MiB of heap (heaptrack). With the threshold fixed at 1 MiB
/// such buffers are mapped and returned when freed: `provision` of
/// 8 x 500k rows at 4 threads peaked at 166-206 MiB in runs with 1 MiB,
/// 226-234 MiB with 2 or 4 MiB. The price is page faults on buffers mapped
/// afresh: about 1.3 s more system time per 4M-row extract (2.5 s against
/// 1.2 s). Then it bounds mysql_async's buffer pool.
fn bound_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; called before any thread starts.
    unsafe {
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            replseed_stage::MMAP_THRESHOLD as i32,
        );
    }
    replseed_db::bound_driver_buffers();
}

fn main() -> ExitCode {
    bound_memory();
    let (args, masked) = argv::take_and_mask();
    let matches = cli::hide_env_values(Cli::command()).get_matches_from(args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    init_logging(&cli);
    if masked {
        tracing::warn!(
            "a password was given on the command line: replseed has masked it, but until then every user of this host \
             could read it (ps, /proc/<pid>/cmdline); give passwords in files (--source-password-file, ...), \
             REPLSEED_<ROLE>_PASSWORD or the option file's [replseed-<role>] groups"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code_of(&e))
        }
    }
}
