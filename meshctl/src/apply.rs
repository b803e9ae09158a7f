//! `meshctl apply -f FILE|DIR`: sends each file to Galley and prints what it did.

use std::path::{Path, PathBuf};

use crate::galley_api::{ApiError, ApplyOutcome, GalleyApi};

/// Flags of `meshctl apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A YAML/JSON file, or a directory read recursively (`*.yaml`, `*.yml`, `*.json`); repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        env = "MESH_APPLY_FILES",
        required = true,
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,
}

/// `apply` failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no *.yaml, *.yml or *.json file in {0}")]
    Empty(PathBuf),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{invalid} invalid document(s); nothing of those files was applied")]
    Invalid { invalid: usize },
}

/// Applies every file named by `args` through the API at `galley`.
pub async fn run(args: &ApplyArgs, galley: &str) -> Result<(), ApplyError> {
    let api = GalleyApi::new(galley);
    let mut files = Vec::new();
    for p in &args.files {
        let found = collect(p)?;
        if found.is_empty() {
            return Err(ApplyError::Empty(p.clone()));
        }
        files.extend(found);
    }
    let mut invalid = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| ApplyError::Read {
            path: file.clone(),
            source,
        })?;
        let source = file.display().to_string();
        match api.apply(&source, text).await? {
            ApplyOutcome::Applied { applied, skipped } => {
                for a in applied {
                    if a.namespace.is_empty() {
                        println!("{} {} configured", a.kind, a.name);
                    } else {
                        println!("{} {}/{} configured", a.kind, a.namespace, a.name);
                    }
                }
                for s in skipped {
                    eprintln!("{}:{}: {} skipped: {}", s.file, s.line, s.kind, s.reason);
                }
            }
            ApplyOutcome::Invalid(errors) => {
                invalid += errors.len().max(1);
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
    }
    if invalid > 0 {
        return Err(ApplyError::Invalid { invalid });
    }
    Ok(())
}

/// The files `path` names: itself, or the config files under it (recursively, sorted).
pub fn collect(path: &Path) -> Result<Vec<PathBuf>, ApplyError> {
    let read_err = |source| ApplyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(collect(&p)?);
        } else if is_config_file(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

fn is_config_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_config_files_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in ["b.yaml", "a.json", "notes.txt", "sub/c.yml"] {
            std::fs::write(d.join(f), "x: 1").unwrap();
        }
        let got = collect(d).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["a.json", "b.yaml", "sub/c.yml"]);
        assert_eq!(collect(&d.join("notes.txt")).unwrap().len(), 1);
        assert!(collect(&d.join("missing.yaml")).is_err());
    }
}
