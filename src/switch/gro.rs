//! Software receive offload (sans-IO): consecutive TCP/IPv4 segments of
//! one flow, on their way to a port that takes GSO frames (an ns node's
//! TAP), merged into one super-frame, as a NIC's GRO would. Segments from
//! ports without offloads (passt, UML and QEMU sockets) then cost the
//! node's kernel one write and one trip through its stack per 64 KiB
//! instead of one per segment.
//!
//! Only what merges back exactly is merged: untagged IPv4 without options
//! or fragments, TCP with ACK (and PSH) only, payload, same addresses,
//! ports, ack number, TTL, TOS, TCP options, in sequence, every segment
//! but the last of the first one's size, and valid IP and TCP checksums
//! (a segment damaged on purpose by an impairment must stay damaged: a
//! merged frame's checksum is left for the receiver to trust). The
//! merged frame keeps the first segment's headers with the last one's
//! window, PSH if any had it, and a virtio-net header that says TCPv4 GSO
//! with the first segment's size; its TCP checksum field holds the
//! pseudo-header sum, as the kernel seeds one for TSO.
use super::frame::{VnetHdr, ETH_HDR_LEN, MAX_BUFFER_LEN, VNET_HDR_LEN};
use super::gso::{finish, sum};

/// Where the TCP header starts in the frame (after Ethernet and a
/// 20-byte IPv4 header), from the buffer's start.
const L4: usize = VNET_HDR_LEN + ETH_HDR_LEN + 20;
const IP: usize = VNET_HDR_LEN + ETH_HDR_LEN;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// The most a merged frame's IP packet may hold.
const MAX_IP_LEN: usize = 65535;

/// A frame (virtio-net header first) merging segments of one flow.
#[derive(Debug)]
pub struct Held {
    buf: Vec<u8>,
    /// Where the payload starts (after the TCP header and its options).
    payload: usize,
    /// The payload size of every segment but the last.
    seg: usize,
    next_seq: u32,
    /// Segments in it, and their wire bytes (for the port's counters).
    pub segs: u64,
    pub wire_bytes: u64,
    /// A shorter or PSH segment ended the run: send it.
    pub closed: bool,
}

