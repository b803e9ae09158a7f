//! `meshctl history [--kind K --name N -n NS]` and `meshctl rollback REV`: Galley's record of
//! every stored change, and restoring the store to its content at a revision.

use std::fmt::Write as _;

use crate::galley_api::{ApiError, GalleyApi, HistoryRow, Invalid, RollbackOutcome};

/// Flags of `meshctl history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only changes of this kind (`VirtualService`, `virtualservices`, ...).
    #[arg(long, env = "MESH_HISTORY_KIND")]
    pub kind: Option<String>,
    /// Only changes of objects with this name.
    #[arg(long, env = "MESH_HISTORY_NAME")]
    pub name: Option<String>,
    /// Only changes of objects in this namespace.
    #[arg(short = 'n', long, env = "MESH_HISTORY_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Flags of `meshctl rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The revision whose content the store gets back (see `meshctl history`).
    #[arg(env = "MESH_ROLLBACK_REV")]
    pub rev: u64,
}

/// `history`/`rollback` failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("rollback to revision {rev} rejected, nothing changed:\n{}", lines(.errors))]
    Rejected { rev: u64, errors: Vec<Invalid> },
}

fn lines(errors: &[Invalid]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `history` table: `REV  TIME  OP  KIND  NAMESPACE/NAME`.
pub fn render(rows: &[HistoryRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:<7} {:<22} OBJECT",
        "REV", "TIME", "OP", "KIND"
    );
    for r in rows {
        let object = if r.namespace.is_empty() {
            r.name.clone()
        } else {
            format!("{}/{}", r.namespace, r.name)
        };
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:<7} {:<22} {object}",
            r.rev, r.time, r.op, r.kind
        );
    }
    out
}

/// Prints the history.
pub async fn run_history(args: &HistoryArgs, galley: &str) -> Result<(), HistoryError> {
    let rows = GalleyApi::new(galley)
        .history(
            args.kind.as_deref(),
            args.namespace.as_deref(),
            args.name.as_deref(),
        )
        .await?;
    print!("{}", render(&rows));
    Ok(())
}

/// Rolls the store back to `args.rev`.
pub async fn run_rollback(args: &RollbackArgs, galley: &str) -> Result<(), HistoryError> {
    match GalleyApi::new(galley).rollback(args.rev).await? {
        RollbackOutcome::RolledBack { revision, applied } => {
            for a in &applied {
                println!("{} {}/{} restored", a.kind, a.namespace, a.name);
            }
            println!(
                "rolled back to revision {} as revision {revision} ({} changes)",
                args.rev,
                applied.len()
            );
            Ok(())
        }
        RollbackOutcome::Invalid(errors) => Err(HistoryError::Rejected {
            rev: args.rev,
            errors,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn history_table() {
        let rows = vec![
            HistoryRow {
                rev: 3,
                time: "2026-11-22T07:05:05.123Z".into(),
                op: "update".into(),
                kind: "VirtualService".into(),
                namespace: "default".into(),
                name: "reviews".into(),
            },
            HistoryRow {
                rev: 4,
                time: "2026-11-22T07:05:06.000Z".into(),
                op: "create".into(),
                kind: "Namespace".into(),
                namespace: String::new(),
                name: "prod".into(),
            },
        ];
        let t = render(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("REV"));
        assert!(lines[1].starts_with("3 "));
        assert!(
            lines[1].ends_with("VirtualService         default/reviews"),
            "{t}"
        );
        assert!(lines[2].ends_with(" prod"));
    }
}
