//! Provisioning through the replica's own IO thread: a stock, empty
//! MariaDB replica pointed at `replseed serve --snapshot ID` with
//! `MASTER_USE_GTID=slave_pos` receives the snapshot as replication
//! events (the guard, CREATE statements, each chunk's rows as row events,
//! the other objects, its GTID position), then the archive's binlog from
//! the snapshot's GTID on, and stays a replica.
//!
//! * `policy.rs`: the made-up groups' GTIDs and how a connect state is
//!   read (provision from the start, go on, or an ordinary dump).
//! * `plan.rs`: the snapshot as an ordered list of groups.
//! * `guard.rs`: the first group, which stops a replica that holds any
//!   database of the snapshot before it changes anything; `--force` drops.
//! * `rows.rs`: one chunk as a table map and Write_rows events.
//!
//! `docs/design/provisioning.md` has the why.

mod guard;
mod plan;
pub mod policy;
mod rows;

use std::path::PathBuf;

use replseed_stage::Manifest;
use tracing::{info, warn};

use super::dump;
use super::packet::Packets;
use super::request::{requested_state, Requested};
use super::Shared;
use crate::event::{self, RawEvent};
use crate::event_build::{self, QueryContext, FL_DDL, FL_STANDALONE, FL_TRANSACTIONAL};
use crate::gtid::{Gtid, GtidState};
use crate::rows::TableShape;
use plan::Group;

/// The master file name the made-up groups are announced under.
const FILE: &str = "replseed-provision.000001";

/// A snapshot being served for provisioning.
#[derive(Debug)]
pub struct Provision {
    manifest: Manifest,
    groups: Vec<Group>,
    /// Per database, per table: its shape, or why its rows cannot be built.
    shapes: Vec<Vec<Result<TableShape, String>>>,
    /// The snapshot's GTID position.
    position: GtidState,
    /// Where chunks are spooled while they are encoded.
    spool: PathBuf,
}

impl Provision {
    /// Prepares `m` for provisioning (`force`: drop the snapshot's objects
    /// first instead of refusing a replica that has them). `Err` is the
    /// one line to print: an object whose session or position cannot be
    /// described.
    pub fn new(m: Manifest, force: bool, spool: PathBuf) -> Result<Provision, String> {
        let groups =
            plan::groups(&m, force).map_err(|e| format!("snapshot {}: {e}", m.snapshot))?;
        let position = GtidState::parse(&m.position.gtid).map_err(|e| {
            format!(
                "snapshot {}: its GTID position `{}` does not parse ({e})",
                m.snapshot, m.position.gtid
            )
        })?;
        let shapes = m
            .databases
            .iter()
            .map(|d| {
                d.tables
                    .iter()
                    .map(|t| TableShape::from_manifest(d, t).map_err(|e| e.0))
                    .collect()
            })
            .collect();
        Ok(Provision {
            manifest: m,
            groups,
            shapes,
            position,
            spool,
        })
    }

    /// The snapshot's id.
    pub fn snapshot(&self) -> &str {
        &self.manifest.snapshot
    }

    /// The first table whose rows cannot be streamed, and why.
    fn unstreamable(&self) -> Option<&str> {
        self.shapes
            .iter()
            .flatten()
            .find_map(|s| s.as_ref().err().map(String::as_str))
    }
}

/// Serves a replica's dump request when `serve` has a snapshot: the
/// provisioning stream when the replica's connect state asks for it
/// (`policy::progress`), then the archive from the snapshot's position;
/// an ordinary dump otherwise.
pub(crate) async fn run(
    pk: &mut Packets,
    req: &Requested,
    shared: &Shared,
    p: &Provision,
) -> std::io::Result<()> {
    let Ok(state) = requested_state(req) else {
        return dump::run(pk, req, shared).await; // refuses it
    };
    let snapshot = p.snapshot();
    let from = match policy::progress(&state, snapshot, p.groups.len() as u64) {
        policy::Progress::Dump => return dump::run(pk, req, shared).await,
        policy::Progress::Foreign(m) => return pk.err(1236, "HY000", &m).await,
        policy::Progress::Stream { from } => from,
    };
    if req.capability < 4 {
        return dump::run(pk, req, shared).await; // refuses it
    }
    if let Some(why) = p.unstreamable() {
        warn!(snapshot, "cannot provision: {why}");
        return pk
            .err(
                1236,
                "HY000",
                &format!("replseed serve: snapshot {snapshot}: {why}"),
            )
            .await;
    }
    info!(
        snapshot,
        replica = req.replica_id,
        from,
        groups = p.groups.len(),
        "provisioning a replica"
    );
    if let Err(m) = stream(pk, shared, p, from).await? {
        warn!(
            snapshot,
            replica = req.replica_id,
            "provisioning stopped: {m}"
        );
        return pk.err(1236, "HY000", &m).await;
    }
    info!(snapshot, replica = req.replica_id, position = %p.position, "snapshot sent: the archive follows");
    let then = Requested {
        connect_state: Some(p.position.to_string()),
        ..req.clone()
    };
    dump::run(pk, &then, shared).await
}

