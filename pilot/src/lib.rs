//! Pilot: turns the registry and Istio traffic config into Envoy xDS v3 and serves it over ADS
