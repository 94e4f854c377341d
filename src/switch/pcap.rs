//! The classic pcap file format (sans-IO): the file header and one record
//! per frame, with nanosecond timestamps and the Ethernet link type, as
//! tcpdump, tshark and Wireshark read it.
//!
//! Owns: the bytes of the format. Must not touch: files, the clock.
use std::time::Duration;

/// Magic of a nanosecond-resolution pcap file (written little-endian).
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;
/// Largest frame kept whole (a jumbo MTU link frame fits).
pub const SNAPLEN: u32 = 65_535 + 18;

/// The 24-byte file header.
pub fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay zero.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// Appends one record: `since_epoch` is the frame's wall-clock time.
pub fn record(since_epoch: Duration, frame: &[u8], out: &mut Vec<u8>) {
    let kept = frame.len().min(SNAPLEN as usize);
    out.extend_from_slice(&(since_epoch.as_secs() as u32).to_le_bytes());
    out.extend_from_slice(&since_epoch.subsec_nanos().to_le_bytes());
    out.extend_from_slice(&(kept as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame[..kept]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_layout() {
        let h = file_header();
        assert_eq!(&h[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), 2);
        assert_eq!(u32::from_le_bytes(h[20..24].try_into().unwrap()), 1);
        let mut out = Vec::new();
        record(Duration::new(1_700_000_000, 123_456_789), &[0xaa; 60], &mut out);
        assert_eq!(out.len(), 16 + 60);
        assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), 1_700_000_000);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 123_456_789);
        assert_eq!(u32::from_le_bytes(out[8..12].try_into().unwrap()), 60);
        assert_eq!(u32::from_le_bytes(out[12..16].try_into().unwrap()), 60);
    }
}
