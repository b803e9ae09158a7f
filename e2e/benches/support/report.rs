//! The markdown report: formatting helpers and the git commit measured.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `abc1234` (and ` (dirty)` when the tree has changes), or `unknown`.
pub fn git_commit(repo: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    match run(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{head} (dirty)"),
        _ => head,
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// `a - b` in milliseconds (may be negative: noise).
pub fn ms_diff(a: Duration, b: Duration) -> String {
    format!("{:+.3}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

/// kB as MB with one decimal.
pub fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// A shell-quoted command line.
pub fn shell(program: &str, args: &[String]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
        {
            s.push('\'');
            s.push_str(a);
            s.push('\'');
        } else {
            s.push_str(a);
        }
    }
    s
}
