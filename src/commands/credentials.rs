//! Where each server's user and password come from. A server gets only
//! what was given for its role, never another role's password:
//!
//! * its URL (`mysql://user:password@...`), which wins;
//! * the role's password file (`--source-password-file`, ...);
//! * `REPLSEED_<ROLE>_PASSWORD`;
//! * the `[replseed-<role>]` group of the `--defaults-file` option file
//!   (`user`, `password`).
//!
//! The generic groups `[client]` and `[replseed]` give a `user` to every
//! role, never a password: one password there would be sent to every
//! server of the command (the master's to the targets). A `password` in
//! them is ignored with a warning. The roles are [`ROLES`]. The stage key
//! comes from here too.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use replseed_db::options::OptionFile;
use replseed_db::Server;
use replseed_stage::signing::StageKey;
use replseed_stage::Stage;
use secrecy::{ExposeSecret, SecretString};

use crate::cli::CredentialFlags;

/// The servers replseed talks to, each with its own credentials: the
/// master (`--source`), the servers loaded (`--target`), the user replicas
/// log in to the master with (`--replication-user`), and the replicas whose
/// lag an extract watches (`--lag-replica`).
pub const ROLES: [&str; 4] = ["source", "target", "replication", "replica"];

#[derive(Debug, Default)]
struct Sources {
    option_file: Option<(PathBuf, OptionFile)>,
    files: Vec<(&'static str, PathBuf)>,
    stage_key: Option<StageKey>,
    allow_unsigned: bool,
}

static SOURCES: OnceLock<Sources> = OnceLock::new();

/// Reads the option file (if any) and the stage key named by the command's
/// flags.
pub fn init(flags: &CredentialFlags) -> Result<()> {
    let option_file = match &flags.defaults_file {
        Some(p) => {
            let f = OptionFile::read(p).map_err(anyhow::Error::msg)?;
            if let Some(bad) = f.roles().find(|r| !ROLES.contains(r)) {
                bail!(
                    "option file {}: group [replseed-{bad}] is not a role of replseed; use [replseed-{}]",
                    p.display(),
                    ROLES.join("], [replseed-")
                );
            }
            if f.generic("password").is_some() {
                tracing::warn!(
                    "option file {}: the `password` of [client]/[replseed] is not used (it would reach every server); \
                     put each server's password in its role's group: [replseed-{}]",
                    p.display(),
                    ROLES.join("], [replseed-")
                );
            }
            Some((p.clone(), f))
        }
        None => None,
    };
    let key = match (&flags.stage_key_file, std::env::var("REPLSEED_STAGE_KEY")) {
        (Some(p), _) => Some(read_password_file(p)?),
        (None, Ok(k)) if !k.is_empty() => Some(SecretString::from(k)),
        _ => None,
    };
    let stage_key = key
        .map(|k| StageKey::new(k).map_err(anyhow::Error::msg))
        .transpose()?;
    let files = [
        ("source", &flags.source_password_file),
        ("target", &flags.target_password_file),
        ("replication", &flags.replication_password_file),
    ]
    .into_iter()
    .filter_map(|(r, p)| p.clone().map(|p| (r, p)))
    .collect();
    let _ = SOURCES.set(Sources {
        option_file,
        stage_key,
        files,
        allow_unsigned: flags.allow_unsigned,
    });
    Ok(())
}

fn sources() -> &'static Sources {
    SOURCES.get_or_init(Sources::default)
}

fn read_password_file(p: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read the password file {}", p.display()))?;
    Ok(SecretString::from(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

fn role_setting(role: &str, key: &str) -> Option<&'static str> {
    let (_, f) = sources().option_file.as_ref()?;
    f.group(&format!("replseed-{role}"), key)
}

/// The password for `role` (one of [`ROLES`]) from its own file, variable
/// or option-file group, if any has one.
pub fn password(role: &str) -> Result<Option<SecretString>> {
    debug_assert!(ROLES.contains(&role), "unknown role {role}");
    if let Some((_, p)) = sources().files.iter().find(|(r, _)| *r == role) {
        return read_password_file(p).map(Some);
    }
    if let Ok(p) = std::env::var(format!("REPLSEED_{}_PASSWORD", role.to_ascii_uppercase())) {
        return Ok(Some(SecretString::from(p)));
    }
    Ok(role_setting(role, "password").map(|p| SecretString::from(p.to_string())))
}

/// The user for `role` from the option file: its `[replseed-<role>]`
/// group, then `[replseed]` and `[client]`.
pub fn user(role: &str) -> Option<&'static str> {
    role_setting(role, "user").or_else(|| sources().option_file.as_ref()?.1.generic("user"))
}

/// A server from its URL, with the user and password of its role when the
/// URL has none.
pub fn server(role: &str, url: &str) -> Result<Server> {
    Ok(Server::parse(role, url)?
        .with_user(user(role))
        .with_password(password(role)?.as_ref()))
}

/// The user and password a replica logs in to the master with: the
/// `--replication-user` flag or the `[replseed-replication]` user, else the
/// --source user; the password from `flag`, or the replication role's
/// file, variable or group. The --source password is never used: the
/// replica keeps its password in master.info. So one is required, unless
/// the --source has no password either (then nothing is given).
pub fn replication_login(
    user_flag: Option<&str>,
    password_flag: Option<&str>,
    source: &Server,
) -> Result<(String, SecretString)> {
    let login = user_flag
        .map(str::to_string)
        .or_else(|| role_setting("replication", "user").map(str::to_string))
        .unwrap_or_else(|| source.user());
    let password = match password_flag {
        Some(p) => Some(SecretString::from(p.to_string())),
        None => password("replication")?,
    };
    match password {
        Some(p) => Ok((login, p)),
        None if source.password().expose_secret().is_empty() => {
            Ok((login, SecretString::from(String::new())))
        }
        None => bail!(
            "the replication user `{login}` needs a password of its own (the --source password is not given to replicas: \
             it would stay in their master.info): set REPLSEED_REPLICATION_PASSWORD, --replication-password-file \
             or `password` in the [replseed-replication] group of --defaults-file"
        ),
    }
}

/// A stage from its URL, with the stage key (`REPLSEED_STAGE_KEY` or
/// `--stage-key-file`) when one is set: manifests are then signed on
/// publish and must be signed to be read. Without a key, a signed manifest
/// is refused unless `--allow-unsigned`. The stage must exist: commands
/// that only read never create one.
pub fn stage(url: &str) -> Result<Stage> {
    let sources = sources();
    Ok(Stage::open(url)?
        .with_key(sources.stage_key.clone())
        .allow_unsigned(sources.allow_unsigned))
}

/// [`stage`] for the commands that write one (extract, archive): a missing
/// local directory is created, owner-only.
pub fn writable_stage(url: &str) -> Result<Stage> {
    Stage::create(url)?;
    stage(url)
}
