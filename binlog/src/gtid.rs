//! MariaDB GTIDs (`domain-server-seq`) and GTID states (one GTID per
//! domain, as `@@gtid_binlog_pos` and `@slave_connect_state` write them).

use std::collections::BTreeMap;
use std::fmt;

/// One GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    /// Replication domain.
    pub domain: u32,
    /// Server that wrote it.
    pub server: u32,
    /// Sequence number in the domain.
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl std::str::FromStr for Gtid {
    type Err = String;
    fn from_str(s: &str) -> Result<Gtid, String> {
        let bad = || format!("`{s}` is not a GTID (domain-server-seq)");
        let mut it = s.trim().split('-');
        let (Some(d), Some(sv), Some(q), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        Ok(Gtid {
            domain: d.parse().map_err(|_| bad())?,
            server: sv.parse().map_err(|_| bad())?,
            seq: q.parse().map_err(|_| bad())?,
        })
    }
}

/// The last GTID of each domain: a position in a MariaDB binlog stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(BTreeMap<u32, Gtid>);

impl GtidState {
    /// Parses `0-1-10,1-2-5` (empty: no GTID yet).
    pub fn parse(s: &str) -> Result<GtidState, String> {
        let mut m = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: Gtid = part.parse()?;
            if m.insert(g.domain, g).is_some() {
                return Err(format!("`{s}` names domain {} twice", g.domain));
            }
        }
        Ok(GtidState(m))
    }

    /// Records a GTID as the last of its domain.
    pub fn apply(&mut self, g: Gtid) {
        self.0.insert(g.domain, g);
    }

    /// The GTID of a domain.
    pub fn get(&self, domain: u32) -> Option<&Gtid> {
        self.0.get(&domain)
    }

    /// Every domain's GTID, by domain.
    pub fn iter(&self) -> impl Iterator<Item = &Gtid> {
        self.0.values()
    }

    /// No domain at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a stream at this state has applied everything up to
    /// `other`: every domain of `other` is here with at least its sequence
    /// number.
    pub fn covers(&self, other: &GtidState) -> bool {
        other
            .0
            .values()
            .all(|g| self.0.get(&g.domain).is_some_and(|h| h.seq >= g.seq))
    }

    /// How many transactions a stream at this state is short of `goal`:
    /// over `goal`'s domains, the sequence numbers it has yet to reach
    /// (sequence numbers grow by one per transaction in a domain).
    pub fn behind(&self, goal: &GtidState) -> u64 {
        goal.0
            .values()
            .map(|g| {
                g.seq
                    .saturating_sub(self.0.get(&g.domain).map_or(0, |h| h.seq))
            })
            .sum()
    }

    /// Whether `g` is already included in this state (its domain is at or
    /// past its sequence number).
    pub fn contains(&self, g: &Gtid) -> bool {
        self.0.get(&g.domain).is_some_and(|h| h.seq >= g.seq)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(Gtid::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_print_and_compare() {
        let s = GtidState::parse("1-2-5, 0-1-10").unwrap();
        assert_eq!(s.to_string(), "0-1-10,1-2-5");
        assert!(GtidState::parse("").unwrap().is_empty());
        assert!(GtidState::parse("0-1").is_err());
        assert!(GtidState::parse("0-1-2,0-1-3").is_err());
        let later = GtidState::parse("0-3-12,1-2-5").unwrap();
        assert!(later.covers(&s));
        assert!(!s.covers(&later));
        assert!(!s.covers(&GtidState::parse("2-1-1").unwrap()));
        assert!(s.covers(&GtidState::default()));
        assert!(s.contains(&"0-9-10".parse().unwrap()));
        assert!(!s.contains(&"0-1-11".parse().unwrap()));
        // 0-1-10 -> 0-3-12 is 2 behind, 1-2-5 -> 1-2-5 none, a new domain 2 all of its 4.
        let goal = GtidState::parse("0-3-12,1-2-5,2-1-4").unwrap();
        assert_eq!(s.behind(&goal), 6);
        assert_eq!(goal.behind(&s), 0);
    }
}
