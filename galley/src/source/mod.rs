//! Configuration sources: parsing YAML/JSON text into documents, and the watched directory.

mod dir;
mod parse;
mod split;
pub use dir::{DirSource, DirSync, SourceError, SyncError, SyncOutcome};
pub use parse::{Document, ParseError, parse_text};
pub use split::{RawDocument, split_documents};
