//! `meshctl get KIND` and `meshctl delete KIND NAME`.

use mesh_proto::config::{ConfigObject, Kind};

use crate::galley_api::{ApiError, GalleyApi};

/// Output format of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line per object: namespace, name, revision.
    Table,
    /// `{"items":[...]}` as Galley stores them.
    Json,
    /// The objects as a multi-document YAML stream (re-appliable with `meshctl apply`).
    Yaml,
}

/// Flags of `meshctl get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The kind: `VirtualService`, `virtualservice`, `virtualservices` or a short name (`vs`, `dr`, `gw`, `se`, `svc`, `ep`, `po`).
    pub kind: String,

    /// Only this namespace (default: all namespaces).
    #[arg(short = 'n', long, env = "MESH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(
        short = 'o',
        long,
        env = "MESH_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: Output,
}

/// Flags of `meshctl delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The kind: `VirtualService`, `virtualservice`, `virtualservices` or a short name (`vs`, `dr`, `gw`, `se`, `svc`, `ep`, `po`).
    pub kind: String,

    /// The object's name.
    pub name: String,

    /// The object's namespace.
    #[arg(short = 'n', long, env = "MESH_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

/// `get`/`delete` failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("cannot encode output: {0}")]
    Encode(String),
}

/// kubectl's short names for the Istio kinds.
const SHORT_NAMES: &[(&str, Kind)] = &[
    ("vs", Kind::VirtualService),
    ("dr", Kind::DestinationRule),
    ("gw", Kind::Gateway),
    ("se", Kind::ServiceEntry),
    ("we", Kind::WorkloadEntry),
    ("ap", Kind::AuthorizationPolicy),
    ("pa", Kind::PeerAuthentication),
    ("ra", Kind::RequestAuthentication),
    ("svc", Kind::Service),
    ("ep", Kind::Endpoints),
    ("po", Kind::Pod),
    ("ns", Kind::Namespace),
    ("sa", Kind::ServiceAccount),
];

fn kind_of(name: &str) -> Result<Kind, GetError> {
    let lower = name.to_ascii_lowercase();
    SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == lower)
        .map(|(_, k)| *k)
        .or_else(|| Kind::from_name(name))
        .ok_or_else(|| GetError::UnknownKind(name.to_string()))
}

/// The collection suffix Galley's API names a kind by (`virtualservices`).
fn api_name(kind: Kind) -> &'static str {
    kind.info()
        .collection
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// Lists objects and prints them.
pub async fn run_get(args: &GetArgs, galley: &str) -> Result<(), GetError> {
    let kind = kind_of(&args.kind)?;
    let items = GalleyApi::new(galley)
        .list(api_name(kind), args.namespace.as_deref())
        .await?;
    print!("{}", render(&items, args.output)?);
    Ok(())
}

/// Deletes one object.
pub async fn run_delete(args: &DeleteArgs, galley: &str) -> Result<(), GetError> {
    let kind = kind_of(&args.kind)?;
    GalleyApi::new(galley)
        .delete(api_name(kind), &args.namespace, &args.name)
        .await?;
    println!(
        "{} {}/{} deleted",
        kind.info().kind,
        args.namespace,
        args.name
    );
    Ok(())
}

/// The text `get` prints for `items`.
pub fn render(items: &[ConfigObject], output: Output) -> Result<String, GetError> {
    match output {
        Output::Json => serde_json::to_string_pretty(&serde_json::json!({ "items": items }))
            .map(|s| s + "\n")
            .map_err(|e| GetError::Encode(e.to_string())),
        Output::Yaml => {
            serde_saphyr::to_string_multiple(items).map_err(|e| GetError::Encode(e.to_string()))
        }
        Output::Table => {
            let rows: Vec<[String; 4]> = items
                .iter()
                .map(|o| {
                    [
                        o.metadata.namespace.clone(),
                        o.metadata.name.clone(),
                        o.kind.clone(),
                        o.metadata.resource_version.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(table(["NAMESPACE", "NAME", "KIND", "REVISION"], &rows))
        }
    }
}

fn table(header: [&str; 4], rows: &[[String; 4]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 3 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for r in rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str, rev: &str) -> ConfigObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rev},
            "spec": {"hosts": [name]}
        }))
        .unwrap()
    }

    #[test]
    fn renders_table_json_and_yaml() {
        let items = vec![vs("reviews", "12"), vs("productpage-long-name", "3")];
        let t = render(&items, Output::Table).unwrap();
        assert_eq!(
            t,
            "NAMESPACE   NAME                    KIND             REVISION\n\
             default     reviews                 VirtualService   12\n\
             default     productpage-long-name   VirtualService   3\n"
        );
        let j: serde_json::Value =
            serde_json::from_str(&render(&items, Output::Json).unwrap()).unwrap();
        assert_eq!(j["items"][1]["metadata"]["name"], "productpage-long-name");
        let y = render(&items, Output::Yaml).unwrap();
        let back: Vec<ConfigObject> = serde_saphyr::from_multiple(&y).unwrap();
        assert_eq!(back, items);
    }

    #[test]
    fn kinds_by_any_spelling() {
        assert_eq!(
            api_name(kind_of("VirtualService").unwrap()),
            "virtualservices"
        );
        assert_eq!(api_name(kind_of("gateway").unwrap()), "gateways");
        assert_eq!(api_name(kind_of("endpoints").unwrap()), "endpoints");
        assert_eq!(kind_of("vs").unwrap(), Kind::VirtualService);
        assert_eq!(kind_of("DR").unwrap(), Kind::DestinationRule);
        assert!(kind_of("deployment").is_err());
    }
}