/// Sends events in one made-up binlog file, each with its end position.
struct Out<'a> {
    pk: &'a mut Packets,
    pos: u32,
    crc: bool,
}

impl Out<'_> {
    async fn send(&mut self, mut e: RawEvent) -> std::io::Result<()> {
        self.pos = self.pos.saturating_add(e.bytes().len() as u32);
        e.set_log_pos(self.pos);
        dump::send(self.pk, &e).await
    }

    /// BEGIN, as a master writes it before a transaction's events.
    fn begin(&self, server: u32) -> RawEvent {
        event_build::query(server, "", b"BEGIN", &QueryContext::default(), self.crc)
    }
}

/// The made-up groups from number `from` on, then the snapshot's GTIDs;
/// `Ok(Err)` is the 1236 text.
async fn stream(
    pk: &mut Packets,
    shared: &Shared,
    p: &Provision,
    from: u64,
) -> std::io::Result<Result<(), String>> {
    // The archive's format description opens the made-up file too: the
    // replica reads our events with its master's header lengths.
    let first = match shared.stage.segment_chain().await {
        Ok(s) => s.into_iter().next(),
        Err(e) => return Ok(Err(format!("replseed serve: {e}"))),
    };
    let Some(first) = first else {
        return Ok(Err(format!(
            "replseed serve: snapshot {}: the stage's binlog archive is empty; run `replseed archive` first",
            p.snapshot()
        )));
    };
    let (evs, crc) = match dump::load(shared, &first).await {
        Ok(l) => l,
        Err(m) => return Ok(Err(m)),
    };
    let rotate = event::fake_rotate(FILE, 4, shared.server_id, true);
    dump::send(pk, &rotate).await?;
    let fde = dump::fde_for_replica(&evs[0]);
    let mut out = Out {
        pos: 4 + fde.bytes().len() as u32,
        pk,
        crc,
    };
    dump::send(out.pk, &fde).await?;
    let m = &p.manifest;
    let total = p.groups.len();
    for (i, g) in p.groups.iter().enumerate().skip(from as usize - 1) {
        let gtid = policy::made_up(p.snapshot(), i as u64 + 1);
        match g {
            Group::Statement { db, sql, ctx, what } => {
                out.send(event_build::gtid(&gtid, FL_STANDALONE | FL_DDL, crc))
                    .await?;
                out.send(event_build::query(gtid.server, db, sql, ctx, crc))
                    .await?;
                tracing::debug!(n = i + 1, total, "{what}");
            }
            Group::Rows {
                db,
                table,
                chunk,
                table_id,
            } => {
                let t = &m.databases[*db].tables[*table];
                let c = &t.chunks[*chunk];
                let Ok(shape) = &p.shapes[*db][*table] else {
                    unreachable!("checked by unstreamable()");
                };
                let events = match rows::chunk_events(
                    &shared.stage,
                    &p.spool,
                    shape,
                    *table_id,
                    c,
                    gtid.server,
                    crc,
                )
                .await
                {
                    Ok(e) => e,
                    Err(m) => return Ok(Err(m)),
                };
                let flags = if t.transactional { FL_TRANSACTIONAL } else { 0 };
                out.send(event_build::gtid(&gtid, flags, crc)).await?;
                out.send(out.begin(gtid.server)).await?;
                for e in events {
                    out.send(e).await?;
                }
                out.send(end(&gtid, t.transactional, crc)).await?;
                info!(
                    table = %format!("{}.{}", m.databases[*db].name, t.name),
                    chunk = c.path,
                    rows = c.rows,
                    n = i + 1,
                    total,
                    "rows sent"
                );
            }
        }
    }
    // The snapshot's position, as empty transactions carrying its GTIDs.
    for g in p.position.iter() {
        out.send(event_build::gtid(g, FL_TRANSACTIONAL, crc))
            .await?;
        out.send(out.begin(g.server)).await?;
        out.send(end(g, true, crc)).await?;
    }
    out.pk.flush().await?;
    Ok(Ok(()))
}

/// The event ending a group: XID for a transactional one, COMMIT otherwise.
fn end(g: &Gtid, transactional: bool, crc: bool) -> RawEvent {
    if transactional {
        event_build::xid(g.server, g.seq, crc)
    } else {
        event_build::query(g.server, "", b"COMMIT", &QueryContext::default(), crc)
    }
}
