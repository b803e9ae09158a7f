//! `meshctl analyze [-f FILE|DIR ...] [--output json]`: cross-resource checks with Istio's
//! analyzer codes, over files (offline) or over everything a running Galley stores.
//!
//! Exit codes: 0 no finding of level Error, 1 some Error finding, 2 input unreadable or Galley
//! unreachable.

use std::io::Write;
use std::path::PathBuf;

use galley::analyze::{Finding, Level, Object, analyze, objects_from_documents};
use galley::source::{parse_text, read_config_file};
use mesh_proto::config::Kind;

use crate::apply::collect;
use crate::galley_api::GalleyApi;
use crate::validate::Output;

/// No finding of level Error.
pub const EXIT_CLEAN: i32 = 0;
/// At least one finding of level Error.
pub const EXIT_ERRORS: i32 = 1;
/// Input unreadable, or Galley unreachable.
pub const EXIT_UNREADABLE: i32 = 2;

/// The kinds the analyzers look at (what is fetched from Galley).
const ANALYZED: [Kind; 6] = [
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
    Kind::ServiceEntry,
    Kind::Sidecar,
    Kind::Service,
];

/// Flags of `meshctl analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// A YAML/JSON file, or a directory read recursively; repeatable. Without it, everything the
    /// running Galley stores is analyzed.
    #[arg(
        short = 'f',
        long = "filename",
        env = "MESH_ANALYZE_FILES",
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,

    /// Output form: `text` (one line per finding) or `json` (an array of findings).
    #[arg(
        short = 'o',
        long = "output",
        env = "MESH_ANALYZE_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,
}

/// Reads the objects of every file `args` names; problems go to `err`. `None` when some input
/// could not be read.
fn read_files(args: &AnalyzeArgs, err: &mut dyn Write) -> Option<Vec<Object>> {
    let mut ok = true;
    let mut docs = Vec::new();
    for path in &args.files {
        let files = match collect(path) {
            Ok(f) if !f.is_empty() => f,
            Ok(_) => {
                let _ = writeln!(
                    err,
                    "meshctl: no *.yaml, *.yml or *.json file in {}",
                    path.display()
                );
                ok = false;
                continue;
            }
            Err(e) => {
                let _ = writeln!(err, "meshctl: {e}");
                ok = false;
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            match read_config_file(&file) {
                Ok(text) => {
                    for doc in parse_text(&name, &text) {
                        match doc {
                            Ok(d) => docs.push(d),
                            // A document that does not parse is `meshctl validate`'s business:
                            // note it, analyze the rest.
                            Err(e) => {
                                let _ = writeln!(err, "meshctl: skipped unreadable document: {e}");
                            }
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(err, "meshctl: {e}");
                    ok = false;
                }
            }
        }
    }
    ok.then(|| objects_from_documents(&docs))
}

/// Every object of the analyzed kinds Galley stores.
async fn read_galley(galley: &str) -> Result<Vec<Object>, crate::galley_api::ApiError> {
    let api = GalleyApi::new(galley);
    let mut objects = Vec::new();
    for kind in ANALYZED {
        let name = kind
            .info()
            .collection
            .rsplit('/')
            .next()
            .unwrap_or_default();
        for obj in api.list(name, None).await? {
            objects.extend(Object::from_config(&obj));
        }
    }
    Ok(objects)
}

/// Writes `findings` as `output`; returns the exit code.
pub fn report(
    findings: &[Finding],
    output: Output,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let written = match output {
        Output::Text => findings.iter().try_for_each(|f| writeln!(out, "{f}")),
        Output::Json => serde_json::to_writer_pretty(&mut *out, findings)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
    };
    if let Err(e) = written {
        let _ = writeln!(err, "meshctl: cannot write the report: {e}");
        return EXIT_UNREADABLE;
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    if output == Output::Text {
        if findings.is_empty() {
            let _ = writeln!(err, "No validation issues found.");
        } else {
            let _ = writeln!(err, "{} finding(s), {errors} error(s)", findings.len());
        }
    }
    if errors > 0 { EXIT_ERRORS } else { EXIT_CLEAN }
}

/// Runs `meshctl analyze`: over the files named, or (none named) over what the Galley at
/// `galley` stores; returns the exit code.
pub async fn run(
    args: &AnalyzeArgs,
    galley: impl FnOnce() -> Result<String, String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let objects = if args.files.is_empty() {
        let url = match galley() {
            Ok(u) => u,
            Err(e) => {
                let _ = writeln!(err, "meshctl: {e}");
                return EXIT_UNREADABLE;
            }
        };
        match read_galley(&url).await {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(err, "meshctl: {e}");
                return EXIT_UNREADABLE;
            }
        }
    } else {
        match read_files(args, err) {
            Some(o) => o,
            None => return EXIT_UNREADABLE,
        }
    };
    let findings = analyze(&objects);
    tracing::debug!(
        objects = objects.len(),
        findings = findings.len(),
        "analyzed"
    );
    report(&findings, args.output, out, err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{port: 9080}]}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n";
    const FIX: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec: {host: reviews, subsets: [{name: v2, labels: {version: v2}}]}\n";

    async fn analyze_files(files: Vec<PathBuf>, output: Output) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args = AnalyzeArgs { files, output };
        let code = run(&args, || Err("no galley".into()), &mut out, &mut err).await;
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[tokio::test]
    async fn files_findings_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mesh.yaml");
        std::fs::write(&file, CONFIG).unwrap();
        let (code, out, _) = analyze_files(vec![file.clone()], Output::Text).await;
        assert_eq!(code, EXIT_ERRORS);
        assert_eq!(
            out,
            format!(
                "Error [IST0101] (VirtualService default/reviews {}:6) Referenced host+subset in destinationrule not found: \"reviews+v2\"\n",
                file.display()
            )
        );
        let (_, out, _) = analyze_files(vec![file.clone()], Output::Json).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["code"], "IST0101");
        assert_eq!(v[0]["level"], "Error");
        assert_eq!(v[0]["field"], "spec.http[0].route[0].destination.subset");

        std::fs::write(dir.path().join("dr.yaml"), FIX).unwrap();
        let (code, out, err) = analyze_files(vec![dir.path().to_path_buf()], Output::Text).await;
        assert_eq!((code, out.as_str()), (EXIT_CLEAN, ""), "{err}");

        let (code, _, _) = analyze_files(vec![dir.path().join("missing.yaml")], Output::Text).await;
        assert_eq!(code, EXIT_UNREADABLE);
        let (code, _, err) = analyze_files(vec![], Output::Text).await;
        assert_eq!(code, EXIT_UNREADABLE);
        assert!(err.contains("no galley"), "{err}");
    }

    #[tokio::test]
    async fn analyzes_what_galley_stores() {
        let tmp = tempfile::tempdir().unwrap();
        let store = galley::store::Store::open(&tmp.path().join("store")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = galley::api::api_router(store, galley::api::ApiMetrics::default());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let api = GalleyApi::new(&url);
        api.apply("mesh.yaml", CONFIG.to_string()).await.unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args = AnalyzeArgs {
            files: vec![],
            output: Output::Text,
        };
        let u = url.clone();
        let code = run(&args, move || Ok(u), &mut out, &mut err).await;
        let out = String::from_utf8(out).unwrap();
        assert_eq!(code, EXIT_ERRORS, "{out}");
        assert_eq!(
            out,
            "Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v2\"\n"
        );
        api.apply("dr.yaml", FIX.to_string()).await.unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&args, move || Ok(url), &mut out, &mut err).await;
        assert_eq!(code, EXIT_CLEAN, "{}", String::from_utf8(out).unwrap());
    }
}
