//! The input format of the `xds_apply` target, shared with the seed generator
//! (`examples/seeds.rs`): one flags byte, then frames, each a little-endian `u16` length and
//! that many bytes: a selector byte and an encoded `DiscoveryResponse` (SotW) or
//! `DeltaDiscoveryResponse` (Delta). The selector lets the fuzzer aim mutated bytes at one
//! resource type (see [`Aim`]).

/// The flags byte: bit 0 set means Delta.
pub const DELTA: u8 = 1;

/// What a frame's selector asks of the decoded response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    /// Set the response's type URL and every resource's to type `i` of the four.
    All(usize),
    /// Set only the response's type URL to type `i`.
    Response(usize),
    /// Leave the response as decoded.
    AsIs,
}

impl Aim {
    pub fn of(selector: u8) -> Aim {
        match selector {
            0..=3 => Aim::All(usize::from(selector)),
            4..=7 => Aim::Response(usize::from(selector - 4)),
            _ => Aim::AsIs,
        }
    }
}

/// Splits an input into its flags and frames (a short last frame is taken as it is).
pub fn split(data: &[u8]) -> (u8, Vec<(u8, &[u8])>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut frames = Vec::new();
    while rest.len() >= 3 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let frame = &rest[..len.min(rest.len())];
        rest = &rest[frame.len()..];
        if let Some((&sel, msg)) = frame.split_first() {
            frames.push((sel, msg));
        }
    }
    (flags, frames)
}

/// Joins frames (selector, message) into an input.
pub fn join(flags: u8, frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![flags];
    for (sel, msg) in frames {
        let len = u16::try_from(msg.len() + 1).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.push(*sel);
        out.extend_from_slice(&msg[..usize::from(len) - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_then_split_gives_the_frames_back() {
        let frames = vec![(0xff, b"abc".to_vec()), (2, Vec::new())];
        let data = join(DELTA, &frames);
        let (flags, got) = split(&data);
        assert_eq!(flags, DELTA);
        assert_eq!(got, vec![(0xff, &b"abc"[..]), (2, &b""[..])]);
    }
}
