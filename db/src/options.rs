//! Option files, as every MariaDB tool reads them (`--defaults-file`):
//! `[group]` headers, `key = value` lines, `#` and `;` comments, quoted
//! values. replseed reads the generic groups `[client]` and `[replseed]`
//! and one group per server role, `[replseed-<role>]` (`[replseed-source]`,
//! `[replseed-target]`, ...); which settings it takes from which group is
//! the caller's rule (see `src/commands/credentials.rs`).

use std::collections::BTreeMap;
use std::path::Path;

/// The groups of an option file that concern replseed.
#[derive(Debug, Clone, Default)]
pub struct OptionFile {
    /// `client`, `replseed` and `replseed-*` groups: key to value.
    groups: BTreeMap<String, BTreeMap<String, String>>,
}

impl OptionFile {
    /// Reads an option file; an error names the file and the line.
    pub fn read(path: &Path) -> Result<OptionFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the option file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses option-file text.
    pub fn parse(text: &str) -> Result<OptionFile, String> {
        let mut groups: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut group = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(g) = line.strip_prefix('[') {
                group = g
                    .strip_suffix(']')
                    .ok_or_else(|| format!("line {}: unclosed group name", n + 1))?
                    .trim()
                    .to_ascii_lowercase();
                continue;
            }
            if !(group == "client" || group == "replseed" || group.starts_with("replseed-")) {
                continue;
            }
            let (k, v) = match line.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (line, ""),
            };
            let k = k.replace('_', "-").to_ascii_lowercase();
            groups
                .entry(group.clone())
                .or_default()
                .insert(k, unquote(v));
        }
        Ok(OptionFile { groups })
    }

    /// A setting of the generic groups: `[replseed]` over `[client]`.
    pub fn generic(&self, key: &str) -> Option<&str> {
        ["replseed", "client"]
            .iter()
            .find_map(|g| self.group(g, key))
    }

    /// A setting of one group (`replseed-source`, ...).
    pub fn group(&self, group: &str, key: &str) -> Option<&str> {
        self.groups.get(group)?.get(key).map(String::as_str)
    }

    /// The roles the file has a `[replseed-<role>]` group for.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.groups
            .keys()
            .filter_map(|g| g.strip_prefix("replseed-"))
    }
}

fn unquote(v: &str) -> String {
    let q = v.chars().next();
    if matches!(q, Some('"') | Some('\'')) && v.len() >= 2 && v.ends_with(q.unwrap()) {
        v[1..v.len() - 1].to_string()
    } else {
        // An unquoted value ends at a comment.
        v.split(" #").next().unwrap_or(v).trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_quotes() {
        let f = OptionFile::parse(
            "# c\n[mysqld]\npassword=no\n[client]\nuser = app\npassword = \"s3 #cr3t\"\n[replseed]\npassword='ours'\n\
             [Replseed-Source]\npassword=src\n[replseed-target]\nuser=loader\n",
        )
        .unwrap();
        assert_eq!(f.generic("user"), Some("app"));
        assert_eq!(f.generic("password"), Some("ours"));
        assert_eq!(f.group("replseed-source", "password"), Some("src"));
        assert_eq!(f.group("replseed-target", "user"), Some("loader"));
        assert_eq!(f.group("replseed-target", "password"), None);
        assert_eq!(f.roles().collect::<Vec<_>>(), ["source", "target"]);
        let f = OptionFile::parse("[client]\npassword = plain # comment\n").unwrap();
        assert_eq!(f.generic("password"), Some("plain"));
        assert!(OptionFile::parse("[client\n").is_err());
    }
}
