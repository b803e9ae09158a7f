//! Mixer: Check and Report over istio.mixer.v1
