//! Option files, as every MariaDB tool reads them (`--defaults-file`): the
//! `[client]` and `[replseed]` groups, `key = value` lines, `#` and `;`
//! comments, quoted values. replseed takes `user` and `password` from them.

use std::collections::HashMap;
use std::path::Path;

/// The settings of the `[client]` group, overridden by `[replseed]`.
#[derive(Debug, Clone, Default)]
pub struct OptionFile {
    values: HashMap<String, String>,
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
        let mut client = HashMap::new();
        let mut ours = HashMap::new();
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
            let (k, v) = match line.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (line, ""),
            };
            let v = unquote(v);
            let k = k.replace('_', "-").to_ascii_lowercase();
            match group.as_str() {
                "client" => {
                    client.insert(k, v);
                }
                "replseed" => {
                    ours.insert(k, v);
                }
                _ => {}
            }
        }
        client.extend(ours);
        Ok(OptionFile { values: client })
    }

    /// A setting (`password`, `user`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
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
            "# c\n[mysqld]\npassword=no\n[client]\nuser = app\npassword = \"s3 #cr3t\"\n[replseed]\npassword='ours'\n",
        )
        .unwrap();
        assert_eq!(f.get("user"), Some("app"));
        assert_eq!(f.get("password"), Some("ours"));
        let f = OptionFile::parse("[client]\npassword = plain # comment\n").unwrap();
        assert_eq!(f.get("password"), Some("plain"));
        assert!(OptionFile::parse("[client\n").is_err());
    }
}
