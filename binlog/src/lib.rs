//! The MariaDB binary log, for catch-up beyond what the master keeps.
//!
//! * [`gtid`]: GTIDs and GTID states.
//! * [`event`]: events as bytes: the header, the bodies replseed reads, the
//!   events it makes, CRC32.
//! * [`event_build`]: GTID, Query (with its session) and XID events made up.
//! * [`rows`]: snapshot rows as TABLE_MAP and WRITE_ROWS events.
//! * [`segment`]: one archive segment being assembled.
//! * [`archiver`]: `replseed archive`, the master's binlog into the stage.
//! * [`serve`]: `replseed serve`, the archive to MariaDB replicas over the
//!   replication protocol.
//!
//! The archive's layout and segment manifests belong to the stage
//! (`replseed_stage::archive`).

#![warn(missing_docs)]

pub mod archiver;
pub mod event;
pub mod event_build;
pub mod gtid;
pub mod rows;
pub mod segment;
pub mod serve;

pub use archiver::{ArchiveError, ArchivePlan, ArchiveReport};
pub use gtid::{Gtid, GtidState};
