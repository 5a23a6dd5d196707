//! Passwords out of `ps`: a password given on the command line (in a
//! server URL, `mysql://user:PASSWORD@host`, or as `--replication-password
//! VALUE`) is overwritten in the process's own argument memory at startup,
//! as the mariadb client does with `--password`, so `/proc/<pid>/cmdline`
//! and `ps` show `x`s from then on. Until then (a few milliseconds after
//! exec) every user of the host can read it: files and variables stay the
//! recommended way.

use std::ffi::OsString;

/// The flags whose next argument (or `=value`) is a password.
const PASSWORD_FLAGS: [&str; 1] = ["--replication-password"];

/// The byte ranges of `arg` that are passwords: the password of every URL
/// in it (`scheme://user:password@`; a list of URLs separated by commas
/// holds several), or all of it after a password flag.
#[allow(clippy::single_range_in_vec_init)] // one range, or one per URL
pub fn password_ranges(arg: &[u8], after_password_flag: bool) -> Vec<std::ops::Range<usize>> {
    if after_password_flag {
        return vec![0..arg.len()];
    }
    for f in PASSWORD_FLAGS {
        if let Some(v) = arg
            .strip_prefix(f.as_bytes())
            .and_then(|v| v.strip_prefix(b"="))
        {
            return vec![arg.len() - v.len()..arg.len()];
        }
    }
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = find(&arg[from..], b"://") {
        let start = from + p + 3;
        // The authority ends at the path, query or fragment; the userinfo
        // at its last `@`, the user at the userinfo's first `:`.
        let end = arg[start..]
            .iter()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .map_or(arg.len(), |e| start + e);
        let authority = &arg[start..end];
        if let Some(at) = authority.iter().rposition(|b| *b == b'@') {
            if let Some(colon) = authority[..at].iter().position(|b| *b == b':') {
                if colon + 1 < at {
                    out.push(start + colon + 1..start + at);
                }
            }
        }
        from = start;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The command line, read before it is masked, and whether a password was
/// masked in it (the caller warns once logging is set up).
pub fn take_and_mask() -> (Vec<OsString>, bool) {
    let args: Vec<OsString> = std::env::args_os().collect();
    let masked = imp::mask();
    (args, masked)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::{c_char, c_int, CStr};
    use std::sync::atomic::{AtomicIsize, AtomicPtr, Ordering};

    static ARGC: AtomicIsize = AtomicIsize::new(0);
    static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());

    /// glibc calls the functions of `.init_array` with the process's own
    /// argc and argv (the strings the kernel shows in /proc/<pid>/cmdline);
    /// the standard library keeps its own copy the same way.
    #[used]
    #[link_section = ".init_array"]
    static KEEP_ARGV: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = keep_argv;

    extern "C" fn keep_argv(argc: c_int, argv: *mut *mut c_char, _env: *mut *mut c_char) {
        ARGC.store(argc as isize, Ordering::Relaxed);
        ARGV.store(argv, Ordering::Relaxed);
    }

    /// Overwrites every password in argv with `x`s; whether there was one.
    pub fn mask() -> bool {
        let argc = ARGC.load(Ordering::Relaxed);
        let argv = ARGV.load(Ordering::Relaxed);
        if argv.is_null() {
            return false;
        }
        let mut masked = false;
        let mut after_flag = false;
        for i in 0..argc {
            // SAFETY: argv holds argc pointers to NUL-terminated strings the
            // process owns for its whole life; the bytes are overwritten in
            // place, within each string, before any thread but main runs.
            unsafe {
                let p = *argv.offset(i);
                if p.is_null() {
                    break;
                }
                let arg = CStr::from_ptr(p).to_bytes();
                let ranges = super::password_ranges(arg, after_flag);
                after_flag = super::PASSWORD_FLAGS.iter().any(|f| f.as_bytes() == arg);
                for r in ranges {
                    masked |= !r.is_empty();
                    std::ptr::write_bytes(p.add(r.start) as *mut u8, b'x', r.len());
                }
            }
        }
        masked
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    /// Elsewhere argv is left as it is.
    pub fn mask() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(arg: &str, after: bool) -> String {
        let mut b = arg.as_bytes().to_vec();
        for r in password_ranges(arg.as_bytes(), after) {
            b[r].fill(b'x');
        }
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn passwords_in_urls_and_flags() {
        assert_eq!(
            masked("mysql://u:pw@h:3306/?ssl-mode=required", false),
            "mysql://u:xx@h:3306/?ssl-mode=required"
        );
        assert_eq!(masked("mysql://u:p@ss@h", false), "mysql://u:xxxx@h");
        assert_eq!(masked("mysql://u@h:1", false), "mysql://u@h:1");
        assert_eq!(masked("mysql://h:1", false), "mysql://h:1");
        assert_eq!(
            masked("mysql://a:p1@h1:1,mysql://b:p22@h2:2", false),
            "mysql://a:xx@h1:1,mysql://b:xxx@h2:2"
        );
        assert_eq!(
            masked("--source=mysql://a:p1@h", false),
            "--source=mysql://a:xx@h"
        );
        assert_eq!(
            masked("--replication-password=abc", false),
            "--replication-password=xxx"
        );
        assert_eq!(masked("abc", true), "xxx");
        assert_eq!(masked("s3://bucket/prefix", false), "s3://bucket/prefix");
        assert_eq!(masked("--threads", false), "--threads");
    }
}
