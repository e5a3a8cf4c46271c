//! Length-prefix framing for byte streams (`Pipe`'s connections): a
//! message is a little-endian `u32` length followed by that many bytes.

/// The 4-byte header of a stream message of `len` bytes, or `None` if the
/// message is too large to frame.
#[inline]
pub fn encode_header(len: usize) -> Option<[u8; 4]> {
    u32::try_from(len).ok().map(u32::to_le_bytes)
}

/// The length a stream header announces.
#[inline]
pub fn decode_header(h: [u8; 4]) -> usize {
    u32::from_le_bytes(h) as usize
}
