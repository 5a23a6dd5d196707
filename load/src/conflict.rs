//! An object of the snapshot that the target already has: found by
//! `preflight.rs` (tables, views, routines, ...) and `accounts.rs`
//! (accounts and roles), reported by the refusal.

use crate::bookkeeping::ObjKey;

/// An object of the snapshot that already exists on the target.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The object.
    pub key: ObjKey,
    /// What the snapshot has (`table`, `view`, ...).
    pub kind: String,
    /// What the target has under that name.
    pub found: String,
}

impl Conflict {
    /// One line naming the object, for the refusal message.
    pub fn describe(&self) -> String {
        let (kind, found, key) = (&self.kind, &self.found, &self.key);
        if key.kind == "database" {
            format!("database `{}`", key.db)
        } else if key.kind == "account" && kind == "role" {
            format!("role `{}` (other grants)", key.db)
        } else if key.kind == "account" {
            format!(
                "account `{}`@`{}` (another definition or other grants)",
                key.db, key.name
            )
        } else if found == kind {
            format!("{kind} `{}`.`{}`", key.db, key.name)
        } else {
            format!("{kind} `{}`.`{}` (exists as a {found})", key.db, key.name)
        }
    }
}
