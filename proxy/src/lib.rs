//! The mesh's sidecar and gateway proxy
