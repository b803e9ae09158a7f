//! The proxy's whole plaintext HTTP front end on arbitrary client bytes: protocol sniffing,
//! the replay of the sniffed bytes, the request-head guard and hyper with the listeners'
//! configuration (HTTP/1.1 or h2c by the preface), as `mesh_proxy::http::fuzzing::serve_plaintext`
//! wires them like the routed and inbound listeners do.
//!
//! Input: one control byte (read sizes), then the bytes a client sends before closing its side.
//! Checked: nothing panics, the connection always ends within 5 s of the client closing its
//! side (the guard's header timeout is 2 s; libFuzzer's `-timeout` catches a real hang),
//! and no request reaches the handler with both `Content-Length` and `Transfer-Encoding`.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use mesh_proxy::http::fuzzing::{reason, serve_plaintext};
use mesh_proxy::http::{Body, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&ctl, data)) = input.split_first() else {
        return;
    };
    let data = data.to_vec();
    runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let handler = move |req: http::Request<hyper::body::Incoming>| async move {
            let headers = req.headers();
            assert!(
                !(headers.contains_key(http::header::CONTENT_LENGTH)
                    && headers.contains_key(http::header::TRANSFER_ENCODING)),
                "a request with both framing headers reached the handler"
            );
            let n = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().len(),
                Err(_) => 0,
            };
            let body: Body = Full::new(Bytes::from(n.to_string()))
                .map_err(|never: std::convert::Infallible| -> hyper::Error { match never {} })
                .boxed();
            http::Response::new(body)
        };
        let limits = HttpLimits {
            max_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(2),
        };
        let server = tokio::spawn(serve_plaintext(server, limits, handler));
        let step = 1 + usize::from(ctl);
        let write = async {
            for chunk in data.chunks(step) {
                if client.write_all(chunk).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = client.shutdown().await;
            // Read every response until the proxy closes.
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        // The client has sent everything and closed its side: nothing may wait for long.
        let deadline = Duration::from_secs(5);
        tokio::time::timeout(deadline, write)
            .await
            .unwrap_or_else(|_| panic!("the connection did not end"));
        let served = tokio::time::timeout(deadline, server)
            .await
            .unwrap_or_else(|_| panic!("the server did not end"))
            .unwrap_or_else(|e| panic!("the server task failed: {e}"));
        assert!(
            [
                reason::NONE,
                reason::CL_TE_CONFLICT,
                reason::HEADER_TOO_LARGE
            ]
            .contains(&served.refused),
            "unexpected refusal {}",
            served.refused
        );
    });
});
