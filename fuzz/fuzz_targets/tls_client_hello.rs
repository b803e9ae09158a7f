//! The TLS ClientHello reader (`mesh_proxy::tcp`'s, behind SNI routing of TLS passthrough and
//! the PERMISSIVE check that tells mesh mTLS from an application's own TLS by ALPN), on the
//! first bytes of a connection as a peer sends them.
//!
//! Input: the bytes. Checked: nothing panics, and the ALPN check the inbound path runs
//! (`capture::parse_client_hello`) agrees with the reader on what a complete hello offers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::capture::{Hello, parse_client_hello};
use mesh_proxy::http::fuzzing::client_hello;

fuzz_target!(|data: &[u8]| {
    let read = client_hello(data);
    match (read, parse_client_hello(data)) {
        (Some((_, alpn)), Hello::Alpn(offered)) => assert_eq!(alpn, offered),
        (None, Hello::Incomplete | Hello::NotHello) => {}
        (read, check) => panic!("the reader saw {read:?}, the ALPN check {check:?}"),
    }
});
