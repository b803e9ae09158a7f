//! Configuration sources: parsing YAML/JSON text into documents (within size, depth and alias
//! bounds), reading files, the watched directory, and the Kubernetes API ([`kube`]).

mod dir;
pub mod kube;
mod mesh;
mod parse;
mod read;
mod split;
mod yaml_fast;
pub use dir::{DirSource, DirSync, SourceError, SyncError, SyncOutcome};
pub use mesh::{
    FoundMeshConfig, MeshConfigError, MeshSource, MeshSyncError, mesh_config_object,
    parse_mesh_config,
};
pub use parse::{Document, MAX_DEPTH, MAX_TEXT_BYTES, ParseError, parse_text};
pub use read::{ReadError, read_config_file};
pub use split::{RawDocument, split_documents};
