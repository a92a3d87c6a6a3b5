//! Varint length-delimited frames (the protobuf convention, as
//! `prost::Message::encode_length_delimited` writes them), read without copying: the one
//! reader of a frame's length prefix for the server's codec and for clients.

/// What the front of a buffer says about its next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// The length prefix has not fully arrived.
    Incomplete,
    /// The prefix is `bytes` long and announces a payload of `length` bytes.
    Complete {
        /// Bytes the prefix itself takes.
        bytes: usize,
        /// The payload length it announces (not yet checked against any limit).
        length: u64,
    },
}

/// The prefix is not a varint of at most 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed varint length prefix")]
pub struct MalformedPrefix;

/// Reads the length prefix at the front of `input`. Callers compare `length` with their
/// limit before buffering anything for it, so an announced 4 GiB costs nothing.
pub fn read_prefix(input: &[u8]) -> Result<Prefix, MalformedPrefix> {
    let mut length: u64 = 0;
    // A varint of a u64 is at most 10 bytes, 7 bits each, least significant group first;
    // the tenth holds only bit 63.
    for (i, &byte) in input.iter().take(10).enumerate() {
        if i == 9 && byte > 1 {
            return Err(MalformedPrefix);
        }
        length |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Prefix::Complete {
                bytes: i + 1,
                length,
            });
        }
    }
    match input.len() >= 10 {
        true => Err(MalformedPrefix),
        false => Ok(Prefix::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_agree_with_prost() {
        for length in [0u64, 1, 127, 128, 300, 16_384, 1 << 32, u64::MAX] {
            let mut encoded = Vec::new();
            prost::encoding::encode_varint(length, &mut encoded);
            assert_eq!(
                read_prefix(&encoded),
                Ok(Prefix::Complete {
                    bytes: encoded.len(),
                    length
                })
            );
            for cut in 0..encoded.len() {
                assert_eq!(read_prefix(&encoded[..cut]), Ok(Prefix::Incomplete));
            }
        }
    }

    #[test]
    fn overlong_prefixes_are_malformed() {
        assert_eq!(read_prefix(&[0x80; 10]), Err(MalformedPrefix));
        assert_eq!(read_prefix(&[0xff; 11]), Err(MalformedPrefix));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(read_prefix(&too_big), Err(MalformedPrefix));
    }
}
