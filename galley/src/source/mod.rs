//! Configuration sources: parsing YAML/JSON text into documents (within size, depth and alias
//! bounds), reading files, and the watched directory.

mod dir;
mod parse;
mod read;
mod split;
pub use dir::{DirSource, DirSync, SourceError, SyncError, SyncOutcome};
pub use parse::{Document, MAX_DEPTH, MAX_TEXT_BYTES, ParseError, parse_text};
pub use read::{ReadError, read_config_file};
pub use split::{RawDocument, split_documents};
