//! Where passwords come from, for servers whose URL has none: a file named
//! by a flag, then `REPLSEED_<ROLE>_PASSWORD`, then the option file of
//! `--defaults-file` (its `[client]` and `[replseed]` groups, which may also
//! name the user). A password in the URL still wins; the README recommends
//! the others, since `ps` shows command lines. The stage key comes from here
//! too.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use replseed_db::options::OptionFile;
use replseed_db::Server;
use replseed_stage::signing::StageKey;
use replseed_stage::Stage;
use secrecy::SecretString;

use crate::cli::Cli;

#[derive(Debug, Default)]
struct Sources {
    option_file: Option<OptionFile>,
    files: [(&'static str, Option<PathBuf>); 3],
    stage_key: Option<StageKey>,
    allow_unsigned: bool,
}

static SOURCES: OnceLock<Sources> = OnceLock::new();

/// Reads the option file (if any) named on the command line.
pub fn init(cli: &Cli) -> Result<()> {
    let option_file = match &cli.defaults_file {
        Some(p) => Some(OptionFile::read(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let key = match (&cli.stage_key_file, std::env::var("REPLSEED_STAGE_KEY")) {
        (Some(p), _) => Some(read_password_file(p)?),
        (None, Ok(k)) if !k.is_empty() => Some(SecretString::from(k)),
        _ => None,
    };
    let stage_key = key
        .map(|k| StageKey::new(k).map_err(anyhow::Error::msg))
        .transpose()?;
    let _ = SOURCES.set(Sources {
        option_file,
        stage_key,
        allow_unsigned: cli.allow_unsigned,
        files: [
            ("source", cli.source_password_file.clone()),
            ("target", cli.target_password_file.clone()),
            ("replication", cli.replication_password_file.clone()),
        ],
    });
    Ok(())
}

fn read_password_file(p: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read the password file {}", p.display()))?;
    Ok(SecretString::from(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

/// The password for `role` (`source`, `target`, `replication`) from the
/// sources above, if any has one.
pub fn password(role: &str) -> Result<Option<SecretString>> {
    let sources = SOURCES.get_or_init(Sources::default);
    if let Some((_, Some(p))) = sources.files.iter().find(|(r, _)| *r == role) {
        return read_password_file(p).map(Some);
    }
    if let Ok(p) = std::env::var(format!("REPLSEED_{}_PASSWORD", role.to_ascii_uppercase())) {
        return Ok(Some(SecretString::from(p)));
    }
    Ok(sources
        .option_file
        .as_ref()
        .and_then(|f| f.get("password"))
        .map(|p| SecretString::from(p.to_string())))
}

/// A server from its URL, with the user and password from the sources
/// above when the URL has none.
pub fn server(role: &str, url: &str) -> Result<Server> {
    let user = SOURCES
        .get_or_init(Sources::default)
        .option_file
        .as_ref()
        .and_then(|f| f.get("user"))
        .map(str::to_string);
    Ok(Server::parse(role, url)?
        .with_user(user.as_deref())
        .with_password(password(role)?.as_ref()))
}

/// A stage from its URL, with the stage key (`REPLSEED_STAGE_KEY` or
/// `--stage-key-file`) when one is set: manifests are then signed on
/// publish and must be signed to be read. Without a key, a signed manifest
/// is refused unless `--allow-unsigned`.
pub fn stage(url: &str) -> Result<Stage> {
    let sources = SOURCES.get_or_init(Sources::default);
    Ok(Stage::open(url)?
        .with_key(sources.stage_key.clone())
        .allow_unsigned(sources.allow_unsigned))
}