/// The payload offset of a TCP/IPv4 segment that may be merged, and its
/// payload length.
fn candidate(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.len() <= L4 + 20 || buf[..VNET_HDR_LEN].iter().any(|b| *b != 0) {
        return None;
    }
    let eth = &buf[VNET_HDR_LEN..];
    let ip = &buf[IP..];
    if eth[12..14] != [0x08, 0x00] || ip[0] != 0x45 || ip[9] != 6 {
        return None;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if total != buf.len() - IP || frag & 0x3fff != 0 {
        return None;
    }
    let doff = (buf[L4 + 12] >> 4) as usize * 4;
    let flags = buf[L4 + 13];
    let payload = L4 + doff;
    if doff < 20 || payload >= buf.len() || flags & !(ACK | PSH) != 0 || flags & ACK == 0 {
        return None;
    }
    // Checksums: what is damaged is never merged (and so never repaired).
    if finish(sum(&ip[..20], 0)) != 0 {
        return None;
    }
    let tcp_len = buf.len() - L4;
    let pseudo = sum(&[0, 6], sum(&ip[12..20], 0));
    let pseudo = sum(&(tcp_len as u32).to_be_bytes(), pseudo);
    if finish(sum(&buf[L4..], pseudo)) != 0 {
        return None;
    }
    Some((payload, buf.len() - payload))
}

fn seq_of(buf: &[u8]) -> u32 {
    u32::from_be_bytes([buf[L4 + 4], buf[L4 + 5], buf[L4 + 6], buf[L4 + 7]])
}

impl Held {
    /// Starts a merge with `frame` if it may be merged at all, in `buf`
    /// (a recycled buffer).
    pub fn start(frame: &[u8], mut buf: Vec<u8>) -> Result<Held, Vec<u8>> {
        let Some((payload, len)) = candidate(frame) else { return Err(buf) };
        buf.clear();
        buf.extend_from_slice(frame);
        let closed = frame[L4 + 13] & PSH != 0;
        Ok(Held {
            buf,
            payload,
            seg: len,
            next_seq: seq_of(frame).wrapping_add(len as u32),
            segs: 1,
            wire_bytes: (frame.len() - VNET_HDR_LEN) as u64,
            closed,
        })
    }

    /// Appends `frame` if it continues this flow; false (and nothing
    /// changed) if it does not.
    pub fn merge(&mut self, frame: &[u8]) -> bool {
        if self.closed || frame.len() < self.payload {
            return false;
        }
        let Some((payload, len)) = candidate(frame) else { return false };
        let (a, b) = (&self.buf, frame);
        let same = payload == self.payload
            && len <= self.seg
            && seq_of(b) == self.next_seq
            && a[VNET_HDR_LEN..IP] == b[VNET_HDR_LEN..IP]
            && a[IP + 1] == b[IP + 1]
            && a[IP + 8..IP + 10] == b[IP + 8..IP + 10]
            && a[IP + 12..IP + 20] == b[IP + 12..IP + 20]
            && a[L4..L4 + 4] == b[L4..L4 + 4]
            && a[L4 + 8..L4 + 13] == b[L4 + 8..L4 + 13]
            && a[L4 + 20..payload] == b[L4 + 20..payload];
        if !same || self.buf.len() + len > MAX_BUFFER_LEN || self.buf.len() + len - IP > MAX_IP_LEN {
            return false;
        }
        self.buf.extend_from_slice(&frame[payload..]);
        // The latest window, and PSH if this one has it.
        self.buf[L4 + 14..L4 + 16].copy_from_slice(&frame[L4 + 14..L4 + 16]);
        self.buf[L4 + 13] |= frame[L4 + 13] & PSH;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        self.segs += 1;
        self.wire_bytes += (frame.len() - VNET_HDR_LEN) as u64;
        self.closed = len < self.seg || frame[L4 + 13] & PSH != 0;
        true
    }

    /// The frame to send: a single segment as it came; several as one
    /// TCPv4 GSO frame with its IP length and checksum and its TCP
    /// checksum seed made for the whole.
    pub fn finish(mut self) -> Vec<u8> {
        if self.segs < 2 {
            return self.buf;
        }
        let ip_len = (self.buf.len() - IP) as u16;
        self.buf[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
        self.buf[IP + 10..IP + 12].fill(0);
        let ip_sum = finish(sum(&self.buf[IP..IP + 20], 0));
        self.buf[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let tcp_len = self.buf.len() - L4;
        let pseudo = sum(&[0, 6], sum(&self.buf[IP + 12..IP + 20], 0));
        let pseudo = sum(&(tcp_len as u32).to_be_bytes(), pseudo);
        // The seed: the pseudo-header sum, folded, not complemented.
        let seed = !finish(pseudo);
        self.buf[L4 + 16..L4 + 18].copy_from_slice(&seed.to_be_bytes());
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: (self.payload - VNET_HDR_LEN) as u16,
            gso_size: self.seg as u16,
            csum_start: (L4 - VNET_HDR_LEN) as u16,
            csum_offset: 16,
        };
        hdr.write(&mut self.buf[..VNET_HDR_LEN]);
        self.buf
    }
}

/// A TCP/IPv4 segment with valid checksums, virtio-net header first (for
/// the switch's tests).
#[cfg(test)]
pub(crate) fn tcp_segment(seq: u32, payload: &[u8], flags: u8, window: u16) -> Vec<u8> {
    tests::segment(seq, payload, flags, window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::frame::Frame;
    use crate::switch::gso;

    /// A TCP/IPv4 segment with valid checksums, virtio-net header first.
    pub(super) fn segment(seq: u32, payload: &[u8], flags: u8, window: u16) -> Vec<u8> {
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = (20 + 32 + payload.len()) as u16;
        b.extend_from_slice(&[0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 2, 10, 0, 2, 15]);
        b[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        let c = finish(sum(&b[IP..IP + 20], 0));
        b[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
        b.extend_from_slice(&5201u16.to_be_bytes());
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&77u32.to_be_bytes());
        b.extend_from_slice(&[0x80, flags]);
        b.extend_from_slice(&window.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        b.extend_from_slice(payload);
        let tcp_len = b.len() - L4;
        let pseudo = sum(&(tcp_len as u32).to_be_bytes(), sum(&[0, 6], sum(&b[IP + 12..IP + 20], 0)));
        let c = finish(sum(&b[L4..], pseudo));
        b[L4 + 16..L4 + 18].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn a_run_of_segments_merges_into_a_gso_frame_that_cuts_back_into_them() {
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
        let segs: Vec<Vec<u8>> = data
            .chunks(1448)
            .enumerate()
            .map(|(i, c)| segment(1000 + (i * 1448) as u32, c, ACK, 500 + i as u16))
            .collect();
        let mut held = Held::start(&segs[0], Vec::new()).unwrap();
        assert!(held.merge(&segs[1]));
        assert!(!held.closed);
        assert!(held.merge(&segs[2]), "the last, shorter one");
        assert!(held.closed, "nothing may follow a shorter segment");
        assert_eq!(held.segs, 3);
        let merged = held.finish();
        let hdr = VnetHdr::parse(&merged).unwrap();
        assert_eq!((hdr.gso_type, hdr.gso_size, hdr.hdr_len), (1, 1448, 14 + 20 + 32));
        assert_eq!(u16::from_be_bytes([merged[L4 + 14], merged[L4 + 15]]), 502, "the latest window");
        // Cut again as the kernel would for a port with MTU 1500: the
        // same segments, with valid checksums.
        let frame = Frame::parse(&merged).unwrap();
        let mut scratch = Vec::new();
        let mut got = Vec::new();
        gso::segment(&frame, 1500, &mut scratch, |s| got.push(s.to_vec())).unwrap();
        assert_eq!(got.len(), 3);
        for (g, want) in got.iter().zip(&segs) {
            assert_eq!(candidate(g), candidate(want), "a valid segment again");
            assert_eq!(&g[L4 + 52..], &want[L4 + 52..], "same payload");
            assert_eq!(seq_of(g), seq_of(want));
        }
        // The seed is what the kernel seeds for TSO: completing it over
        // the whole TCP segment gives a valid checksum.
        let mut whole = merged.clone();
        gso::complete_checksum(&hdr, &mut whole[VNET_HDR_LEN..]).unwrap();
        let tcp_len = whole.len() - L4;
        let pseudo = sum(&(tcp_len as u32).to_be_bytes(), sum(&[0, 6], sum(&whole[IP + 12..IP + 20], 0)));
        assert_eq!(finish(sum(&whole[L4..], pseudo)), 0);
    }

    #[test]
    fn what_does_not_continue_the_run_is_not_merged() {
        let a = segment(1000, &[1; 100], ACK, 9);
        let mut held = Held::start(&a, Vec::new()).unwrap();
        assert!(!held.merge(&segment(1200, &[1; 100], ACK, 9)), "a gap in sequence");
        assert!(!held.merge(&segment(1100, &[1; 200], ACK, 9)), "longer than the first");
        let mut damaged = segment(1100, &[1; 100], ACK, 9);
        damaged[L4 + 40] ^= 4;
        assert!(!held.merge(&damaged), "a bad checksum");
        assert!(Held::start(&damaged, Vec::new()).is_err());
        assert!(!held.merge(&segment(1100, &[1; 100], ACK | 0x01, 9)), "FIN");
        assert!(Held::start(&segment(1100, &[], ACK, 9), Vec::new()).is_err(), "a bare ACK");
        let mut other_port = segment(1100, &[1; 100], ACK, 9);
        other_port[L4] ^= 1;
        assert!(!held.merge(&other_port), "another flow");
        assert_eq!(held.segs, 1);
        assert!(held.merge(&segment(1100, &[1; 100], ACK | PSH, 9)));
        assert!(held.closed, "PSH ends the run");
        assert!(!held.merge(&segment(1200, &[1; 100], ACK, 9)));
        // One segment alone goes out as it came.
        let single = Held::start(&a, Vec::new()).unwrap().finish();
        assert_eq!(single, a);
    }
}
