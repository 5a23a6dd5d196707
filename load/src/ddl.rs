//! DDL transformations for the load: deferring secondary indexes.

use replseed_stage::manifest::Table;

/// A table's CREATE statement with its deferrable secondary indexes taken
/// out, and the `ALTER TABLE` clauses that put them back.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitDdl {
    /// CREATE TABLE without the deferred indexes.
    pub create: String,
    /// `ADD ...` clauses, in the original order.
    pub deferred: Vec<String>,
}

fn index_line(line: &str) -> bool {
    let t = line.trim_start();
    line.starts_with("  ")
        && (t.starts_with("KEY ")
            || t.starts_with("UNIQUE KEY ")
            || t.starts_with("FULLTEXT KEY ")
            || t.starts_with("SPATIAL KEY "))
}

/// Whether building this table's secondary indexes after the data is safe
/// and useful: InnoDB, a primary key (the clustered index must not change),
/// no foreign keys (they need their indexes), not system-versioned (ALTER
/// of versioned tables is restricted).
pub fn can_defer(t: &Table) -> bool {
    t.engine.eq_ignore_ascii_case("InnoDB")
        && !t.primary_key.is_empty()
        && !t.has_foreign_keys
        && !t.system_versioned
}

/// The first column of a key definition line (`  KEY `k` (`a`,`b`)`).
fn first_key_column(line: &str) -> Option<String> {
    let open = line.find("(`")?;
    index_name(&line[open + 1..])
}

/// Splits a table's `SHOW CREATE TABLE` output. MariaDB prints one
/// definition per line, two spaces in, and closes the list with a line
/// starting with `)`. The AUTO_INCREMENT column must lead some index at
/// CREATE time (ERROR 1075 otherwise): when the primary key does not start
/// with it, the first secondary index that does stays in the CREATE.
pub fn split_table(t: &Table) -> SplitDdl {
    let auto = t
        .columns
        .iter()
        .find(|c| c.auto_increment)
        .map(|c| c.name.as_str());
    split_indexes(&t.create_sql, auto)
}

/// [`split_table`] on DDL text; `auto_increment` names the column whose
/// index must stay.
pub fn split_indexes(create_sql: &str, auto_increment: Option<&str>) -> SplitDdl {
    let lines: Vec<&str> = create_sql.split('\n').collect();
    let Some(close) = lines.iter().position(|l| l.starts_with(')')) else {
        return SplitDdl {
            create: create_sql.to_string(),
            deferred: Vec::new(),
        };
    };
    if close < 2 {
        return SplitDdl {
            create: create_sql.to_string(),
            deferred: Vec::new(),
        };
    }
    let body = &lines[1..close];
    // When the AUTO_INCREMENT column needs a secondary index to lead, that
    // index and every index before it stay (index order is part of the DDL).
    let needs_index = auto_increment.is_some_and(|col| {
        !body.iter().any(|l| {
            l.trim_start().starts_with("PRIMARY KEY ")
                && first_key_column(l).as_deref() == Some(col)
        })
    });
    let keep_through = if needs_index {
        body.iter()
            .position(|l| index_line(l) && first_key_column(l).as_deref() == auto_increment)
    } else {
        None
    };
    let mut kept = Vec::new();
    let mut deferred = Vec::new();
    for (i, l) in body.iter().enumerate() {
        let def = l.trim_end_matches(',');
        if index_line(l) && keep_through.is_none_or(|k| i > k) {
            deferred.push(format!("ADD {}", def.trim_start()));
        } else {
            kept.push(def.to_string());
        }
    }
    if deferred.is_empty() || kept.is_empty() {
        return SplitDdl {
            create: create_sql.to_string(),
            deferred: Vec::new(),
        };
    }
    let mut out = String::with_capacity(create_sql.len());
    out.push_str(lines[0]);
    out.push('\n');
    out.push_str(&kept.join(",\n"));
    out.push('\n');
    out.push_str(&lines[close..].join("\n"));
    SplitDdl {
        create: out,
        deferred,
    }
}

/// The index name in an `ADD [UNIQUE|FULLTEXT|SPATIAL] KEY `name` (...)` clause.
pub fn index_name(clause: &str) -> Option<String> {
    let start = clause.find('`')?;
    let rest = &clause[start + 1..];
    let mut name = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            if chars.peek() == Some(&'`') {
                chars.next();
                name.push('`');
            } else {
                return Some(name);
            }
        } else {
            name.push(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = "CREATE TABLE `sbtest1` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(120) NOT NULL DEFAULT '',\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`c`),\n  KEY `k_1` (`k`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4\n PARTITION BY HASH (`id`)\nPARTITIONS 2";

    #[test]
    fn secondary_indexes_are_split_out() {
        let s = split_indexes(SQL, Some("id"));
        assert_eq!(
            s.deferred,
            vec!["ADD UNIQUE KEY `u` (`c`)", "ADD KEY `k_1` (`k`)"]
        );
        assert_eq!(
            s.create,
            "CREATE TABLE `sbtest1` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(120) NOT NULL DEFAULT '',\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4\n PARTITION BY HASH (`id`)\nPARTITIONS 2"
        );
    }

    #[test]
    fn the_index_an_auto_increment_column_needs_stays() {
        let sql = "CREATE TABLE `t` (\n  `tenant` int(11) NOT NULL,\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `v` int(11) DEFAULT NULL,\n  PRIMARY KEY (`tenant`,`id`),\n  KEY `v` (`v`),\n  KEY `id` (`id`),\n  KEY `id2` (`id`,`v`)\n) ENGINE=InnoDB";
        let s = split_indexes(sql, Some("id"));
        assert_eq!(s.deferred, vec!["ADD KEY `id2` (`id`,`v`)"]);
        assert!(
            s.create.contains("  KEY `v` (`v`),\n  KEY `id` (`id`)\n)"),
            "{}",
            s.create
        );
        // A primary key led by the column needs nothing kept.
        let s = split_indexes(SQL, Some("id"));
        assert_eq!(s.deferred.len(), 2);
    }

    #[test]
    fn index_names_are_unquoted() {
        assert_eq!(index_name("ADD KEY `a``b` (`x`)").as_deref(), Some("a`b"));
        assert_eq!(index_name("ADD KEY"), None);
    }

    #[test]
    fn tables_without_indexes_are_unchanged() {
        let sql = "CREATE TABLE `t` (\n  `a` int(11) DEFAULT NULL\n) ENGINE=InnoDB";
        let s = split_indexes(sql, None);
        assert_eq!(s.create, sql);
        assert!(s.deferred.is_empty());
    }
}
