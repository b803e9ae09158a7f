//! Citadel: the mesh CA signing workload CSRs with SPIFFE identities
