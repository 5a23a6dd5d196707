//! What keeps a provisioning stream from changing a replica that already
//! holds data, and what `--force` replaces instead.
//!
//! The guard is the stream's first group: one compound statement that the
//! replica's SQL thread runs before anything else. If a database of the
//! snapshot exists there (nothing of the snapshot can exist without its
//! database), it raises SQLSTATE 45000 naming the first one, the SQL
//! thread stops with that text in `Last_SQL_Error`, and nothing was
//! changed: the guard's own GTID is not recorded either, so the same
//! guard runs again at the next START SLAVE.

use replseed_db::{drop_if_exists, quote_str};
use replseed_stage::manifest::Manifest;

/// The guard statement for `m`.
pub fn statement(m: &Manifest) -> String {
    let names: Vec<String> = m.databases.iter().map(|d| quote_str(&d.name)).collect();
    if names.is_empty() {
        return "DO 0".into();
    }
    let list = names.join(",");
    let before = quote_str("replseed serve: database `");
    let after = quote_str(&format!(
        "` of snapshot {} already exists on this replica; nothing was changed (drop it, or serve with --force)",
        m.snapshot
    ));
    format!(
        "BEGIN NOT ATOMIC DECLARE m TEXT; \
         SET m = (SELECT CONCAT({before}, SCHEMA_NAME, {after}) FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME IN ({list}) ORDER BY FIELD(SCHEMA_NAME, {list}) LIMIT 1); \
         IF m IS NOT NULL THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = m; END IF; END"
    )
}

/// `--force`: a statement per object of the snapshot that drops it if it
/// exists (its database is kept: other objects in it are not ours), with
/// what it drops.
pub fn drops(m: &Manifest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in &m.databases {
        let objects = d
            .tables
            .iter()
            .map(|t| ("table", &t.name))
            .chain(d.sequences.iter().map(|s| ("sequence", &s.name)))
            .chain(
                d.views
                    .iter()
                    .chain(&d.routines)
                    .chain(&d.triggers)
                    .chain(&d.events)
                    .map(|o| (o.kind.as_str(), &o.name)),
            );
        for (kind, name) in objects {
            if let Some(sql) = drop_if_exists(kind, &d.name, name) {
                out.push((sql, format!("dropping {kind} {}.{name}", d.name)));
            }
        }
    }
    out
}
