//! The Bookinfo-shaped demo application and end-to-end test support.
