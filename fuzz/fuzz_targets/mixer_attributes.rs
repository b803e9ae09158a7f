//! Mixer's compressed attributes (`istio.mixer.v1.CompressedAttributes` and the bags of a
//! `ReportRequest`, delta-encoded or not), decoded by `mesh_proto::attributes` as Mixer's
//! Check and Report do.
//!
//! Input: a selector byte (bit 0: a report), then the protobuf bytes. Checked: nothing panics,
//! and whatever decodes survives a round trip (compress what was decoded, decode it again: the
//! same bags).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::attributes::{compress, compress_report, decompress, decompress_report};
use mesh_proto::istio::mixer::v1::{CompressedAttributes, ReportRequest};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        let Ok(attrs) = CompressedAttributes::decode(msg) else {
            return;
        };
        if let Ok(bag) = decompress(&attrs) {
            let again = decompress(&compress(&bag))
                .unwrap_or_else(|e| panic!("our own compressed bag does not decode: {e}"));
            // Debug, not ==: NaN doubles are equal to themselves here.
            assert_eq!(format!("{again:?}"), format!("{bag:?}"));
        }
    } else {
        let Ok(req) = ReportRequest::decode(msg) else {
            return;
        };
        if let Ok(bags) = decompress_report(&req) {
            let again = decompress_report(&compress_report(&bags))
                .unwrap_or_else(|e| panic!("our own compressed report does not decode: {e}"));
            assert_eq!(format!("{again:?}"), format!("{bags:?}"));
        }
    }
});
