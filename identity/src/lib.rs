//! Workload identity: SPIFFE ids, key and CSR generation, certificate fetch and rotation from Citadel, rustls configs that verify SPIFFE peers
